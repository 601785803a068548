"""Where a training step's time goes: one real cg-train run with a timer on each stage of the step.

Every stage the engine runs per training step is timed inside ``Trainer.train_epoch``
only (evaluations are left out): the loader, the batch copy, the forward pass, the
loss, backward, the optimizer step, the recorders, the progress bar, logging, and
what is left of ``train_step`` / ``train_epoch`` themselves (the step statistics,
the loss scale, the stop check, contexts). Each stage is reported by its *self*
time (minus the timed stages it calls) in this thread's CPU time: per training step,
the median and the minimum of its calls (on a loaded machine the minimum is the
stage's own cost), and its share of the training pass's CPU time on this thread.
The stages a plain PyTorch loop runs too (loader, forward, cross-entropy, backward,
SGD step, zero_grad) are marked; the rest is what the engine adds. Intra-op threads
of the forward/backward are not in this thread's CPU time, so the shares of those
two are lower bounds.

    python benchmarks/step_costs.py /tmp/digits -- --arch resnet18 --image-size 32 --batch-size 64 --workers 2 \\
        --lr-scheduler constant --epochs 2 --paths --cpu --sample-size 0
    python benchmarks/step_costs.py DATA --source OTHER_CHECKOUT -- ...   # profile another checkout (e.g. main)
    python benchmarks/step_costs.py --intrinsic    # accelerate's wrappers and the step bookkeeping in isolation

The wrappers cost about 1 us per call; stages of a few microseconds are upper bounds.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent

TRAIN_PASS = "Trainer.train_epoch (loop, sums, stop check, logging)"
#: the stages a plain PyTorch loop runs too
PLAIN = {"loader: next batch", "forward", "loss: F.cross_entropy", "backward: Tensor.backward",
         "optimizer: SGD.step", "optimizer: Optimizer.zero_grad"}


class Timers:
    """Inclusive and self time (minus the timed stages called inside) of every call of each stage."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = collections.defaultdict(float)  # inclusive totals
        self.self_cpu: dict[str, list[float]] = collections.defaultdict(list)  # per call
        self.stack: list[list[float]] = []  # [children wall, children cpu] of the open calls
        self.active = False  # inside Trainer.train_epoch

    def enter(self) -> tuple[float, float]:
        self.stack.append([0.0, 0.0])
        return time.perf_counter(), time.thread_time()

    def leave(self, label: str, started: tuple[float, float]) -> None:
        wall, cpu = time.perf_counter() - started[0], time.thread_time() - started[1]
        children = self.stack.pop()
        if self.stack:
            self.stack[-1][0] += wall
            self.stack[-1][1] += cpu
        self.wall[label] += wall
        self.self_cpu[label].append(cpu - children[1])

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not timers.active:
                return original(*args, **kwargs)
            started = timers.enter()
            try:
                return original(*args, **kwargs)
            finally:
                timers.leave(label, started)

        timed.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(owner, name, timed)

    def wrap_iterator(self, owner: Any, label: str) -> None:
        original = owner.__iter__
        timers = self

        def timed_iter(loader: Any):
            iterator = original(loader)
            while True:
                started = timers.enter() if timers.active else None
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    if started is not None:
                        timers.leave(label, started)
                yield item

        owner.__iter__ = timed_iter


def install(timers: Timers) -> None:
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from tqdm import std

    from cg_train import recorders as rec
    from cg_train.data.loaders import dali, torchvision
    from cg_train.data.manifest import Batch
    from cg_train.engine import trainer as trainer_module
    from cg_train.paths.writer import PartWriter
    from cg_train.supervision import Supervision

    Trainer = trainer_module.Trainer
    original_epoch = Trainer.train_epoch

    def train_epoch(self: Any, epoch: int) -> None:
        if not getattr(self, "_timed_forward", False):
            state: dict[str, Any] = {}

            def before(*_: Any) -> None:
                if timers.active:
                    state["started"] = timers.enter()

            def after(*_: Any) -> None:
                if timers.active and "started" in state:
                    timers.leave("forward", state.pop("started"))

            self.model.register_forward_pre_hook(before)
            self.model.register_forward_hook(after)
            self._timed_forward = True
        timers.active = True
        started = timers.enter()
        try:
            return original_epoch(self, epoch)
        finally:
            timers.leave(TRAIN_PASS, started)
            timers.active = False

    Trainer.train_epoch = train_epoch
    timers.wrap(Trainer, "train_step", "Trainer.train_step")
    timers.wrap_iterator(torchvision.TorchvisionLoader, "loader: next batch")
    timers.wrap_iterator(dali.DaliLoader, "loader: next batch")
    timers.wrap(Batch, "to", "Batch.to(device)")
    timers.wrap(F, "cross_entropy", "loss: F.cross_entropy")
    timers.wrap(Supervision, "__call__", "Supervision.__call__")
    timers.wrap(Accelerator, "backward", "Accelerator.backward")
    timers.wrap(torch.Tensor, "backward", "backward: Tensor.backward")
    timers.wrap(AcceleratedOptimizer, "step", "AcceleratedOptimizer.step")
    timers.wrap(AcceleratedOptimizer, "zero_grad", "AcceleratedOptimizer.zero_grad")
    timers.wrap(torch.optim.SGD, "step", "optimizer: SGD.step")
    timers.wrap(torch.optim.Optimizer, "zero_grad", "optimizer: Optimizer.zero_grad")
    timers.wrap(rec.Recorders, "on_train_batch", "Recorders.on_train_batch")
    timers.wrap(rec.Recorders, "on_train_log", "Recorders.on_train_log")
    timers.wrap(rec.paths.PathRecorder, "on_train_batch", "PathRecorder.on_train_batch")
    timers.wrap(PartWriter, "put", "PartWriter.put")
    timers.wrap(std.tqdm, "update", "tqdm.update")
    timers.wrap(std.tqdm, "set_postfix", "tqdm.set_postfix")
    timers.wrap(std.tqdm, "__init__", "tqdm (progress bar) created")


