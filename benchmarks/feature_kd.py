"""Step time of the feature-level distillation methods relative to logit-only KD on the same teacher/student pair,
and of runs without a feature method relative to another checkout (today's main), side by side in one run.

Every row is a real ``cg-train`` run (a fresh process) with ``--loader synthetic`` (random images already on the
device: what is timed is the training step, not decoding); its images/s is what the run logs for a training epoch
after its first ("epoch E: trained on N samples, ... S s (R img/s)"). Rounds interleave every configuration, in a
rotated order, so load from other jobs hits all alike; the table gives medians over rounds and each ratio is
``median img/s of the reference / median img/s of the row``, i.e. a step-time ratio (> 1: slower).

Rows: ``ce`` and ``kd`` of this checkout against the same of ``--baseline`` (target: the no-feature-method runs
within 2 %: hooks cost nothing when no method asks, none are installed); each feature method against ``kd`` of this
checkout (target <= 1.3x except where the method itself computes more). Methods with a first stage (fitnet, ab,
ft, fsp) get two rows: the stage (``--init-epochs``) and the training after it.

    python benchmarks/feature_kd.py --baseline /work/main                  # CPU: cifar_resnet20 -> cifar_resnet8
    python benchmarks/feature_kd.py --teacher cifar_resnet56 --student cifar_resnet20 --device cuda --images 8192
    python benchmarks/feature_kd.py --smoke                                # seconds: checks the rows are produced

Arguments after ``--`` go to every run (e.g. ``--channels-last --mixed-precision bf16``).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
EPOCH_LINE = re.compile(r"epoch (\d+): trained on (\d+) samples, .* ([\d.]+) s \(([\d.]+) img/s\)")
METHODS = ("fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst")
STAGED = ("fitnet", "ab", "ft", "fsp")


def cg_train(code: Path, args: list[str], out: Path) -> list[float]:
    """Run cg-train from checkout ``code``; the img/s of each training epoch it logged."""
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "cg_train", *args, "--output-dir", str(out), "--no-progress"],
                          cwd=code, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"cg-train failed ({code}): {' '.join(args)}\n{proc.stderr[-3000:]}")
    rates = {int(m.group(1)): float(m.group(4)) for m in EPOCH_LINE.finditer((out / "log.txt").read_text())}
    return [rates[e] for e in sorted(rates)]


def tap_overhead(arch: str, size: int, batch: int, reps: int, device: str) -> dict[str, float]:
    """In one process, interleaved step by step: the student's forward + backward alone, with taps installed but
    capturing nothing (an evaluation-like unarmed pass), and with taps capturing every feat/preact reference (the
    most a method asks for). Medians of ``reps`` steps each; the overheads are relative to the plain step."""
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
    taps.enabled = False
    times: dict[str, list[float]] = {"plain": [], "unarmed": [], "capturing": []}
    for _ in range(3):  # warm-up
        step()
    kinds = list(times)
    for i in range(reps):
        for kind in kinds[i % 3:] + kinds[:i % 3]:  # rotated, so no kind always follows another
            taps.remove()
            if kind != "plain":
                taps._install()
                taps.enabled = kind == "capturing"
            times[kind].append(step())
            taps.discard()
    taps.remove()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"plain ms": 1000 * med["plain"], "unarmed overhead": med["unarmed"] / med["plain"] - 1,
            "capturing overhead": med["capturing"] / med["plain"] - 1}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="cifar_resnet20")
    parser.add_argument("--student", default="cifar_resnet8")
    parser.add_argument("--size", type=int, default=32, help="image size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1024, help="training images per epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout for the ce/kd rows (main)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round: check that every row runs")
    parser.add_argument("--taps-only", action="store_true", help="only the in-process tap overhead")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    if args.smoke:
        args.images, args.size, args.rounds, args.batch_size = 64, 16, 1, 32
    methods = [m for m in args.methods.split(",") if m]
    taps = tap_overhead(args.student, args.size, args.batch_size, 5 if args.smoke else 40, args.device)
    print(f"taps on {args.student} ({args.size} px, batch {args.batch_size}, {args.device}), forward + backward, "
          f"interleaved steps: plain {taps['plain ms']:.1f} ms; hooks installed but not capturing "
          f"{100 * taps['unarmed overhead']:+.1f} %; capturing every feat[:] and preact[:] reference "
          f"{100 * taps['capturing overhead']:+.1f} %")
    if args.taps_only:
        return 0

    with tempfile.TemporaryDirectory(prefix="feature_kd_bench_") as tmp:
        root = Path(tmp)
        data = root / "digits"
        subprocess.run([sys.executable, "-m", "cg_train", "prepare-demo", str(data)], cwd=REPO, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
        common = [str(data), "--loader", "synthetic", "--image-size", str(args.size), "--batch-size",
                  str(args.batch_size), "--workers", "0", "--sample-size", "8", "--lr", "0.01",
                  "--lr-scheduler", "constant", *([] if args.device == "cuda" else ["--cpu"]), *extra]
        # the teacher: an untrained checkpoint of its arch is as costly to run as a trained one
        cg_train(REPO, [*common, "--arch", args.teacher, "--epochs", "0"], root / "teacher")
        teacher = str(root / "teacher" / "model_best.pth.tar")
        # --images per epoch: the synthetic loader walks the manifest, so cap it with a subset of the demo digits
        per_class = max(1, args.images // 10)
        subset = root / "subset"
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from cg_train.data.demo import demo_subset; "
                        f"demo_subset(Path({str(data)!r}), Path({str(subset)!r}), {per_class}, 1)"],
                       cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        common[0] = str(subset)

        configs: dict[str, tuple[Path, list[str], int]] = {}  # label -> (checkout, args, which epoch to read)
        student = ["--arch", args.student]
        kd = [*student, "--method", "kd", "--teacher", teacher]
        for code, tag in ((REPO, "this"), *(((args.baseline, "baseline"),) if args.baseline else ())):
            configs[f"ce ({tag})"] = (code, [*student, "--epochs", "2"], 1)
            configs[f"kd ({tag})"] = (code, [*kd, "--epochs", "2"], 1)
        for m in methods:
            run = [*student, "--method", m, "--teacher", teacher]
            if m in STAGED:
                configs[f"{m} (first stage)"] = (REPO, [*run, "--init-epochs", "2", "--epochs", "1"], 1)
                configs[m] = (REPO, [*run, "--init-epochs", "1", "--epochs", "2"], 2)
            else:
                configs[m] = (REPO, [*run, "--epochs", "2"], 1)

        rates: dict[str, list[float]] = {label: [] for label in configs}
        labels = list(configs)
        started = time.time()
        for r in range(args.rounds):
            order = labels[r % len(labels):] + labels[:r % len(labels)]
            for i, label in enumerate(order):
                code, run_args, epoch = configs[label]
                rates[label].append(cg_train(code, [*common, *run_args], root / f"r{r}_{i}")[epoch])
            print(f"round {r + 1}/{args.rounds} done ({time.time() - started:.0f} s)", file=sys.stderr)

    median = {label: statistics.median(v) for label, v in rates.items()}
    print(f"\n{args.teacher} -> {args.student}, {args.size} px, batch {args.batch_size}, {args.device}, "
          f"{args.rounds} interleaved rounds (median img/s); step-time ratio = reference img/s / row img/s\n")
    print("| run | img/s | reference | step-time ratio |")
    print("|---|---|---|---|")
    for label in labels:
        if label.startswith(("ce (", "kd (")):
            ref = label.replace("(this)", "(baseline)") if args.baseline else None
            if ref is None or label == ref:
                print(f"| {label} | {median[label]:.1f} | - | - |")
            else:
                print(f"| {label} | {median[label]:.1f} | {ref} | {median[ref] / median[label]:.3f}x |")
        else:
            print(f"| {label} | {median[label]:.1f} | kd (this) | {median['kd (this)'] / median[label]:.3f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
