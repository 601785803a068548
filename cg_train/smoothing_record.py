"""What a p_smoothing table carries beside itself: how it was made, and how many updates each row had.

A teacher run with ``--p-smoothing A`` writes ``TABLE.npy`` (``[N, K]`` float32, rows by
sample index; all-zero rows were never written) together with

* ``TABLE_updates.npy``: ``[N]`` int32, how many times each row was updated (one per
  training visit of the sample, so one per epoch);
* ``TABLE.json``: the smoothing factor, temperature, starting value and epochs trained.

A Filter-KD run that loads the table as ``--targets`` reads both to tell how much of each
row is still its starting value (:func:`start_weight`). Tables written before these files
existed have neither; they are judged by their content alone. The writer is
``cg_train.recorders.p_smoothing``, the reader ``cg_train.supervision.target_checks``: this
module sits below both.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .errors import CgTrainError
from .io import atomic_write_text

#: ``--p-smoothing-init``: a row's value before its first update, and what a short run's table then is
INITS = {
    "first": "the sample's first prediction (seed 000): a short run's table is mostly the early, barely trained "
             "predictions",
    "onehot": "the observed one-hot label: a short run's table is mostly the (possibly corrupted) labels",
    "uniform": "1/K for every class: a short run's table is flat, its argmax the average of the predictions so far",
}


def updates_path(table: Path) -> Path:
    """``p_smoothing_best.npy`` -> ``p_smoothing_best_updates.npy``."""
    return table.with_name(f"{table.stem}_updates.npy")


def record_path(table: Path) -> Path:
    """``p_smoothing_best.npy`` -> ``p_smoothing_best.json``."""
    return table.with_name(f"{table.stem}.json")


Counts = Union[np.ndarray, torch.Tensor]


def start_weight(updates: Counts, alpha: float, init: str) -> Counts:
    """The weight a row's starting value still has after ``updates`` updates of ``q <- (1-a) q + a p``.

    ``(1 - a) ** u``; with ``init = "first"`` the first visit *sets* the starting value (the first
    prediction), so it is ``(1 - a) ** (u - 1)``. Rows never updated (u = 0) have weight 1.
    """
    steps = updates - 1 if init == "first" else updates
    if isinstance(steps, torch.Tensor):
        return (1.0 - alpha) ** steps.clamp(min=0).double()
    return (1.0 - alpha) ** np.clip(steps, 0, None).astype(np.float64)


def epochs_for_weight(alpha: float, init: str, weight: float) -> int:
    """Updates (epochs: one update per epoch) after which the starting value weighs at most ``weight``."""
    if alpha >= 1.0:
        return 1
    need = int(np.ceil(np.log(weight) / np.log(1.0 - alpha) - 1e-9))
    return need + (1 if init == "first" else 0)


def alpha_for_weight(updates: int, init: str, weight: float) -> Optional[float]:
    """The smallest ``--p-smoothing`` whose starting value weighs at most ``weight`` after ``updates`` updates
    (None: no factor does, e.g. a 'first' table after one update)."""
    steps = updates - 1 if init == "first" else updates
    return None if steps < 1 else float(1.0 - weight ** (1.0 / steps))


@dataclass
class TableRecord:
    """``TABLE.json``: how a p_smoothing table was made."""

    alpha: float  # --p-smoothing
    tau: float  # --p-smoothing-tau
    init: str  # --p-smoothing-init
    epochs: int  # training epochs completed when the table was written
    updates: Optional[str]  # file name of the per-row update counts beside the table (None: unknown)

    def write(self, table: Path) -> None:
        atomic_write_text(record_path(table), json.dumps(asdict(self), indent=1) + "\n")


def read_record(table: Path, what: str) -> Optional[TableRecord]:
    """The record beside ``table``, or None when there is none (a table of an older version)."""
    path = record_path(table)
    if not path.is_file():
        return None
    try:
        record = TableRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise CgTrainError(f"{what}: {path} is not a readable p_smoothing record ({exc}): restore it, or delete "
                           f"it and {updates_path(table).name} to judge {table.name} by its content alone"
                           ) from None
    if record.init not in INITS:
        raise CgTrainError(f"{what}: {path} names an unknown starting value {record.init!r} (one of "
                           f"{', '.join(INITS)})")
    return record


def read_updates(table: Path, record: TableRecord, rows: int, what: str) -> Optional[np.ndarray]:
    """The ``[rows]`` update counts the record names (a memory map), or None when it names none."""
    if record.updates is None:
        return None
    path = table.with_name(record.updates)
    try:
        updates = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise CgTrainError(f"{what}: {path}, the update counts of {table.name}, is missing or unreadable "
                           f"({exc}): copy it with the table, or delete {record_path(table).name} to judge the "
                           f"table by its content alone") from None
    if updates.shape != (rows,):
        raise CgTrainError(f"{what}: {path} holds {updates.shape} update counts for a table of {rows} rows: "
                           f"use the counts written with the table")
    return updates
