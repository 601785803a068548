"""``calibration.csv`` and ``reliability.csv``: ECE and its bins for every evaluation of every phase.

Kept out of seed 004's ``<phase>.csv`` so their column sets, and every reader of
them, stay as they are. Rows are appended whole; on resume each file is cut back to
the rows the checkpoint knew about (as the seed CSVs are).
"""
from __future__ import annotations

from typing import Any, Optional

from ..io import CsvLog
from ..results import CALIBRATION_COLUMNS, CALIBRATION_CSV, RELIABILITY_COLUMNS, RELIABILITY_CSV
from . import RECORDERS, Recorder, RunContext


def reliability_rows(epoch: int, phase: str, calibration: tuple[tuple[float, ...], ...]) -> list[tuple]:
    """One row per bin: its edges, sample count, mean confidence and accuracy (empty when no sample fell in it)."""
    counts, confidence, correct = calibration
    bins = len(counts)
    return [(epoch, phase, b, b / bins, (b + 1) / bins, int(n), confidence[b] / n if n else "",
             correct[b] / n if n else "") for b, n in enumerate(counts)]


class CalibrationRecorder(Recorder):
    def __init__(self, ctx: RunContext):
        self.logs = {"ece": CsvLog(ctx.output_dir / CALIBRATION_CSV, CALIBRATION_COLUMNS),
                     "bins": CsvLog(ctx.output_dir / RELIABILITY_CSV, RELIABILITY_COLUMNS)}
        self.is_main = ctx.is_main

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: Any) -> None:
        if not self.is_main or result.calibration is None:
            return
        self.logs["ece"].append((epoch, phase, result.count, result.ece))
        self.logs["bins"].append(*reliability_rows(epoch, phase, result.calibration))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": {name: log.rows() for name, log in self.logs.items()}} if self.is_main else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.is_main:
            return
        for name, log in self.logs.items():
            log.ensure_header()
            log.truncate(state.get("rows", {}).get(name, 0))


@RECORDERS.register("calibration", help="calibration.csv (ECE, 15 bins) and reliability.csv for every evaluation")
def build_calibration(ctx: RunContext) -> Optional[Recorder]:
    return CalibrationRecorder(ctx)
