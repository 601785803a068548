"""Step time of the feature-level distillation methods relative to logit-only KD on the same teacher/student pair,
and of runs without a feature method relative to another checkout (the branch point, or main), side by side.

Each configuration is a real run set up by cg-train itself (``cg_train.cli.main`` with ``--loader synthetic``:
random images already on the device, so the step is timed, not decoding) whose ``Trainer.fit`` is replaced by
nothing: the built trainer is kept, and its real ``train_step`` (forward, supervision with teacher and taps,
backward, optimizer step) is timed. One worker process per checkout holds every configuration of that checkout;
the driver interleaves steps of all configurations of all workers, in a rotated order, for ``--rounds`` rounds, so
load from other jobs on a shared machine hits all alike. The table gives the median step time and its ratio to
the reference's (``kd`` of this checkout for the methods; the same run of ``--baseline`` for ``ce``/``kd``).

Targets: the runs without a feature method within 2 % of the baseline (none installs a hook); each feature method
<= 1.3x KD except where the method itself computes more. Methods with a first stage (fitnet, ab, ft, fsp) get two
rows: a step of the stage (``--init-epochs``) and one of the training after it.

    git -C . archive 4fccee2 | tar -x -C /tmp/base                    # the branch point, for --baseline
    python benchmarks/feature_kd.py --baseline /tmp/base              # CPU: cifar_resnet20 -> cifar_resnet8
    python benchmarks/feature_kd.py --teacher cifar_resnet56 --student cifar_resnet20 --device cuda --batch-size 128
    python benchmarks/feature_kd.py --smoke                           # seconds: checks every row runs

Arguments after ``--`` go to every run (e.g. ``--channels-last --mixed-precision bf16``).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
METHODS = ("fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst")
STAGED = ("fitnet", "ab", "ft", "fsp")


# --------------------------------------------------------------------------- worker: one checkout's trainers

def worker() -> None:
    """Reads commands on stdin: ``setup LABEL STAGE_EPOCH ARGS...`` (a run; its trainer is kept, at that epoch)
    and ``time LABEL N`` (N training steps; answers the seconds of each as one JSON line)."""
    import torch
    from accelerate.state import AcceleratorState, GradientState

    from cg_train.cli import main
    from cg_train.engine import trainer as trainer_module

    protocol, sys.stdout = sys.stdout, sys.stderr  # cg-train's log lines go to stderr, answers to stdout
    kept: dict[str, Any] = {}
    built: list[Any] = []
    trainer_module.Trainer.fit = lambda self: built.append(self)  # set up, never trained
    batches: dict[str, Any] = {}
    for line in sys.stdin:
        command, label, *rest = shlex.split(line)
        if command == "setup":
            epoch, args = int(rest[0]), rest[1:]
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
            assert main(args) == 0, args
            trainer = built.pop()
            trainer.state.epoch = epoch
            loader = trainer.ctx.data.train_loader
            loader.set_epoch(0)
            batches[label] = [b.to(trainer.accelerator.device) for b in loader]
            trainer.model.train()
            kept[label] = trainer
            print(json.dumps({"ready": label}), file=protocol, flush=True)
        elif command == "time":
            trainer, times = kept[label], []
            for i in range(int(rest[0])):
                batch = batches[label][i % len(batches[label])]
                sync = torch.cuda.synchronize if trainer.accelerator.device.type == "cuda" else (lambda: None)
                sync()
                start = time.perf_counter()
                trainer.train_step(batch, i, 1 << 30)
                sync()
                times.append(time.perf_counter() - start)
            print(json.dumps(times), file=protocol, flush=True)


class Worker:
    def __init__(self, code: Path, log: Path):
        env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], cwd=code, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)

    def ask(self, *words: str) -> Any:
        self.proc.stdin.write(shlex.join(words) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise SystemExit(f"the benchmark worker ended on: {' '.join(words)[:300]}\n"
                             f"{self.log.read_text()[-3000:]}")
        return json.loads(answer)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


# --------------------------------------------------------------------------- in-process tap overhead

def tap_overhead(arch: str, size: int, batch: int, reps: int, device: str) -> dict[str, float]:
    """The student's forward + backward alone, with taps installed but capturing nothing (an evaluation pass), and
    with taps capturing every feat/preact reference (the most a method asks for); steps interleaved, rotated."""
    import torch

    sys.path.insert(0, str(REPO))
    from cg_train.models import build_model
    from cg_train.models.features import FeatureTaps

    torch.manual_seed(0)
    model = build_model(arch, 10).to(device).train()
    x = torch.randn(batch, 3, size, size, device=device)

    def step() -> float:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        model(x).float().sum().backward()
        sync()
        return time.perf_counter() - start

    taps = FeatureTaps(model, ["feat[:]", "preact[:]"], "benchmark", arm="grad")
    times: dict[str, list[float]] = {"plain": [], "unarmed": [], "capturing": []}
    kinds = list(times)
    for _ in range(3):
        step()
    for i in range(reps):
        for kind in kinds[i % 3:] + kinds[:i % 3]:
            taps.remove()
            if kind != "plain":
                taps._install()
                taps.enabled = kind == "capturing"
            times[kind].append(step())
            taps.discard()
    taps.remove()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"plain ms": 1000 * med["plain"], "unarmed": med["unarmed"] / med["plain"] - 1,
            "capturing": med["capturing"] / med["plain"] - 1}


# --------------------------------------------------------------------------- driver

def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--teacher", default="cifar_resnet20")
    parser.add_argument("--student", default="cifar_resnet8")
    parser.add_argument("--size", type=int, default=32, help="image size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of a configuration per round")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout for the ce/kd rows")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round: check that every row runs")
    parser.add_argument("--no-taps", action="store_true", help="skip the in-process tap overhead")
    args, extra = parser.parse_known_args(argv)
    if args.worker:
        worker()
        return 0
    extra = [a for a in extra if a != "--"]
    if args.smoke:
        args.size, args.rounds, args.batch_size, args.steps = 16, 1, 16, 1
    methods = [m for m in args.methods.split(",") if m]

    taps = None if args.no_taps else tap_overhead(args.student, args.size, args.batch_size, 5 if args.smoke else 30,
                                                  args.device)
    with tempfile.TemporaryDirectory(prefix="feature_kd_bench_") as tmp:
        root = Path(tmp)
        data = root / "digits"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-m", "cg_train", "prepare-demo", str(data)], cwd=REPO, check=True, env=env,
                       capture_output=True)
        subprocess.run([sys.executable, "-c", "from pathlib import Path; from cg_train.data.demo import demo_subset; "
                        f"demo_subset(Path({str(data)!r}), Path({str(root / 'subset')!r}), "
                        f"{max(1, 4 * args.batch_size // 10)}, 1)"], cwd=REPO, check=True, env=env)
        common = [str(root / "subset"), "--loader", "synthetic", "--image-size", str(args.size), "--batch-size",
                  str(args.batch_size), "--workers", "0", "--sample-size", "8", "--lr", "0.01", "--no-progress",
                  "--epochs", "1", *([] if args.device == "cuda" else ["--cpu"]), *extra]
        # the teacher: an untrained checkpoint of its arch is as costly to run as a trained one
        subprocess.run([sys.executable, "-m", "cg_train", *common, "--arch", args.teacher, "--epochs", "0",
                        "--output-dir", str(root / "teacher")], cwd=REPO, check=True, env=env, capture_output=True)
        teacher = str(root / "teacher" / "model_best.pth.tar")

        student = ["--arch", args.student]
        configs: list[tuple[str, str, int, list[str]]] = []  # (worker, label, epoch, args)
        for tag in ("this", *(("baseline",) if args.baseline else ())):
            configs.append((tag, f"ce ({tag})", 0, student))
            configs.append((tag, f"kd ({tag})", 0, [*student, "--method", "kd", "--teacher", teacher]))
        for m in methods:
            run = [*student, "--method", m, "--teacher", teacher]
            if m in STAGED:
                configs.append(("this", f"{m} (first stage)", 0, [*run, "--init-epochs", "1"]))
                configs.append(("this", m, 1, [*run, "--init-epochs", "1"]))
            else:
                configs.append(("this", m, 0, run))
        workers = {"this": Worker(REPO, root / "this.log"),
                   **({"baseline": Worker(args.baseline, root / "baseline.log")} if args.baseline else {})}
        try:
            for i, (tag, label, epoch, run_args) in enumerate(configs):
                workers[tag].ask("setup", label, str(epoch), *common, *run_args, "--output-dir", str(root / f"r{i}"))
            times: dict[str, list[float]] = {label: [] for _, label, _, _ in configs}
            started = time.time()
            for r in range(args.rounds):
                for tag, label, _, _ in configs[r % len(configs):] + configs[:r % len(configs)]:
                    times[label] += workers[tag].ask("time", label, str(args.steps))
                if (r + 1) % max(1, args.rounds // 5) == 0:
                    print(f"round {r + 1}/{args.rounds} ({time.time() - started:.0f} s)", file=sys.stderr)
        finally:
            for w in workers.values():
                w.close()

    median = {label: 1000 * statistics.median(v) for label, v in times.items()}
    print(f"\n{args.teacher} -> {args.student}, {args.size} px, batch {args.batch_size}, {args.device}"
          f"{' ' + ' '.join(extra) if extra else ''}; {args.rounds} interleaved rounds of {args.steps} steps; "
          f"median step time; ratio = row / reference\n")
    if taps is not None:
        print(f"taps on {args.student}, forward + backward alone: {taps['plain ms']:.1f} ms; hooks installed but "
              f"not capturing {100 * taps['unarmed']:+.1f} %; capturing every feat[:] and preact[:] reference "
              f"{100 * taps['capturing']:+.1f} %\n")
    print("| run | step ms | reference | ratio |")
    print("|---|---|---|---|")
    for tag, label, _, _ in configs:
        if label.startswith(("ce (", "kd (")):
            ref = label.replace("(this)", "(baseline)") if args.baseline and tag == "this" else None
            cell = f"| {ref} | {median[label] / median[ref]:.3f}x |" if ref else "| - | - |"
        else:
            cell = f"| kd (this) | {median[label] / median['kd (this)']:.3f}x |"
        print(f"| {label} | {median[label]:.1f} {cell}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
