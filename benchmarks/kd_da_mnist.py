"""Seed 001's study at toy scale on the embedded MNIST digits (docs/kd_augmentation.md, "Check on real data").

One teacher/student pair (cifar_resnet8 -> simple_cnn), the nine DA schemes, three seeds: per DA and seed a
T. stddev measurement run (``--fix-student --lr 0 --check-ce-var``) and a KD training run, then
``cg-analyze kd-da`` (table, scatter plot, Pearson/Spearman/Kendall with p-values).

    cg-train prepare-demo data/demo-mnist
    python benchmarks/kd_da_mnist.py data/demo-mnist runs/kd_da_mnist [--seeds 0,1,2] [--das identity,mixup]

Every run is started with ``--resume``: an interrupted study continues, a finished run is left as it is.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from cg_train.data.demo import demo_subset

DAS = ("identity", "flip", "flip_crop", "cutout", "autoaugment", "mixup", "cutmix", "cutmix_pick_s_ent",
       "cutmix_pick_t_ent")
COMMON = ["--workers", "0", "--no-progress", "--sample-size", "0", "--weight-decay", "5e-4", "--lr-scheduler", "cosine"]
TEACHER = ["--arch", "cifar_resnet8", "--batch-size", "64", "--epochs", "6", "--lr", "0.05", "--da", "flip_crop"]
STUDENT = ["--arch", "simple_cnn", "--batch-size", "32", "--method", "kd", "--lw-mix", "1,0,1",
           "--t-output-as-target-for-input-mix", "--n-pick", "16"]
MEASURE = ["--epochs", "2", "--fix-student", "--lr", "0", "--check-ce-var"]
TRAIN = ["--epochs", "3", "--lr", "0.05"]


def cg_train(data: Path, out: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "cg_train", str(data), "--output-dir", str(out), *COMMON, *args, "--resume"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data", type=Path, help="the embedded demo tree (cg-train prepare-demo DIR)")
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--das", default=",".join(DAS))
    args = p.parse_args()
    teacher_data = demo_subset(args.data, args.out / "data100", 100, 50)  # 1,000 train / 500 val digits
    student_data = demo_subset(teacher_data, args.out / "data50", 50, 20)  # 500 of those / 200 val digits
    runs = args.out / "runs"
    cg_train(teacher_data, runs / "teacher", *TEACHER)
    kd = [*STUDENT, "--teacher", str(runs / "teacher" / "model_best.pth.tar")]
    for seed in args.seeds.split(","):  # seed-major: an interrupted study still covers every DA
        for da in args.das.split(","):
            setting = [*kd, "--da", da, "--seed", seed]
            cg_train(student_data, runs / "measure" / f"{da},{seed}", *setting, *MEASURE)
            cg_train(student_data, runs / "train" / f"{da},{seed}", *setting, *TRAIN)
            print(f"{da} seed {seed} done", flush=True)
    subprocess.run([sys.executable, "-c", "from analysis.cli import console_main; console_main()", "kd-da",
                    str(runs), "-o", str(args.out / "analysis")], check=True)


if __name__ == "__main__":
    main()
