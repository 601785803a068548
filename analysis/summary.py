"""A small table of final and best values per experiment and phase, as CSV and Markdown."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from cg_train.io import atomic_path, atomic_write_text
from cg_train.results import EVAL_PHASES

from .experiments import Experiment

COLUMNS = ("experiment", "phase", "last_epoch", "final_loss", "final_acc1", "final_acc5", "best_acc1",
           "best_acc1_epoch", "min_loss")


def summarize(experiments: Sequence[Experiment]) -> pd.DataFrame:
    rows = []
    for experiment in experiments:
        for phase in EVAL_PHASES:
            curve = experiment.curves.get(phase)
            if curve is None:
                continue
            last = curve.iloc[-1]
            best = curve.loc[curve.acc1.idxmax()]
            rows.append({"experiment": experiment.name, "phase": phase, "last_epoch": int(last.epoch),
                         "final_loss": last.loss, "final_acc1": last.acc1, "final_acc5": last.get("acc5"),
                         "best_acc1": best.acc1, "best_acc1_epoch": int(best.epoch), "min_loss": curve.loss.min()})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table: accuracies with 2 decimals, losses with 4."""
    def cell(column: str, value: object) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.4f}" if "loss" in column else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c]) for c in table.columns) + " |")
    return "\n".join(lines) + "\n"


def write_summary(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    csv_path, md_path = Path(out_dir) / "summary.csv", Path(out_dir) / "summary.md"
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    atomic_write_text(md_path, to_markdown(table))
    return [csv_path, md_path]
