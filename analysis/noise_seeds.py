"""``cg-analyze noise DIR`` (or several RUN_DIRs): every run scored, and a leaderboard over seeds.

Each run (a folder with ``corruption.parquet`` and path logs; a folder holding runs is searched
recursively) gets its own report as ``cg-analyze noise RUN_DIR`` writes it (in ``RUN_DIR/noise``, or
``OUTPUT/<run>/`` with ``--output``). The leaderboard groups the runs by setting (noise type and fraction,
the path-log source, and every other config key that differs between the runs except the seed, see
:mod:`analysis.seeds`) and gives per detector AUROC, mAP and precision at the noise rate as mean ± std
over the runs of the setting (ddof=1), with how many runs (and distinct seeds) each cell has. The
numbers are those of the runs' ``detectors.csv`` files, so the table can be checked against them.
Writes ``noise_runs.csv`` (one row per run and detector), ``noise_leaderboard.csv``/``.md`` and a
``noise_leaderboard`` bar chart (PNG + PDF).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from cg_train.errors import CgTrainError
from cg_train.io import atomic_path
from cg_train.paths.layout import EVAL_DIR, TRAIN_DIR

from .common import save_figure
from .seeds import cell, few_runs_note, over_seeds, pm, read_config, varying_keys

METRICS = ("auroc", "map", "precision_at_noise_rate")
FIXED = {"noise_type": "noise.noise_type", "corrupt_fraction": "noise.corrupt_fraction"}
#: Scores one run into a folder: the files it wrote (``detectors.csv`` among them) and the path log it read.
Scorer = Callable[[Path, Path], tuple[list[Path], str]]


def is_noise_run(path: Path) -> bool:
    """A cg-train run a detector can score: its labels and at least one path log."""
    return (path / "corruption.parquet").is_file() and ((path / TRAIN_DIR).is_dir() or (path / EVAL_DIR).is_dir())


def find_noise_runs(paths: Sequence[Path]) -> list[Path]:
    """Each path that is a run, and the runs under each one that is not (hidden folders skipped)."""
    found: list[Path] = []
    for root in paths:
        if not root.is_dir():
            raise CgTrainError(f"{root} is not a directory: pass run folders (cg-train --output-dir) or a folder "
                               f"holding them")
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            if is_noise_run(here):
                found.append(here)
                dirnames[:] = []  # a run's own folders are not runs
            else:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return list(dict.fromkeys(found))


def run_names(runs: Sequence[Path], roots: Sequence[Path]) -> list[str]:
    """Each run's path relative to the folder it was found in (one folder given), else to the runs' common
    folder: ``corrupt_fraction=0.2,seed=1`` for a sweep's point."""
    base = roots[0] if len(roots) == 1 else Path(os.path.commonpath([str(r.resolve()) for r in runs]))
    names = [os.path.relpath(run.resolve(), base.resolve()) for run in runs]
    return [run.resolve().name if name == "." else name for name in names]


