"""Real-data check of the supervision methods on the embedded MNIST digits (docs/supervision.md).

For each label-noise level and seed: a simple_cnn teacher with seed 000's p_smoothing table, then
one student per method (ce, ls, kd, filter_kd, sl). Every run writes its own calibration.csv
(ECE, 15 equal-width confidence bins, per evaluation), so ``cg-analyze kd OUT`` tabulates top-1 and ECE.

    python benchmarks/supervision_mnist.py DATA_DIR OUT [--epochs 4] [--seeds 0,1,2] [--noise 0,0.4]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

COMMON = ["--arch", "simple_cnn", "--batch-size", "64", "--workers", "0", "--lr", "0.02", "--momentum", "0.9",
          "--weight-decay", "0", "--no-progress", "--sample-size", "200"]
METHODS = {"ce": [], "ls": ["--smoothing", "0.1"], "kd": ["--kd-temperature", "4"], "filter_kd": [], "sl": []}


def train(data: str, out: Path, *args: str) -> None:
    # --resume: continues an interrupted run, and does nothing for a finished one
    cmd = [sys.executable, "-m", "cg_train", data, "--output-dir", str(out), *COMMON, *args, "--resume"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("out", type=Path)
    p.add_argument("--epochs", default="4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--noise", default="0,0.4")
    p.add_argument("--p-smoothing", default="0.5", help="teacher table average weight (seed 000: 0.05 over 200 "
                   "epochs; a few epochs need more weight on recent predictions)")
    args = p.parse_args()
    for seed in args.seeds.split(","):  # seed-major: an interrupted sweep still covers every noise level
        for noise in args.noise.split(","):
            setting = ["--epochs", args.epochs, "--corrupt-fraction", noise, "--seed", seed]
            teacher = args.out / "teachers" / f"noise={noise},seed={seed}"
            train(args.data, teacher, *setting, "--p-smoothing", args.p_smoothing)
            for method, extra in METHODS.items():
                train(args.data, args.out / method / f"noise={noise},seed={seed}", *setting, "--method", method,
                      "--teacher", str(teacher / "model_best.pth.tar"),
                      "--targets", str(teacher / "p_smoothing_best.npy"), *extra)
                print(f"done: noise {noise} seed {seed} {method}", flush=True)


if __name__ == "__main__":
    main()
