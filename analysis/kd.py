"""``cg-analyze kd RUNS_DIR``: the distillation table of seeds 001/003 from finished runs' files.

One row per (method, student, teacher, label noise), seed 003's table: top-1 on the test phase
after the last epoch, mean ± std over seeds (sample std, ddof=1; 0 for a single
seed), the gap to vanilla (the mean top-1 minus that of ``ce`` for the same student and noise),
ECE the same way from each run's ``calibration.csv`` (test phase,
last epoch; NaN for a run without one), and how many runs each row averages. The teacher
is the arch in the teacher run's config.yaml (``--teacher`` or ``--targets``
points into that run), "-" for methods without one. A feature method trained with a KD term
(RepDistiller's ``-a`` > 0) is its own row, ``METHOD+kd``. Writes ``kd_table.csv``, ``kd_table.md``
and ``kd_table.png``/``.pdf`` (top-1 bars with ± std error bars, one panel per student and noise, the
vanilla mean dashed). Reads files only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import yaml

from cg_train.config import split_teachers
from cg_train.errors import CgTrainError
from cg_train.io import atomic_path

from .commands import COMMANDS
from .common import save_figure
from .seeds import few_runs_note, over_seeds, pm

COLUMNS = ["method", "student", "teacher", "corrupt_fraction", "runs", "seeds", "top1_mean", "top1_std",
           "gap_to_vanilla", "ece_mean", "ece_std"]
#: The method without distillation that the gap is measured against.
VANILLA = "ce"
#: Logit methods whose loss has a KD term of its own (kd_weight is part of their definition, not a "+kd").
KD_METHODS = ("kd", "self_kd", "sl_kd")
#: Row order: vanilla and KD first, then RepDistiller's table order; other methods after them by name.
METHOD_ORDER = ["ce", "ls", "kd", "self_kd", "filter_kd", "sl", "sl_enc", "sl_ens", "sl_kd", "fitnet", "at", "sp",
                "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd", "kdss"]


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
    if sup.get("feature_weight") and sup.get("kd_weight") and method not in KD_METHODS:
        method += "+kd"  # a feature method with RepDistiller's -a > 0
    return {"method": method, "teacher": _teacher_arch(teacher) if uses_teacher else "-",
            "student": cfg["model"]["arch"], "corrupt_fraction": float(cfg["noise"]["corrupt_fraction"]),
            "seed": int(cfg["train"]["seed"]), "top1": float(test.sort_values("epoch").acc1.iloc[-1]),
            "ece": _final_ece(run)}


def _order(method: str) -> tuple[int, str]:
    base = method.split("+")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


def kd_table(runs_dir: Path) -> pd.DataFrame:
    rows = [row for path in sorted(runs_dir.rglob("config.yaml")) if (row := read_run(path.parent))]
    if not rows:
        raise CgTrainError(f"no finished run (config.yaml + test.csv) under {runs_dir}")
    runs = pd.DataFrame(rows)
    keys = ["method", "student", "teacher", "corrupt_fraction"]
    table = over_seeds(runs, keys, ["top1", "ece"])
    vanilla = table[table.method == VANILLA].groupby(["student", "corrupt_fraction"]).top1_mean.first()
    base = [vanilla.get((r.student, r.corrupt_fraction), np.nan) for r in table.itertuples()]
    table["gap_to_vanilla"] = (table.top1_mean - base).where(table.method != VANILLA)
    table["order"] = [_order(m) for m in table.method]
    table = table.sort_values(["corrupt_fraction", "student", "order", "teacher"], kind="stable")
    return table[COLUMNS].reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["| method | student | teacher | noise | runs | top-1 | gap to vanilla | ECE |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        gap = "-" if pd.isna(r.gap_to_vanilla) else f"{r.gap_to_vanilla:+.2f}"
        lines.append(f"| {r.method} | {r.student} | {r.teacher} | {r.corrupt_fraction:g} | {r.runs} | "
                     f"{pm(r.top1_mean, r.top1_std, 2)} | {gap} | {pm(r.ece_mean, r.ece_std, 4)} |")
    note = few_runs_note(table)
    return "\n".join(lines + (["", note] if note else [])) + "\n"


def figure(table: pd.DataFrame, out: Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Top-1 mean ± std per method, one panel per (student, noise) with a distilled row (a teacher's own
    vanilla run alone is no panel); the vanilla mean as a dashed line, each bar's run count above it."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    panels = [(key, rows) for key, rows in table.groupby(["student", "corrupt_fraction"], sort=False)
              if (rows.method != VANILLA).any()] or list(table.groupby(["student", "corrupt_fraction"], sort=False))
    width = max(6.5, 0.5 * max(len(rows) for _, rows in panels) + 2.0)
    fig = Figure(figsize=(width, 3.4 * len(panels)))
    for ax, ((student, noise), rows) in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        several = rows.teacher[rows.teacher != "-"].nunique() > 1
        labels = [f"{r.method}\n{r.teacher}" if several and r.teacher != "-" else r.method
                  for r in rows.itertuples()]
        x = np.arange(len(rows))
        colors = ["0.6" if m == VANILLA else "C0" for m in rows.method]
        ax.bar(x, rows.top1_mean, yerr=rows.top1_std, color=colors, capsize=3, error_kw={"elinewidth": 1})
        low = float((rows.top1_mean - rows.top1_std).min())
        high = float((rows.top1_mean + rows.top1_std).max())
        pad = 0.12 * (high - low) + 0.5
        for xi, r in zip(x, rows.itertuples()):
            ax.text(xi, r.top1_mean + r.top1_std + 0.2 * pad, f"n={r.runs}", ha="center", fontsize=7)
        vanilla = rows.top1_mean[rows.method == VANILLA]
        if len(vanilla):
            ax.axhline(float(vanilla.iloc[0]), color="0.3", linestyle="--", linewidth=1, label="vanilla (ce)")
            ax.legend(loc="upper left", fontsize=8, frameon=False)
        ax.set_ylim(max(0.0, low - pad), high + 2 * pad)
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("test top-1 (%)")
        teachers = ", ".join(sorted(set(rows.teacher) - {"-"})) or "-"
        ax.set_title(f"student {student}, teacher {teachers}, noise {noise:g}: mean ± std over seeds", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out, "kd_table", formats)


@COMMANDS.register("kd", help="the distillation table: method, student, teacher, top-1, gap to vanilla, ECE over seeds")
def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="cg-analyze kd", description="Seed 003's table (method, student, "
                                     "teacher, top-1 mean ± std over seeds, gap to vanilla, ECE mean ± std, runs) "
                                     "from the runs under RUNS_DIR, and a bar chart of it.")
    parser.add_argument("runs_dir", metavar="RUNS_DIR")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="where to write kd_table.csv/.md/.png/.pdf (default: RUNS_DIR)")
    parser.add_argument("--no-figure", action="store_true", help="write the table only")
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
    with atomic_path(out / "kd_table.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "kd_table.md") as tmp:
        tmp.write_text(to_markdown(table))
    if not args.no_figure:
        figure(table, out)
    print(to_markdown(table), end="")
    return 0
