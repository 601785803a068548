"""RepDistiller's table at toy scale on the embedded MNIST digits (docs/feature_distillation.md, "Check on real data").

One teacher/student pair of the CIFAR zoo (cifar_resnet56 -> cifar_resnet20 at 28 px), vanilla, KD and every
feature method with its RepDistiller defaults (-r/-a/-b, nce_k, ...), the same recipe for every row, three
seeds. The teacher trains on 1,000 digits (100 per class); the students on 300 of them (30 per class, the
harder subset: on all 1,000 the vanilla student already beat the teacher, 95.6 vs 94.2 % top-1, and there was
nothing to distil); both are tested on the same 500 digits. Then ``cg-analyze kd`` (table, bar chart) and
the ordering against RepDistiller's published CIFAR-100 resnet56 -> resnet20 top-1 (Spearman and Kendall,
scipy.stats), written to ``ordering.md``.

    cg-train prepare-demo data/demo-mnist
    nice -n 10 python benchmarks/feature_kd_mnist.py data/demo-mnist runs/feature_kd_mnist [--seeds 0,1,2] [--jobs 2]

Every run is started with ``--resume``: an interrupted study continues, a finished run is left as it is.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from cg_train.data.demo import demo_subset

#: RepDistiller's README, CIFAR-100 top-1 of resnet56 -> resnet20 (teacher 72.34, vanilla student 69.06).
REPDISTILLER = {"ce": 69.06, "kd": 70.66, "fitnet": 69.21, "at": 70.55, "sp": 69.67, "cc": 69.63, "vid": 70.38,
                "rkd": 69.61, "pkt": 70.34, "ab": 69.47, "ft": 69.84, "fsp": 69.95, "nst": 69.60, "crd": 71.16}
METHODS = tuple(REPDISTILLER)
#: RepDistiller's 30 epochs of pre-training before 240 of training, scaled to this recipe's epochs
STAGED = ("ab", "ft", "fsp")
COMMON = ["--workers", "0", "--no-progress", "--sample-size", "0", "--image-size", "28", "--batch-size", "32",
          "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "5e-4", "--lr-scheduler", "cosine"]
TEACHER = ["--arch", "cifar_resnet56", "--epochs", "10", "--seed", "0"]
STUDENT = ["--arch", "cifar_resnet20", "--epochs", "10"]
INIT_EPOCHS = "1"


def cg_train(data: Path, out: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "cg_train", str(data), "--output-dir", str(out), *COMMON, *args, "--resume"]
    # one thread per run: on a shared CPU OpenMP's spinning threads cost more than they give
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})


def ordering(table: pd.DataFrame) -> str:
    """Markdown: our mean top-1 next to RepDistiller's per method, with rank correlations of the two orderings."""
    from scipy import stats

    ours = table[table.student == "cifar_resnet20"].set_index("method").top1_mean
    methods = [m for m in METHODS if m in ours.index]
    a, b = [ours[m] for m in methods], [REPDISTILLER[m] for m in methods]
    rho, rho_p = stats.spearmanr(a, b)
    tau, tau_p = stats.kendalltau(a, b)
    distilled = [m for m in methods if m != "ce"]
    rho_d, rho_dp = stats.spearmanr([ours[m] for m in distilled], [REPDISTILLER[m] for m in distilled])
    rank_ours = pd.Series(a, methods).rank(ascending=False)
    rank_theirs = pd.Series(b, methods).rank(ascending=False)
    lines = ["| method | top-1 here | rank here | RepDistiller CIFAR-100 | rank there |", "|---|---|---|---|---|"]
    for m in sorted(methods, key=lambda m: rank_ours[m]):
        lines.append(f"| {m} | {ours[m]:.2f} | {rank_ours[m]:g} | {REPDISTILLER[m]:.2f} | {rank_theirs[m]:g} |")
    lines += ["", f"Spearman rho = {rho:.3f} (p = {rho_p:.3f}), Kendall tau = {tau:.3f} (p = {tau_p:.3f}) over "
              f"{len(methods)} methods; without vanilla: Spearman rho = {rho_d:.3f} (p = {rho_dp:.3f})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data", type=Path, help="the embedded demo tree (cg-train prepare-demo DIR)")
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--jobs", type=int, default=1, help="student runs at a time (one CPU thread each)")
    p.add_argument("--teacher-run", type=Path, help="a finished run of the teacher recipe below to use instead "
                   "of training one (its --output-dir)")
    args = p.parse_args()
    data = demo_subset(args.data, args.out / "data100", 100, 50)  # 1,000 train / 500 test digits
    student_data = demo_subset(data, args.out / "data30", 30, 50)  # 300 of those / the same 500 test digits
    runs = args.out / "runs"
    teacher_run = args.teacher_run or runs / "teacher"
    if args.teacher_run is None:
        cg_train(data, teacher_run, *TEACHER)
    teacher = ["--teacher", str(teacher_run / "model_best.pth.tar")]
    def student(seed: str, method: str) -> None:
        staged = ["--init-epochs", INIT_EPOCHS] if method in STAGED else []
        cg_train(student_data, runs / "students" / f"method={method},seed={seed}", *STUDENT, "--method", method,
                 *teacher, *staged, "--seed", seed)
        print(f"{method} seed {seed} done", flush=True)

    # seed-major: an interrupted study still covers every method
    jobs = [(seed, method) for seed in args.seeds.split(",") for method in args.methods.split(",")]
    with ThreadPoolExecutor(args.jobs) as pool:
        for done in [pool.submit(student, *job) for job in jobs]:
            done.result()
    analysis = args.out / "analysis"
    subprocess.run([sys.executable, "-c", "from analysis.cli import console_main; console_main()", "kd",
                    str(runs), "-o", str(analysis)], check=True)
    text = ordering(pd.read_csv(analysis / "kd_table.csv"))
    (analysis / "ordering.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