def score_runs(roots: Sequence[Path], score: Scorer, output: Optional[Path] = None,
               figures: bool = True) -> list[Path]:
    """Score every run under ``roots`` with ``score`` and write the leaderboard (with its bar chart unless
    ``figures`` is False); returns the files written."""
    runs = find_noise_runs(roots)
    if not runs:
        raise CgTrainError(f"no run with corruption.parquet and path logs ({TRAIN_DIR}/ or {EVAL_DIR}/) under "
                           f"{', '.join(map(str, roots))}: train with --paths or --paths-eval")
    names = run_names(runs, roots)
    out = output or (roots[0] if len(roots) == 1 else Path(os.path.commonpath([str(r.resolve()) for r in runs])))
    configs = [read_config(run) for run in runs]
    extras = varying_keys(configs, exclude=FIXED.values())
    written, rows, unscored = [], [], []
    for run, name, config in zip(runs, names, configs):
        try:
            files, source = score(run, out / name if output else run / "noise")
        except CgTrainError as exc:
            print(f"cg-analyze: warning: {name}: {exc} (left out)", file=sys.stderr)
            unscored.append(name)
            continue
        written += files
        metrics_file = next(f for f in files if f.name == "detectors.csv")
        metrics = pd.read_csv(metrics_file)
        if metrics.empty:  # no corrupt sample with a known truth: scores only
            unscored.append(name)
        setting = {column: config.get(key) for column, key in FIXED.items()} | {key: config.get(key) for key in extras}
        for row in metrics.to_dict("records"):
            rows.append({"run": name, "seed": config.get("train.seed"), **setting, "source": source, **row})
    if not rows:
        raise CgTrainError(f"none of the {len(runs)} runs has metrics: no sample with a known true label is "
                           f"corrupt (or every run failed, see the warnings)")
    per_run = pd.DataFrame(rows)
    keys = [*FIXED, *extras, "source"]
    table = leaderboard(per_run, keys)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "noise_runs.csv") as tmp:
        per_run.to_csv(tmp, index=False)
    with atomic_path(out / "noise_leaderboard.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "noise_leaderboard.md") as tmp:
        Path(tmp).write_text(to_markdown(table, keys, len(runs), unscored, figures))
    written += [out / "noise_runs.csv", out / "noise_leaderboard.csv", out / "noise_leaderboard.md"]
    return written + (figure(table, keys, out) if figures else [])


def leaderboard(per_run: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Mean ± std of every metric per (setting, detector); within a setting, the best AUROC first."""
    table = over_seeds(per_run, [*keys, "detector"], METRICS)
    settings = table[list(keys)].map(str).agg("|".join, axis=1)  # map: pandas 3 keeps NaN through astype(str)
    table.insert(0, "setting", pd.factorize(settings)[0])
    table = table.sort_values(["setting", "auroc_mean", "detector"], ascending=[True, False, True], kind="stable")
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame, keys: Sequence[str], run_count: int, unscored: Sequence[str],
                figures: bool = True) -> str:
    extras = [k for k in keys if k not in FIXED and k != "source"]
    lines = ["# Label-noise detection over seeds", "",
             f"{run_count} runs in {table.setting.nunique()} settings. Per setting and detector: mean ± std "
             f"(sample std) over the setting's runs, and how many runs the cell averages; each run's numbers are "
             f"in its own `detectors.csv`, all of them in `noise_runs.csv`.", "",
             "| noise | " + " | ".join([*extras, "source"]) + " | detector | runs | AUROC | mAP | "
             "precision at noise rate |",
             "|" + "---|" * (len(extras) + 7)]
    for r in table.to_dict("records"):
        noise = f"{cell(r['noise_type'])} {cell(r['corrupt_fraction'])}"
        setting = " | ".join(cell(r[k]) for k in [*extras, "source"])
        lines.append(f"| {noise} | {setting} | {r['detector']} | {r['runs']} | "
                     f"{pm(r['auroc_mean'], r['auroc_std'], 4)} | {pm(r['map_mean'], r['map_std'], 4)} | "
                     f"{pm(r['precision_at_noise_rate_mean'], r['precision_at_noise_rate_std'], 4)} |")
    notes = [few_runs_note(table)]
    if unscored:
        notes.append(f"Without metrics (no corrupt sample with a known true label, or not scored): "
                     f"{', '.join(unscored)}.")
    lines += [line for note in notes if note for line in ("", note)]
    if figures:
        lines += ["", "![AUROC and mAP per detector, mean ± std over seeds](noise_leaderboard.png)"]
    return "\n".join(lines) + "\n"


def figure(table: pd.DataFrame, keys: Sequence[str], out: Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """AUROC and mAP mean ± std per detector, one row of panels per setting, each bar's run count on it."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    settings = list(table.groupby("setting", sort=True))
    width = max(7.0, 0.7 * table.detector.nunique() * 2 + 2.0)
    fig = Figure(figsize=(width, 3.2 * len(settings)))
    axes = fig.subplots(len(settings), 2, squeeze=False)
    for (_, rows), pair in zip(settings, axes):
        first = rows.iloc[0]
        title = ", ".join(f"{k} {cell(first[k])}" for k in keys)
        x = np.arange(len(rows))
        for ax, metric, label in zip(pair, ("auroc", "map"), ("AUROC", "mAP")):
            ax.bar(x, rows[f"{metric}_mean"], yerr=rows[f"{metric}_std"], capsize=3, color="C0",
                   error_kw={"elinewidth": 1})
            top = rows[f"{metric}_mean"] + rows[f"{metric}_std"]
            for xi, (height, runs) in enumerate(zip(top, rows.runs)):
                ax.text(xi, height + 0.005, f"n={runs}", ha="center", va="bottom", fontsize=7)
            low = float((rows[f"{metric}_mean"] - rows[f"{metric}_std"]).min())
            ax.set_ylim(max(0.0, low - 0.05), min(1.0, float(top.max())) + 0.04)  # zoomed: the gaps show
            ax.set_xticks(x, rows.detector, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(f"{label} (mean ± std)")
            ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out, "noise_leaderboard", formats)