def report(timers: Timers) -> dict[str, Any]:
    steps = len(timers.self_cpu["Trainer.train_step"])
    train_pass = timers.wall[TRAIN_PASS]
    print(f"{steps} training steps, train pass {train_pass:.2f} s ({1e3 * train_pass / max(steps, 1):.1f} ms/step "
          f"wall); self = minus the stages timed inside it; cpu = this thread's CPU time")
    print(f"{'stage':<50} {'calls':>6} {'self cpu us/step':>17} {'median us/call':>15} {'min us/call':>12} "
          f"{'share of pass':>13}")
    out: dict[str, Any] = {"steps": steps, "train_pass_s": train_pass, "stages": {}}
    total_cpu = sum(sum(v) for v in timers.self_cpu.values())
    for label, values in sorted(timers.self_cpu.items(), key=lambda kv: -sum(kv[1])):
        per_step = 1e6 * sum(values) / max(steps, 1)
        share = sum(values) / max(total_cpu, 1e-12)
        name = label + ("  (plain loop too)" if label in PLAIN else "")
        median = 1e6 * statistics.median(values) if label != TRAIN_PASS else float("nan")
        least = 1e6 * min(values) if label != TRAIN_PASS else float("nan")
        print(f"{name:<50} {len(values):>6} {per_step:>17.1f} {median:>15.1f} {least:>12.1f} {100 * share:>12.2f}%")
        out["stages"][label] = {"calls": len(values), "self_cpu_us_per_step": per_step, "median_us_per_call": median,
                                "min_us_per_call": least, "share_of_cpu": share}
    return out


def best_us(fn: Callable[[], Any], calls: int = 500, trials: int = 7) -> float:
    """Microseconds per call of ``fn``: this thread's CPU time, the least of ``trials`` runs (load-robust)."""
    runs = []
    for _ in range(trials):
        started = time.thread_time()
        for _ in range(calls):
            fn()
        runs.append((time.thread_time() - started) / calls * 1e6)
    return min(runs)


def intrinsic() -> dict[str, float]:
    """The per-call cost of each piece of step bookkeeping in isolation (a 1-parameter model, 64x10 logits)."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 2)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    x, logits = torch.randn(8, 4), torch.randn(64, 10, requires_grad=True)
    targets = torch.randint(0, 10, (64,))

    def grads() -> None:
        for p in model.parameters():
            p.grad = torch.ones_like(p)

    def main_bookkeeping() -> None:  # what a step did on main (4fccee2) around the cross-entropy
        losses = F.cross_entropy(logits.float(), targets, reduction="none") * 1.0
        stats = torch.stack([losses.new_full((), 64, dtype=torch.float64), losses.detach().sum().double(),
                             losses.new_full((), 0.0, dtype=torch.float64)])
        losses.sum() * (1 / stats[0].clamp(min=1.0).float()) / 1

    def lean_bookkeeping() -> None:  # the one-process step now
        losses = F.cross_entropy(logits.float(), targets, reduction="none")
        losses.detach().sum().double()
        losses.sum() * (1.0 / max(64.0, 1.0)) / 1

    figures = {
        "AcceleratedOptimizer.step": best_us(lambda: (grads(), optimizer.step())),
        "torch optimizer step": best_us(lambda: (grads(), optimizer.optimizer.step())),
        "AcceleratedOptimizer.zero_grad": best_us(lambda: optimizer.zero_grad(set_to_none=True)),
        "torch zero_grad": best_us(lambda: optimizer.optimizer.zero_grad(set_to_none=True)),
        "Accelerator.backward": best_us(lambda: accelerator.backward(model(x).sum())),
        "Tensor.backward": best_us(lambda: model(x).sum().backward()),
        "step bookkeeping as on main (CE x 1.0, stats stack, tensor loss scale)": best_us(main_bookkeeping),
        "step bookkeeping now, one process (CE, loss sum, float loss scale)": best_us(lean_bookkeeping),
    }
    for name, us in figures.items():
        print(f"  {name:<72} {us:8.1f} us/call")
    return figures


def main() -> None:
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", help="an ImageFolder root (e.g. `cg-train prepare-demo DIR`)")
    parser.add_argument("--intrinsic", action="store_true", help="only time the step's bookkeeping and "
                        "accelerate's wrappers in isolation (seconds; no training)")
    parser.add_argument("--source", default=str(REPO), help="the cg_train checkout to profile")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.source)
    if args.intrinsic:
        figures = intrinsic()
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))
        return
    if args.data is None:
        parser.error("give DATA (an ImageFolder root), or --intrinsic")
    timers = Timers()
    install(timers)
    from cg_train.cli import main as cg_train

    with tempfile.TemporaryDirectory(prefix="cg-train-step-costs-") as tmp:
        code = cg_train([args.data, "--output-dir", str(Path(tmp) / "run"), *train_args])
    if code:
        sys.exit(code)
    result = report(timers)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
