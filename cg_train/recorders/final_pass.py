"""The base of recorders that evaluate one extra phase once, after the last epoch, and write files from it.

``--store-learned`` (phase ``train_all``) and ``--predict-heldout`` (phase ``heldout``) both ask the trainer
for their phase at the final evaluation only, and keep one bit of state: whether their files are written.
A fresh start, or a resume from a checkpoint saved before the files were written, removes the files of
the abandoned attempt; the resumed run evaluates the phase again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..run_context import Recorder, RunContext


class FinalPassRecorder(Recorder):
    phase: str = ""  # the extra evaluation phase (cg_train.data.bundle.TRAIN_ALL, HELDOUT)

    def __init__(self, ctx: RunContext, files: Sequence[Path]):
        self.final_epoch = ctx.cfg.train.epochs
        self.is_main = ctx.is_main
        self.files = list(files)
        self.written = False

    def is_final(self, phase: str, epoch: int) -> bool:
        return phase == self.phase and epoch == self.final_epoch

    def extra_eval_phases(self, ctx: RunContext, epoch: int) -> Sequence[str]:
        return (self.phase,) if epoch == self.final_epoch else ()

    def state_dict(self) -> dict[str, Any]:
        return {"written": self.written}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.written = bool(state.get("written", False))
        if self.is_main and not self.written:  # files of a later, abandoned attempt
            for path in self.files:
                path.unlink(missing_ok=True)
