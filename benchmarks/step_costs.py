"""Where a training step's time goes: one real cg-train run with a timer on each stage of the step.

Every stage the engine runs per training step is timed inside ``Trainer.train_epoch``
only (evaluations are left out): the loader, the batch copy, the forward pass, the
loss, backward, the optimizer step, the recorders, the progress bar, logging, and
what is left of ``train_step`` / ``train_epoch`` (the step statistics, the stop
check, contexts). Each stage is reported as calls, microseconds per training step
(wall and this thread's CPU time) and its share of the training pass. The stages
a plain PyTorch loop runs too (loader, forward, cross-entropy, backward, SGD step,
zero_grad) are marked; the rest is what the engine adds.

    python benchmarks/step_costs.py /tmp/digits -- --arch resnet18 --image-size 32 --batch-size 64 --workers 2 \\
        --lr-scheduler constant --epochs 2 --paths --cpu --sample-size 0
    python benchmarks/step_costs.py DATA --source OTHER_CHECKOUT -- ...   # profile another checkout (e.g. main)

The wrappers cost about 1 us per call; stages of a few microseconds are upper bounds.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent

#: (label, where, part of a plain loop too)
PLAIN = {"loader: next batch", "forward", "loss: F.cross_entropy", "backward: Tensor.backward",
         "optimizer: SGD.step", "optimizer: Optimizer.zero_grad"}


class Timers:
    def __init__(self) -> None:
        self.wall: dict[str, float] = collections.defaultdict(float)
        self.cpu: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self.active = False  # inside Trainer.train_epoch

    def wrap(self, owner: Any, name: str, label: str, always: bool = False) -> None:
        original = getattr(owner, name)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not (timers.active or always):
                return original(*args, **kwargs)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                timers.add(label, time.perf_counter() - wall, time.thread_time() - cpu)

        timed.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(owner, name, timed)

    def add(self, label: str, wall: float, cpu: float) -> None:
        self.wall[label] += wall
        self.cpu[label] += cpu
        self.calls[label] += 1

    def wrap_iterator(self, owner: Any, label: str) -> None:
        original = owner.__iter__
        timers = self

        def timed_iter(loader: Any):
            iterator = original(loader)
            while True:
                wall, cpu = time.perf_counter(), time.thread_time()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    if timers.active:
                        timers.add(label, time.perf_counter() - wall, time.thread_time() - cpu)
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
            state: dict[str, float] = {}

            def before(*_: Any) -> None:
                if timers.active:
                    state["wall"], state["cpu"] = time.perf_counter(), time.thread_time()

            def after(*_: Any) -> None:
                if timers.active and "wall" in state:
                    timers.add("forward", time.perf_counter() - state.pop("wall"), time.thread_time() - state.pop("cpu"))

            self.model.register_forward_pre_hook(before)
            self.model.register_forward_hook(after)
            self._timed_forward = True
        timers.active = True
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return original_epoch(self, epoch)
        finally:
            timers.add("train pass (Trainer.train_epoch)", time.perf_counter() - wall, time.thread_time() - cpu)
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
    steps = timers.calls["Trainer.train_step"]
    train_pass = timers.wall["train pass (Trainer.train_epoch)"]
    w, c = timers.wall, timers.cpu

    def inner(label: str, *parts: str) -> tuple[float, float]:
        return w[label] - sum(w[p] for p in parts), c[label] - sum(c[p] for p in parts)

    rows = {label: (timers.calls[label], w[label], c[label]) for label in w}
    # what a wrapper adds around the plain call, and the inline rest of the two loop functions
    derived = {
        "accelerate around backward": inner("Accelerator.backward", "backward: Tensor.backward"),
        "accelerate around SGD.step": inner("AcceleratedOptimizer.step", "optimizer: SGD.step"),
        "accelerate around zero_grad": inner("AcceleratedOptimizer.zero_grad", "optimizer: Optimizer.zero_grad"),
        "Supervision.__call__ around F.cross_entropy": inner("Supervision.__call__", "loss: F.cross_entropy"),
        "Recorders dispatch (no-op hooks, loop)": inner("Recorders.on_train_batch", "PathRecorder.on_train_batch"),
        "train_step inline (stats tensor, loss scale, contexts, targets)": inner(
            "Trainer.train_step", "forward", "Supervision.__call__", "Accelerator.backward", "AcceleratedOptimizer.step",
            "AcceleratedOptimizer.zero_grad"),
        "train_epoch inline (sums, stop poll, print_freq read, loop)": inner(
            "train pass (Trainer.train_epoch)", "loader: next batch", "Batch.to(device)", "Trainer.train_step",
            "Recorders.on_train_batch", "Recorders.on_train_log", "tqdm.update", "tqdm.set_postfix",
            "tqdm (progress bar) created"),
    }
    # train_step inline: losses computed inline on the branch (no Supervision call): take the plain calls out
    if not timers.calls["Supervision.__call__"]:
        wall, cpu = derived["train_step inline (stats tensor, loss scale, contexts, targets)"]
        derived["train_step inline (stats tensor, loss scale, contexts, targets)"] = (
            wall - w["loss: F.cross_entropy"] - (0 if timers.calls["Accelerator.backward"] else w["backward: Tensor.backward"])
            - (0 if timers.calls["AcceleratedOptimizer.step"] else w["optimizer: SGD.step"])
            - (0 if timers.calls["AcceleratedOptimizer.zero_grad"] else w["optimizer: Optimizer.zero_grad"]),
            cpu - c["loss: F.cross_entropy"] - (0 if timers.calls["Accelerator.backward"] else c["backward: Tensor.backward"])
            - (0 if timers.calls["AcceleratedOptimizer.step"] else c["optimizer: SGD.step"])
            - (0 if timers.calls["AcceleratedOptimizer.zero_grad"] else c["optimizer: Optimizer.zero_grad"]))
    print(f"{steps} training steps, train pass {train_pass:.2f} s ({1e3 * train_pass / max(steps, 1):.1f} ms/step)")
    print(f"{'stage':<66} {'calls':>6} {'us/step wall':>13} {'us/step cpu':>12} {'share':>7}")
    out: dict[str, Any] = {"steps": steps, "train_pass_s": train_pass, "stages": {}}
    for label, (calls, wall, cpu) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        mark = "  (plain loop too)" if label in PLAIN else ""
        print(f"{label + mark:<66} {calls:>6} {1e6 * wall / max(steps, 1):>13.1f} {1e6 * cpu / max(steps, 1):>12.1f} "
              f"{100 * wall / max(train_pass, 1e-9):>6.2f}%")
        out["stages"][label] = {"calls": calls, "us_per_step_wall": 1e6 * wall / max(steps, 1),
                                "us_per_step_cpu": 1e6 * cpu / max(steps, 1), "share": wall / max(train_pass, 1e-9)}
    print("derived (engine additions):")
    for label, (wall, cpu) in derived.items():
        print(f"  {label:<64} {'':>6} {1e6 * wall / max(steps, 1):>13.1f} {1e6 * cpu / max(steps, 1):>12.1f} "
              f"{100 * wall / max(train_pass, 1e-9):>6.2f}%")
        out["stages"][label] = {"us_per_step_wall": 1e6 * wall / max(steps, 1),
                                "us_per_step_cpu": 1e6 * cpu / max(steps, 1), "share": wall / max(train_pass, 1e-9)}
    return out


def main() -> None:
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="an ImageFolder root (e.g. `cg-train prepare-demo DIR`)")
    parser.add_argument("--source", default=str(REPO), help="the cg_train checkout to profile")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.source)
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
