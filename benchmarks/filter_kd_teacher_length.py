"""How long must a Filter-KD teacher run before its p_smoothing table teaches? (docs/supervision.md, issue 25)

Issue 25's setting on the embedded digits: 40% symmetric label noise, a cifar_resnet20 teacher
with seed 000's ``--p-smoothing 0.05``, cifar_resnet8 students with the same data, noise and
seed. Teachers: SHORT epochs at 0.05 (the issue's run; also from the other --p-smoothing-init
starting values), SHORT epochs at larger factors, and a LONG run at 0.05 whose table is kept after
the epochs in --snapshots (so one run gives the tables of several teacher lengths). Students: ce,
ls, kd (from the long and from the short teacher) and filter_kd toward each table
(``--accept-weak-targets``: the point is to see what a refused table gives). Prints each table's
summary (start weight, argmax agreement) and each student's final test top-1.
DEMO_DIR is ``cg-train prepare-demo DEMO_DIR``; the runs use its first --per-class / --val-per-class
digits of each class (OUT/data).

    cg-train prepare-demo DEMO_DIR
    nice -n 10 python benchmarks/filter_kd_teacher_length.py DEMO_DIR OUT [--per-class 100] [--short 8] [--long 30]
        [--snapshots 8,15,30] [--large-p 0.2,0.5] [--inits onehot,uniform] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from cg_train.data.demo import demo_subset

COMMON = ["--batch-size", "64", "--workers", "1", "--no-progress", "--sample-size", "100",
          "--corrupt-fraction", "0.4", "--noise-type", "symmetric"]
TABLE = "p_smoothing.npy"


def command(data: str, out: Path, *args: str) -> list[str]:
    # --resume: continues an interrupted run, and does nothing for a finished one
    return [sys.executable, "-m", "cg_train", data, "--output-dir", str(out), *COMMON, *args, "--resume"]


def train(data: str, out: Path, *args: str) -> None:
    subprocess.run(command(data, out, *args), check=True, stdout=subprocess.DEVNULL)


def teacher_with_snapshots(data: str, out: Path, snapshots: list[int], *args: str) -> None:
    """Run a teacher; copy its last-epoch table (and counts, record) to OUT/epoch=E/ after epoch E."""
    proc = subprocess.Popen(command(data, out, *args), stdout=subprocess.DEVNULL)
    while True:
        done = proc.poll() is not None
        try:
            epochs = json.loads((out / "p_smoothing.json").read_text())["epochs"]
        except (OSError, ValueError, KeyError):
            epochs = -1
        if epochs in snapshots and not (out / f"epoch={epochs}" / TABLE).exists():
            keep = out / f"epoch={epochs}"
            keep.mkdir(exist_ok=True)
            for name in ("p_smoothing_updates.npy", "p_smoothing.json", TABLE):  # the table last
                shutil.copy(out / name, keep / name)
        if done:
            break
        time.sleep(0.5)
    if proc.returncode:
        raise SystemExit(f"teacher {out} failed ({proc.returncode})")
    missing = [e for e in snapshots if not (out / f"epoch={e}" / TABLE).exists()]
    if missing:
        raise SystemExit(f"missed the tables of epochs {missing} (an epoch shorter than the polling?)")


def final_acc1(run: Path) -> float:
    return float(pd.read_csv(run / "test.csv").acc1.iloc[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("demo", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--per-class", type=int, default=100, help="training digits per class (1,000 in all)")
    p.add_argument("--val-per-class", type=int, default=50, help="test digits per class")
    p.add_argument("--short", type=int, default=8, help="epochs of the short teachers and of every student")
    p.add_argument("--long", type=int, default=30)
    p.add_argument("--snapshots", default="8,15,30", help="epochs of the long teacher whose tables are used")
    p.add_argument("--large-p", default="0.2,0.5", help="larger --p-smoothing factors of short teachers")
    p.add_argument("--inits", default="onehot,uniform", help="other starting values of the short 0.05 teacher")
    p.add_argument("--seed", default="0")
    args = p.parse_args()
    args.data = str(demo_subset(args.demo, args.out / "data", args.per_class, args.val_per_class))
    seed = ["--seed", args.seed]
    teacher = ["--arch", "cifar_resnet20", *seed]
    out = args.out
    snapshots = [int(e) for e in args.snapshots.split(",")]
    train(args.data, out / "teacher_short_p0.05", *teacher, "--epochs", str(args.short), "--p-smoothing", "0.05")
    large = [a for a in args.large_p.split(",") if a]
    for alpha in large:
        train(args.data, out / f"teacher_short_p{alpha}", *teacher, "--epochs", str(args.short), "--p-smoothing",
              alpha)
    inits = [i for i in args.inits.split(",") if i]
    for init in inits:
        train(args.data, out / f"teacher_short_p0.05_{init}", *teacher, "--epochs", str(args.short), "--p-smoothing",
              "0.05", "--p-smoothing-init", init)
    long_run = out / "teacher_long_p0.05"
    if not (long_run / "test.csv").exists() or len(pd.read_csv(long_run / "test.csv")) <= args.long:
        teacher_with_snapshots(args.data, long_run, snapshots, *teacher, "--epochs", str(args.long),
                               "--p-smoothing", "0.05")
    tables = {f"short p0.05 ({args.short} ep)": out / "teacher_short_p0.05" / TABLE,
              **{f"short p{a} ({args.short} ep)": out / f"teacher_short_p{a}" / TABLE for a in large},
              **{f"long p0.05, epoch {e}": long_run / f"epoch={e}" / TABLE for e in snapshots},
              **{f"short p0.05 ({args.short} ep), init {i}": out / f"teacher_short_p0.05_{i}" / TABLE for i in inits}}
    student = ["--arch", "cifar_resnet8", *seed, "--epochs", str(args.short)]
    rows = []
    short_run = out / "teacher_short_p0.05"
    for name, extra in {"ce": [], "ls": ["--method", "ls"],
                        "kd": ["--method", "kd", "--teacher", str(long_run / "model_best.pth.tar")],
                        "kd_short": ["--method", "kd", "--teacher", str(short_run / "model_best.pth.tar")]}.items():
        train(args.data, out / "students" / name, *student, *extra)
        teacher_top1 = [t["test_acc1"] for t in json.loads((out / "students" / name / "supervision_checks.json")
                                                              .read_text())["teachers"]] if "kd" in name else "-"
        rows.append({"student": name, "targets": "-", "top1": final_acc1(out / "students" / name),
                     "teacher_top1": teacher_top1})
        print(rows[-1], flush=True)
    for name, table in tables.items():
        run = out / "students" / f"filter_kd_{table.parent.relative_to(out)}".replace("/", "_")
        train(args.data, run, *student, "--method", "filter_kd", "--targets", str(table), "--accept-weak-targets")
        summary = json.loads((run / "supervision_checks.json").read_text())["targets"]
        rows.append({"student": "filter_kd", "targets": name, "top1": final_acc1(run),
                     "start_weight": summary["start_weight"], "mean_max_prob": summary["mean_max_prob"],
                     "agree_true": summary["agree_true"], "agree_observed": summary["agree_observed"],
                     "refused_without_flag": bool(summary["weak"])})
        print(rows[-1], flush=True)
    teachers = {p.name: final_acc1(p) for p in sorted(out.glob("teacher_*"))}
    print("teachers' final test top-1:", teachers)
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
