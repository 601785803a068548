"""cg-train's training pass vs a plain PyTorch loop, side by side: does the engine cost anything per step?

The setting a user comparing tools would time (issue 24): resnet18 at 32 px on the
embedded digits (``cg-train prepare-demo``: 4,000 training JPEGs), batch 64, 2
DataLoader workers (or 2 DALI threads), constant lr, 2 epochs. Each round runs, as
fresh processes in a rotating order so that load from other jobs hits every mode alike:

* ``plain``: ``benchmarks/plain_loop.py`` (ImageFolder + DataLoader + model + SGD, 70 lines);
* ``compute``: the same loop with ``--compute-only`` (one in-memory batch, no loader): its ratio
  to ``plain`` is the share of the plain loop's step its loader costs, what a faster loader alone can
  win back (up to this machine's run-to-run noise); beyond it, only a cheaper step gains (on a CPU,
  cg-train's ``--keep-freed-memory``: no page faults for each step's tensors);
* ``compute+reuse``: ``compute`` with that memory reuse too (``plain_loop.py --keep-freed-memory``):
  the bare step at its cheapest with the default kernels, the ceiling for any engine and loader
  that keep the arithmetic (a target above it needs other kernels, e.g. ``-- --channels-last``);
* ``torchvision`` / ``torchvision+paths``: ``cg-train`` with ``--loader torchvision``, without / with ``--paths``;
* ``dali`` / ``dali+paths``: the same with ``--loader dali`` (CPU mode on a machine without a GPU).

The figure of a run is its training passes' images/s over all epochs, loader start-up
included (cg-train's ``epoch E: trained on N samples, ... S s`` lines; the plain loop
times the same span, from ``iter(loader)`` to the last step). Evaluations are not
counted. Printed per mode: the median over rounds of the ratio to the same round's
plain loop (and its spread), and the path-logging overhead (mode / mode+paths - 1).
Targets: torchvision+paths >= 1.0x, dali+paths >= 1.3x, path logging <= 2 %.

    python benchmarks/step_overhead.py                      # 3 rounds, the issue's setting
    python benchmarks/step_overhead.py --rounds 5 --append BENCHMARKS.md --machine "..."
    python benchmarks/step_overhead.py --quick              # 500 images, 1 epoch, 3 rounds: minutes
    python benchmarks/step_overhead.py --modes plain,torchvision+paths -- --channels-last

Arguments after ``--`` go to every cg-train run. ``benchmarks/step_costs.py`` shows where a
step's time goes inside the engine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import publish, split_argv  # noqa: E402

EPOCH_LINE = re.compile(r"epoch (\d+): trained on (\d+) samples, .* ([\d.]+) s \(([\d.]+) img/s\)")
#: mode -> plain_loop.py's flags (the plain loop's modes) or (loader, cg-train flags) (the engine's)
MODES: dict[str, Any] = {"plain": [], "compute": ["--compute-only"],
                         "compute+reuse": ["--compute-only", "--keep-freed-memory"],
                         "torchvision": ("torchvision", []), "torchvision+paths": ("torchvision", ["--paths"]),
                         "dali": ("dali", []), "dali+paths": ("dali", ["--paths"])}
#: mode -> the smallest ratio to the plain loop it must reach
TARGETS = {"torchvision+paths": 1.0, "dali+paths": 1.3}
#: the plain loop's no-loader modes that bound what an engine can reach: mode -> (summary key of its median
#: ratio, summary key of the verdicts per target, what it is, what a target above it means)
BOUNDS = {
    "compute": ("compute_ratio", "reachable", "the compute-only ratio", "the plain loop's loader is too small a "
                "share of its step for a faster loader alone to gain that much"),
    "compute+reuse": ("ceiling_ratio", "within_ceiling", "the plain loop's bare step with its memory reused",
                      "with the plain loop's convolution kernels no engine and no loader reaches it; only other "
                      "kernels can (cg-train's --channels-last)"),
}
PATHS_TARGET = 0.02
TABLE_HEADER = "## Engine vs a plain PyTorch loop (`benchmarks/step_overhead.py`, issue 24)"
TABLE_HEAD = ("| date | machine | command | mode | img/s (median) | vs plain loop, median of rounds (spread); "
              "--paths overhead |\n| --- | --- | --- | --- | --- | --- |\n")


def prepare_data(work: Path, quick: bool) -> Path:
    """The embedded demo digits (4,000 training JPEGs); --quick: the first 50 of each class (500)."""
    from cg_train.data.demo import demo_subset, prepare_demo

    data = prepare_demo(work / "digits")
    return demo_subset(data, work / "digits_500", 50, 10) if quick else data


def engine_run(args: argparse.Namespace, data: Path, out: Path, loader: str, extra: list[str]) -> dict[str, Any]:
    flags = ["--arch", args.arch, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
             "--workers", str(args.workers), "--loader", loader, "--lr-scheduler", "constant",
             "--epochs", str(args.epochs), "--sample-size", "0", "--output-dir", str(out), *extra,
             *args.cg_train_args]
    if args.device == "cpu":
        flags.append("--cpu")
    command = [sys.executable, "-m", "cg_train", str(data), *flags]
    result = subprocess.run(command, cwd=REPO, env=env(args), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"cg-train failed ({result.returncode}): {shlex.join(command)}\n{result.stderr[-3000:]}")
    passes = [(int(n), float(s)) for _, n, s, _ in EPOCH_LINE.findall((out / "log.txt").read_text())]
    if len(passes) != args.epochs:
        raise RuntimeError(f"{out}: expected {args.epochs} training epochs in log.txt, found {len(passes)}")
    return {"images": sum(n for n, _ in passes), "seconds": sum(s for _, s in passes)}


def plain_run(args: argparse.Namespace, data: Path, flags: list[str]) -> dict[str, Any]:
    command = [sys.executable, str(REPO / "benchmarks" / "plain_loop.py"), str(data), "--arch", args.arch,
               "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
               "--workers", str(args.workers), "--epochs", str(args.epochs), "--device", args.device, *flags]
    result = subprocess.run(command, cwd=REPO, env=env(args), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the plain loop failed ({result.returncode}):\n{result.stderr[-3000:]}")
    passes = json.loads(result.stdout.strip().splitlines()[-1])["passes"]
    return {"images": sum(p["images"] for p in passes), "seconds": sum(p["seconds"] for p in passes)}


def env(args: argparse.Namespace) -> dict[str, str]:
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "PYTHONUNBUFFERED": "1", **threads}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def summarise(rounds: list[dict[str, float]], modes: list[str]) -> dict[str, Any]:
    """Per-round ratios to the plain loop and path-logging overheads, and their medians."""
    summary: dict[str, Any] = {"vs_plain": {}, "paths_overhead": {}}
    for mode in modes:
        if mode != "plain" and "plain" in modes:
            summary["vs_plain"][mode] = [r[mode] / r["plain"] for r in rounds]
        if mode.endswith("+paths") and mode.removesuffix("+paths") in modes:
            summary["paths_overhead"][mode] = [r[mode.removesuffix("+paths")] / r[mode] - 1 for r in rounds]
    targeted = {mode: target for mode, target in TARGETS.items() if mode in summary["vs_plain"]}
    summary["targets"] = {f"{mode} >= {target}x plain": statistics.median(summary["vs_plain"][mode]) >= target
                          for mode, target in targeted.items()}
    for bound, (ratio_key, verdicts_key, _, _) in BOUNDS.items():  # can a target be reached within the bound?
        ratios = summary["vs_plain"].get(bound)
        summary[ratio_key] = statistics.median(ratios) if ratios else None
        summary[verdicts_key] = {} if not ratios else {mode: summary[ratio_key] >= target
                                                       for mode, target in targeted.items()}
    for mode, values in summary["paths_overhead"].items():
        summary["targets"][f"{mode}: paths <= {100 * PATHS_TARGET:.0f}%"] = statistics.median(values) <= PATHS_TARGET
    return summary


def markdown_rows(report: dict[str, Any]) -> str:
    meta, summary = report["setup"], report["summary"]
    lines = []
    for mode, ratios in summary["vs_plain"].items():
        overhead = summary["paths_overhead"].get(mode)
        paths = (f"; paths {100 * statistics.median(overhead):+.1f}% (min {100 * min(overhead):+.1f}, max "
                 f"{100 * max(overhead):+.1f})") if overhead else ""
        rates = [r[mode] for r in report["rounds"]]
        lines.append(f"| {meta['date']} | {meta['machine']} | `{meta['command']}` | {mode} | "
                     f"{statistics.median(rates):.1f} | {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, "
                     f"max {max(ratios):.2f}){paths} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    given, argv, passthrough = split_argv(list(sys.argv[1:] if argv is None else argv))
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="an ImageFolder root (default: the demo digits, written here)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the medians need >= 3)")
    parser.add_argument("--quick", action="store_true", help="500 images, 1 epoch")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for both sides (0: torch's "
                        "default); 1 makes an oversubscribed shared machine's figures less noisy")
    parser.add_argument("--machine", default=None, help="the machine, in words, for --append")
    parser.add_argument("--append", default=None, metavar="BENCHMARKS.md", help="add the result rows to this file")
    parser.add_argument("--json", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    args.cg_train_args = passthrough
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)} (choose from {', '.join(MODES)})")
    if args.quick:
        args.epochs = 1
    rounds: list[dict[str, float]] = []
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cg-train-step-overhead-") as tmp:
        work = Path(tmp)
        data = Path(args.data) if args.data else prepare_data(work, args.quick)
        print(f"{args.arch} at {args.image_size} px, batch {args.batch_size}, {args.workers} workers, "
              f"{args.epochs} epoch(s), {args.device}, torch threads {args.threads or 'default'}, data {data}; "
              f"{args.rounds} round(s) of {', '.join(modes)}", flush=True)
        for r in range(args.rounds):
            order = modes[r % len(modes):] + modes[:r % len(modes)]  # rotate: no mode always runs first
            rates: dict[str, float] = {}
            for mode in order:
                load = os.getloadavg()[0]
                if isinstance(MODES[mode], list):
                    result = plain_run(args, data, MODES[mode])
                else:
                    loader, extra = MODES[mode]
                    result = engine_run(args, data, work / f"round{r}-{mode}", loader, extra)
                rates[mode] = result["images"] / result["seconds"]
                runs.append({"round": r, "mode": mode, **result, "img_s": rates[mode], "load_before": load})
                print(f"  round {r}  {mode:<18} {rates[mode]:8.1f} img/s  ({result['images']} images in "
                      f"{result['seconds']:.1f} s; load average {load:.1f} before)", flush=True)
            rounds.append(rates)
    summary = summarise(rounds, modes)
    for mode, ratios in summary["vs_plain"].items():
        print(f"  {mode:<18} vs plain: {spread(ratios)}")
    for mode, values in summary["paths_overhead"].items():
        print(f"  {mode:<18} --paths overhead: {spread(values)}")
    for name, met in summary["targets"].items():
        print(f"  target {name}: {'met' if met else 'NOT met'}")
    for ratio_key, verdicts_key, bound, meaning in BOUNDS.values():
        for mode in (mode for mode, within in summary[verdicts_key].items() if not within):
            print(f"  {mode}: its target is above {bound} ({summary[ratio_key]:.2f}x plain): {meaning}")
    report = {"setup": {"date": time.strftime("%Y-%m-%d"), "command": f"python benchmarks/step_overhead.py {given}".strip(),
                        "machine": args.machine or f"{args.device}, {os.cpu_count()} CPUs", "arch": args.arch,
                        "image_size": args.image_size, "batch_size": args.batch_size, "workers": args.workers,
                        "epochs": args.epochs, "rounds": args.rounds, "threads": args.threads or "default"},
              "rounds": rounds, "runs": runs, "summary": summary}
    return publish(report, markdown_rows(report), args.json, args.append, TABLE_HEADER, TABLE_HEAD)


if __name__ == "__main__":
    main()
