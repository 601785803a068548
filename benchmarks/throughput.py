"""Training images/s of cg-train, side by side in one run: the model's ceiling, the real loader, ``--paths``, DDP.

Every row is a real ``cg-train`` run (a fresh process, the command a user types) on the
same JPEGs; its images/s is what the run logs for its last training epoch ("epoch E:
trained on N samples, ... S s (R img/s)"), so the first epoch's start-up (worker and
DALI start, cuDNN autotuning, compiling) is left out. Rows:

(a) ``--loader synthetic``: random images already on the device: the model's ceiling;
(b) the real loader (``--loader``): real/synthetic >= 0.9 means the loader never starves the model;
(c) the same with ``--paths``: logging overhead, target <= 2 %;
(d) ``--ddp``: the real loader on 2 processes (CPU: ``accelerate launch`` with gloo; GPU: 2 GPUs)
    vs (b): target >= 1.7x where the machine has the cores for it.

On a GPU it also prints the achieved fraction of the device's bf16 dense peak for the
model's training FLOPs (forward + backward, counted by ``torch.utils.flop_counter``).

    python benchmarks/throughput.py --arch resnet18 --loader dali --device cuda -- --mixed-precision bf16
    python benchmarks/throughput.py --ddp                  # CPU: simple_cnn on 64x64 JPEGs
    python benchmarks/throughput.py --smoke --json out.json   # seconds: checks the rows are produced

Arguments after ``--`` go to every cg-train run (e.g. ``--channels-last --compile``).
``--append BENCHMARKS.md`` adds the rows to that file's table of this benchmark.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loader import photo_like  # noqa: E402
from benchmarks.report import publish, split_argv  # noqa: E402

#: bf16 dense Tensor Core peak (TFLOP/s) by device-name fragment, from NVIDIA's data sheets (SXM parts).
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}
EPOCH_LINE = re.compile(r"epoch (\d+): trained on (\d+) samples, .* ([\d.]+) s \(([\d.]+) img/s\)")
TABLE_HEADER = "## Training throughput (`benchmarks/throughput.py`)"
TABLE_HEAD = "| date | machine | command | mode | img/s | ratio |\n| --- | --- | --- | --- | --- | --- |\n"


def write_dataset(root: Path, images: int, size: tuple[int, int], classes: int = 4) -> None:
    """An ImageFolder of photo-like JPEGs (train: ``images``; val: a tenth, at least one per class)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("val", max(classes, images // 10))):
        for i in range(count):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            height, width = size if i % 3 else size[::-1]
            photo_like(height, width, rng).save(folder / f"{i:06d}.JPEG", quality=90)


def last_epoch_rate(log_text: str) -> tuple[int, float, float]:
    """(samples, seconds, images/s) of the last training epoch a run logged."""
    matches = EPOCH_LINE.findall(log_text)
    if not matches:
        raise RuntimeError("the run logged no finished training epoch")
    _, samples, seconds, rate = matches[-1]
    return int(samples), float(seconds), float(rate)


def cg_train_command(args: argparse.Namespace, data: Path, out: Path, loader: str, extra: list[str]) -> list[str]:
    flags = ["--arch", args.arch, "--batch-size", str(args.batch_size), "--loader", loader,
             "--workers", str(args.workers), "--epochs", str(args.epochs), "--sample-size", "0",
             "--no-progress", "--print-freq", "1000000", "--output-dir", str(out), *extra, *args.cg_train_args]
    if args.image_size:
        flags += ["--image-size", str(args.image_size), "--resize-size", str(args.image_size * 8 // 7)]
    if args.device == "cpu":
        flags.append("--cpu")
    return [str(data), *flags]


def run_mode(name: str, args: argparse.Namespace, data: Path, work: Path, loader: str, extra: list[str],
             processes: int = 1) -> dict[str, Any]:
    out = work / name
    train_args = cg_train_command(args, data, out, loader, extra)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    if processes == 1:
        command = [sys.executable, "-m", "cg_train", *train_args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no",
                   "--main_process_port", str(29500 + os.getpid() % 1000), "-m", "cg_train", *train_args]
        if args.device == "cpu":  # accelerate's CPU multi-process recipe
            env.update(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // processes)))
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name}: cg-train failed ({result.returncode}):\n{result.stderr[-3000:]}")
    samples, seconds, rate = last_epoch_rate((out / "log.txt").read_text())
    row = {"mode": name, "loader": loader, "processes": processes, "flags": " ".join(extra + args.cg_train_args),
           "samples": samples, "epoch_s": seconds, "img_s": rate, "wall_s": round(time.perf_counter() - started, 1)}
    print(f"  {name:<10} {rate:10.1f} img/s  ({samples} samples in {seconds:.2f} s)", flush=True)
    return row


def training_flops_per_image(arch: str, classes: int, crop: int) -> float:
    """Forward + backward FLOPs of one image (a multiply-add counts 2), as torch's FLOP counter counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    from cg_train.models import build_model

    model = build_model(arch, classes)
    images = torch.randn(2, 3, crop, crop)
    with FlopCounterMode(display=False) as counter:
        model(images).sum().backward()
    return counter.get_total_flops() / 2


def device_peak(args: argparse.Namespace) -> tuple[str, Optional[float]]:
    if args.device != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name()
    if args.peak_tflops:
        return name, args.peak_tflops
    return name, next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def summarise(rows: list[dict[str, Any]], flops: Optional[float], peak: Optional[float]) -> dict[str, Any]:
    rate = {row["mode"]: row["img_s"] for row in rows}
    summary: dict[str, Any] = {}
    if "real" in rate and "synthetic" in rate:
        summary["real_over_synthetic"] = rate["real"] / rate["synthetic"]
    if "paths" in rate and "real" in rate:
        summary["paths_overhead"] = rate["real"] / rate["paths"] - 1
    if "ddp2" in rate and "real" in rate:
        summary["ddp_scaling"] = rate["ddp2"] / rate["real"]
    if flops and peak and "synthetic" in rate:
        summary["peak_fraction"] = rate["synthetic"] * flops / (peak * 1e12)
    return summary


def markdown_rows(report: dict[str, Any]) -> str:
    s, meta = report["summary"], report["setup"]
    ratio = {"real": f"real/synthetic {s['real_over_synthetic']:.2f}" if "real_over_synthetic" in s else "",
             "paths": f"overhead {100 * s['paths_overhead']:+.1f}%" if "paths_overhead" in s else "",
             "ddp2": f"scaling {s['ddp_scaling']:.2f}x" if "ddp_scaling" in s else "",
             "synthetic": f"{100 * s['peak_fraction']:.1f}% of bf16 peak" if "peak_fraction" in s else "ceiling"}
    lines = [f"| {meta['date']} | {meta['machine']} | `{meta['command']}` | {row['mode']} | {row['img_s']:.1f} | "
             f"{ratio.get(row['mode'], '')} |" for row in report["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    given, argv, passthrough = split_argv(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="simple_cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--loader", default="torchvision", help="the real loader: torchvision or dali")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="the last one is timed")
    parser.add_argument("--images", type=int, default=1024, help="training JPEGs written when --data is not given")
    parser.add_argument("--image-size", type=int, default=64, help="crop fed to the model (0: the model's own)")
    parser.add_argument("--jpeg-size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    parser.add_argument("--data", default=None, help="an ImageFolder root to use instead of written JPEGs")
    parser.add_argument("--ddp", action="store_true", help="add (d): 2 processes vs 1")
    parser.add_argument("--no-paths", dest="paths", action="store_false", help="leave out (c)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 dense peak (default: by name)")
    parser.add_argument("--machine", default=None, help="the machine, in words, for --append")
    parser.add_argument("--append", default=None, metavar="BENCHMARKS.md", help="add the rows to this file")
    parser.add_argument("--json", default=None, help="write the report as JSON here")
    parser.add_argument("--smoke", action="store_true", help="seconds-sized: 64 tiny JPEGs, crop 32, batch 16, 1 epoch")
    args = parser.parse_args(argv)
    args.cg_train_args = passthrough
    if args.smoke:
        args.images, args.image_size, args.jpeg_size, args.batch_size, args.workers = 64, 32, [40, 48], 16, 0
        args.epochs = 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    with tempfile.TemporaryDirectory(prefix="cg-train-throughput-") as tmp:
        work = Path(tmp)
        data = Path(args.data) if args.data else work / "data"
        if not args.data:
            write_dataset(data, args.images, tuple(args.jpeg_size))
        print(f"{args.arch}, batch {args.batch_size}, loader {args.loader}, device {args.device}, "
              f"{args.epochs} epochs (last timed), extra flags: {' '.join(passthrough) or 'none'}", flush=True)
        rows = [run_mode("synthetic", args, data, work, "synthetic", []),
                run_mode("real", args, data, work, args.loader, [])]
        if args.paths:
            rows.append(run_mode("paths", args, data, work, args.loader, ["--paths"]))
        if args.ddp:
            if args.device == "cuda" and torch.cuda.device_count() < 2:
                print("  ddp2       SKIP: 1 GPU here, DDP scaling needs 2")
            else:
                rows.append(run_mode("ddp2", args, data, work, args.loader, [], processes=2))
    name, peak = device_peak(args)
    crop = args.image_size or 224
    flops = training_flops_per_image(args.arch, 4, crop)
    report = {"setup": {"date": time.strftime("%Y-%m-%d"), "machine": args.machine or f"{name}, {os.cpu_count()} CPUs",
                        "command": f"python benchmarks/throughput.py {given}".strip(),
                        "arch": args.arch, "batch_size": args.batch_size, "crop": crop, "device": name,
                        "train_gflop_per_image": flops / 1e9, "bf16_peak_tflops": peak},
              "rows": rows}
    report["summary"] = summarise(rows, flops, peak)
    for key, value in report["summary"].items():
        print(f"  {key}: {value:.3f}")
    return publish(report, markdown_rows(report), args.json, args.append, TABLE_HEADER, TABLE_HEAD)


if __name__ == "__main__":
    main()
