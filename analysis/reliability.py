"""Reliability diagrams from the runs' ``reliability.csv`` (written by cg-train for every evaluation).

One panel per experiment: for the last evaluation of the ``test`` phase, each
confidence bin's accuracy (bars) against the diagonal of perfect calibration, the
gap to it shaded, and the ECE (from ``calibration.csv``'s definition: the gaps
weighted by the bins' shares of samples) in the title. Written as
``reliability_test.pdf`` / ``.png``; experiments without ``reliability.csv`` (runs
from before it existed) are left out.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

from cg_train.results import RELIABILITY_COLUMNS, RELIABILITY_CSV

from .common import save_figure
from .experiments import Experiment

PHASE = "test"


def last_evaluation(path: Path, phase: str = PHASE) -> pd.DataFrame:
    """The bins of ``phase``'s last evaluation in ``path`` (a reliability.csv); empty if there is none."""
    table = pd.read_csv(path)
    missing = set(RELIABILITY_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {', '.join(sorted(missing))}")
    table = table[table.phase == phase]
    return table[table.epoch == table.epoch.max()].sort_values("bin") if len(table) else table


def ece(bins: pd.DataFrame) -> float:
    filled = bins[bins["count"] > 0]
    total = filled["count"].sum()
    return float((filled["count"] * (filled.accuracy - filled.confidence).abs()).sum() / total) if total else math.nan


def plot_reliability(panels: Sequence[tuple[str, pd.DataFrame]]) -> Figure:
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(3.6 * columns, 3.6 * rows))
    for i, (name, bins) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, i + 1)
        width = bins.upper - bins.lower
        filled = bins[bins["count"] > 0]
        axes.bar(filled.lower, filled.accuracy, width=width[bins["count"] > 0], align="edge", edgecolor="black",
                 linewidth=0.5, label="accuracy")
        axes.bar(filled.lower, filled.confidence - filled.accuracy, bottom=filled.accuracy,
                 width=width[bins["count"] > 0], align="edge", color="tab:red", alpha=0.3, label="gap")
        axes.plot([0, 1], [0, 1], "k--", linewidth=1)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_xlabel("confidence")
        axes.set_ylabel("accuracy")
        epoch = int(bins.epoch.iloc[0])
        axes.set_title(f"{name}\nepoch {epoch}, ECE {ece(bins):.4f}", fontsize="small")
        if i == 0:
            axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def write_reliability(experiments: Sequence[Experiment], out_dir: Path, formats: Sequence[str],
                      dpi: int = 110) -> tuple[list[Path], list[str]]:
    """The diagram of every experiment with a reliability.csv; returns (files written, problems)."""
    panels, problems = [], []
    for experiment in experiments:
        path = experiment.path / RELIABILITY_CSV
        if not path.is_file():
            continue
        try:
            bins = last_evaluation(path)
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            problems.append(f"{path}: {str(exc).splitlines()[0]}")
            continue
        if len(bins):
            panels.append((experiment.name, bins))
    if not panels:
        return [], problems
    return save_figure(plot_reliability(panels), out_dir, f"reliability_{PHASE}", formats, dpi), problems
