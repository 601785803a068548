"""``cg-analyze kd RUNS_DIR``: the distillation table of seeds 001/003 from finished runs' files.

One row per (method, teacher, student, label noise): top-1 on the test phase
after the last epoch, mean ± std over seeds (sample std, ddof=1; 0 for a single
seed), and ECE the same way from each run's ``calibration.csv`` (test phase,
last epoch; NaN for a run without one). The teacher
is the arch in the teacher run's config.yaml (``--teacher`` or ``--targets``
points into that run), "-" for methods without one. Reads files only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
import yaml

from cg_train.config import split_teachers
from cg_train.errors import CgTrainError

from .commands import COMMANDS

COLUMNS = ["method", "teacher", "student", "corrupt_fraction", "seeds", "top1_mean", "top1_std", "ece_mean",
           "ece_std"]


def _teacher_arch(path: Optional[str]) -> str:
    if not path:
        return "-"
    names = []
    for one in split_teachers(path):
        config = Path(one).parent / "config.yaml"
        try:
            names.append(yaml.safe_load(config.read_text())["model"]["arch"])
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            names.append(Path(one).parent.name or one)
    return "+".join(names)


def _final_ece(run: Path) -> float:
    calibration = run / "calibration.csv"
    if calibration.is_file():
        table = pd.read_csv(calibration)
        rows = table[table.phase == "test"] if "phase" in table else table
        if len(rows) and "ece" in rows:
            return float(rows.sort_values("epoch").ece.iloc[-1])
    return float("nan")


def read_run(run: Path) -> Optional[dict]:
    """One finished run's row, or None when it is not a run (no config.yaml / test.csv)."""
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        test = pd.read_csv(run / "test.csv")
    except (OSError, yaml.YAMLError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if not len(test):
        return None
    sup = cfg.get("supervision") or {}
    method = sup.get("method", "ce")
    teacher = sup.get("targets") if method == "filter_kd" else sup.get("teacher")
    uses_teacher = method not in ("ce", "ls", "self_kd")
    return {"method": method, "teacher": _teacher_arch(teacher) if uses_teacher else "-",
            "student": cfg["model"]["arch"], "corrupt_fraction": float(cfg["noise"]["corrupt_fraction"]),
            "seed": int(cfg["train"]["seed"]), "top1": float(test.sort_values("epoch").acc1.iloc[-1]),
            "ece": _final_ece(run)}


def kd_table(runs_dir: Path) -> pd.DataFrame:
    rows = [row for path in sorted(runs_dir.rglob("config.yaml")) if (row := read_run(path.parent))]
    if not rows:
        raise CgTrainError(f"no finished run (config.yaml + test.csv) under {runs_dir}")
    runs = pd.DataFrame(rows)
    keys = ["method", "teacher", "student", "corrupt_fraction"]
    grouped = runs.groupby(keys, sort=False)
    table = grouped.agg(seeds=("seed", "nunique"), top1_mean=("top1", "mean"), top1_std=("top1", "std"),
                        ece_mean=("ece", "mean"), ece_std=("ece", "std")).reset_index()
    table[["top1_std", "ece_std"]] = table[["top1_std", "ece_std"]].where(table.seeds > 1, 0.0)
    return table[COLUMNS].sort_values(["corrupt_fraction", "student", "method"], kind="stable")


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["| method | teacher | student | noise | seeds | top-1 | ECE |", "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        ece = "-" if pd.isna(r.ece_mean) else f"{r.ece_mean:.4f} ± {r.ece_std:.4f}"
        lines.append(f"| {r.method} | {r.teacher} | {r.student} | {r.corrupt_fraction:g} | {r.seeds} | "
                     f"{r.top1_mean:.2f} ± {r.top1_std:.2f} | {ece} |")
    return "\n".join(lines) + "\n"


@COMMANDS.register("kd", help="the distillation table: method, teacher, student, top-1 and ECE over seeds")
def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="cg-analyze kd", description="Seed 003's table (method, teacher, "
                                     "student, top-1 and ECE mean ± std over seeds) from the runs under RUNS_DIR.")
    parser.add_argument("runs_dir", metavar="RUNS_DIR")
    parser.add_argument("-o", "--output", metavar="DIR", help="where to write kd_table.csv/.md (default: RUNS_DIR)")
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        table = kd_table(Path(args.runs_dir))
    except CgTrainError as exc:
        print(f"cg-analyze: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output or args.runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "kd_table.csv", index=False)
    (out / "kd_table.md").write_text(to_markdown(table))
    print(to_markdown(table), end="")
    return 0
