"""``skipped.csv``: every sample that could not be decoded, with the epoch, phase and error."""
from __future__ import annotations

import logging
from typing import Any, Optional

from ..io import CsvLog
from . import RECORDERS, Recorder, RunContext

log = logging.getLogger("cg_train")
COLUMNS = ("epoch", "phase", "index", "path", "error")


class SkippedRecorder(Recorder):
    def __init__(self, ctx: RunContext):
        self.log = CsvLog(ctx.output_dir / "skipped.csv", COLUMNS)
        self.is_main = ctx.is_main

    def on_skipped(self, ctx: RunContext, epoch: int, phase: str, skipped: list[Any]) -> None:
        if not (self.is_main and skipped):
            return
        self.log.ensure_header()
        self.log.append(*[(epoch, phase, s.index, s.source, s.error) for s in skipped])
        log.warning("epoch %d %s: skipped %d unreadable sample(s), e.g. %s (%s); see %s", epoch, phase,
                    len(skipped), skipped[0].source, skipped[0].error, self.log.path)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.log.rows()} if self.is_main else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.is_main and self.log.path.exists():
            self.log.truncate(state.get("rows", 0))


@RECORDERS.register("skipped", help="skipped.csv of unreadable images")
def build_skipped(ctx: RunContext) -> Optional[Recorder]:
    return SkippedRecorder(ctx)
