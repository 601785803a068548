"""Seed 004's CSVs: ``train.csv`` and one ``<phase>.csv`` per evaluation phase.

``train.csv``: epoch,step,count,loss every ``print_freq`` steps (global batch,
mean loss). ``pristine.csv``, ``corrupt.csv``, ``train_sample.csv``, ``test.csv``:
epoch,count,loss,acc1,acc5 (accuracies in percent), evaluated before each
epoch and once after the last. Rows are appended whole; on resume each file is
cut back to the rows the checkpoint knew about.
"""
from __future__ import annotations

from typing import Any, Optional

from ..io import CsvLog
from ..results import EVAL_COLUMNS, EVAL_PHASES, TRAIN_COLUMNS
from . import RECORDERS, Recorder, RunContext


class EpochCsvRecorder(Recorder):
    def __init__(self, ctx: RunContext):
        out = ctx.output_dir
        self.logs = {"train": CsvLog(out / "train.csv", TRAIN_COLUMNS)}
        self.logs.update({phase: CsvLog(out / f"{phase}.csv", EVAL_COLUMNS) for phase in EVAL_PHASES})
        self.is_main = ctx.is_main

    def on_train_log(self, ctx: RunContext, epoch: int, step: int, count: int, loss: float, lr: float) -> None:
        if self.is_main:
            self.logs["train"].append((epoch, step, count, loss))

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: Any) -> None:
        if self.is_main and phase in self.logs:
            self.logs[phase].append((epoch, result.count, result.loss, result.acc1, result.acc5))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": {name: log.rows() for name, log in self.logs.items()}} if self.is_main else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.is_main:
            return
        rows = state.get("rows", {})
        for name, log in self.logs.items():
            log.ensure_header()
            log.truncate(rows.get(name, 0))


@RECORDERS.register("epoch_csv", help="seed 004 train/pristine/corrupt/train_sample/test CSVs")
def build_epoch_csv(ctx: RunContext) -> Optional[Recorder]:
    return EpochCsvRecorder(ctx)
