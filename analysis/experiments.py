"""Seed 004 experiment folders read back from disk, tolerating runs that are missing, cut off or garbled.

An experiment is any folder holding seed 004's CSVs (``pristine.csv``, ``corrupt.csv``,
``train_sample.csv``, ``test.csv``: epoch,count,loss,acc1,acc5). One bad file never stops the
analysis: it becomes a :class:`Problem` (one line) and the rest of the experiment is still used.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from cg_train.io import complete_lines
from cg_train.results import EVAL_COLUMNS, EVAL_PHASES, RESULT_CSVS
REQUIRED = ("epoch", "loss", "acc1")


@dataclass(frozen=True)
class Problem:
    experiment: str
    message: str

    def __str__(self) -> str:
        return f"{self.experiment}: {self.message}"


@dataclass
class Experiment:
    name: str
    path: Path
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)  # phase -> rows sorted by epoch


def find_experiment_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` (``root`` included) holding seed 004 CSVs; hidden folders are skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(name in filenames for name in RESULT_CSVS):
            found.append(Path(dirpath))
            dirnames[:] = []  # an experiment's own sub-folders (per-sample logs) are not experiments
    return found


def read_curve(path: Path) -> tuple[Optional[pd.DataFrame], list[str]]:
    """One phase CSV as numeric rows sorted by epoch, or None; plus what was wrong with it."""
    name = path.name
    if not path.is_file():
        return None, [f"{name} is missing (skipped)"]
    data = path.read_bytes()
    notes = []
    if data and not data.endswith(b"\n"):
        data = complete_lines(data)
        notes.append(f"{name}: last line is cut off (dropped)")
    if not data.strip():
        return None, notes + [f"{name} is empty (skipped)"]
    try:
        table = pd.read_csv(io.BytesIO(data), on_bad_lines="skip", encoding_errors="replace")
    except (ValueError, pd.errors.ParserError) as exc:
        return None, notes + [f"{name} is not a readable CSV ({str(exc).splitlines()[0]}; skipped)"]
    if not set(REQUIRED) <= set(table.columns):
        return None, notes + [f"{name} has columns {','.join(map(str, table.columns))}, not "
                              f"{','.join(EVAL_COLUMNS)} (skipped)"]
    for column in EVAL_COLUMNS:
        if column in table:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    garbled = table.epoch.isna() | table.acc1.isna()
    if garbled.any():
        notes.append(f"{name}: {int(garbled.sum())} garbled row(s) dropped")
        table = table[~garbled]
    if table.empty:
        return None, notes + [f"{name} has no rows (skipped)"]
    table = table.astype({"epoch": int}).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return table.reset_index(drop=True), notes


def load_experiment(path: Path, name: str) -> tuple[Experiment, list[Problem]]:
    experiment, problems = Experiment(name, path), []
    for phase in EVAL_PHASES:
        curve, notes = read_curve(path / f"{phase}.csv")
        problems.extend(Problem(name, note) for note in notes)
        if curve is not None:
            experiment.curves[phase] = curve
    return experiment, problems


def load_experiments(root: Path) -> tuple[list[Experiment], list[Problem]]:
    """Every experiment under ``root``, named by its path relative to ``root``, and every problem found."""
    root = Path(root)
    experiments, problems = [], []
    for path in find_experiment_dirs(root):
        name = path.relative_to(root).as_posix() if path != root else root.resolve().name
        experiment, found = load_experiment(path, name)
        problems.extend(found)
        if experiment.curves:
            experiments.append(experiment)
    return experiments, problems
