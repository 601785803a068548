"""``--seed002-logs``: seed 002's ``train_log.csv`` and ``results_valid.csv``.

``train_log.csv`` has one row per training epoch, as seed 002 writes it:
``epoch`` (1-based, zero-padded), ``train_error`` and ``train_loss`` (mean over the
epoch's training samples, fractions, training mode), ``valid_error``,
``valid_top5_error`` and ``valid_loss`` (the ``test`` phase evaluated right after
that epoch). ``results_valid.csv`` holds one row per test sample of the latest
evaluation: ``index`` (test Manifest index), ``Loss``, ``Prediction`` (top-1 class),
``Confidence`` and ``Label``. Seed 002's code stores the largest raw logit as
``Confidence``; here it is the softmax probability of the prediction, which is
what the name promises and what calibration analyses expect.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from ..data.manifest import Batch
from ..io import CsvLog, atomic_path
from ..sample_stats import PackedStats, concat, per_sample_stats, to_host
from . import RECORDERS, Recorder, RunContext

TRAIN_LOG = "train_log.csv"
RESULTS = "results_valid.csv"
TRAIN_LOG_COLUMNS = ("epoch", "train_error", "train_loss", "valid_error", "valid_top5_error", "valid_loss")
RESULTS_COLUMNS = ("index", "Loss", "Prediction", "Confidence", "Label")
VALID_PHASE = "test"


class Seed002Recorder(Recorder):
    def __init__(self, ctx: RunContext):
        self.log = CsvLog(ctx.output_dir / TRAIN_LOG, TRAIN_LOG_COLUMNS)
        self.results_path = ctx.output_dir / RESULTS
        self.is_main = ctx.is_main
        self.device = ctx.accelerator.device
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # samples, errors, loss; this epoch
        self.pending: Optional[list[float]] = None  # [train_error, train_loss] waiting for the next test result
        self._valid: list[PackedStats] = []

    def on_train_batch(self, ctx: RunContext, epoch: int, step: int, batch: Batch, logits: torch.Tensor,
                       losses: torch.Tensor) -> None:
        stats = per_sample_stats(logits, batch.observed_labels, batch.true_labels, batch.indices, 1, losses)
        wrong = stats.ints[3] != stats.ints[1]  # top-1 class != observed label
        self.sums += torch.stack([self.sums.new_full((), len(wrong)), wrong.sum(),
                                  stats.floats[0].sum()]).double()

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        sums = ctx.accelerator.reduce(self.sums, reduction="sum") if ctx.world_size > 1 else self.sums
        count, errors, loss = sums.tolist()
        self.pending = [errors / max(count, 1), loss / max(count, 1)]
        self.sums = torch.zeros_like(self.sums)

    def on_eval_batch(self, ctx: RunContext, phase: str, epoch: int, batch: Batch, logits: torch.Tensor) -> None:
        if phase == VALID_PHASE:
            self._valid.append(per_sample_stats(logits, batch.observed_labels, batch.true_labels, batch.indices, 1))

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: Any) -> None:
        if phase != VALID_PHASE:
            return
        mine = concat([to_host(s) for s in self._valid], k=1)
        self._valid = []
        shares = ctx.gather(mine)
        if not self.is_main:
            self.pending = None
            return
        stats = concat(shares, k=1)
        order = np.argsort(stats.index, kind="stable")
        table = pd.DataFrame({"index": stats.index, "Loss": stats.loss, "Prediction": stats.top_classes[0],
                              "Confidence": stats.top_probs[0], "Label": stats.observed}).iloc[order]
        with atomic_path(self.results_path) as tmp:
            table.to_csv(tmp, index=False)
        if self.pending is not None and epoch >= 1:
            train_error, train_loss = self.pending
            self.log.append((f"{epoch:03d}", train_error, train_loss, 1 - result.acc1 / 100,
                             1 - result.acc5 / 100, result.loss))
        self.pending = None

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.log.rows() if self.is_main else 0, "sums": self.sums.tolist(), "pending": self.pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = torch.tensor(state.get("sums", [0.0, 0.0, 0.0]), dtype=torch.float64, device=self.device)
        self.pending = state.get("pending")
        if self.is_main:
            self.log.ensure_header()
            self.log.truncate(state.get("rows", 0))
            if not state:
                self.results_path.unlink(missing_ok=True)


@RECORDERS.register("seed002", help="--seed002-logs: seed 002's train_log.csv and results_valid.csv")
def build_seed002(ctx: RunContext) -> Optional[Recorder]:
    return Seed002Recorder(ctx) if ctx.cfg.record.seed002_logs else None
