"""``--predict-heldout`` (always on with ``--fold``): the final model's prediction of every sample it never saw.

After the last epoch the trainer evaluates phase ``heldout`` (the training samples left out by
``--exclude``, ``--remove-ratio`` or ``--fold``; eval mode, evaluation transform, each sample on exactly
one process). The main process writes ``heldout_predictions.parquet``: one row per held-out sample, by
index, with every class's probability (top-k with k = the number of classes) and ``trained_on`` False,
in the format of ``cg-train evaluate --predictions``.

Out-of-sample predictions are what cross-validated confident learning needs (K fold runs, merged by
``cg-analyze kfold``) and what seed 002's WebVision relabelling uses (a model trained without the
suspects predicts them: ``cg-analyze relabel --source model``). A run resumed before the file was
written evaluates the phase again; one resumed after it leaves the file alone.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ..data.bundle import HELDOUT
from ..data.manifest import Batch
from ..sample_stats import HostStats, concat, per_sample_stats, to_host, write_predictions
from . import RECORDERS, Recorder, RunContext
from .final_pass import FinalPassRecorder

HELDOUT_PREDICTIONS = "heldout_predictions.parquet"


class HeldoutRecorder(FinalPassRecorder):
    phase = HELDOUT

    def __init__(self, ctx: RunContext):
        self.path = ctx.output_dir / HELDOUT_PREDICTIONS
        super().__init__(ctx, [self.path])
        self.k = ctx.data.train.num_classes
        self._stats: list[HostStats] = []

    def on_eval_batch(self, ctx: RunContext, phase: str, epoch: int, batch: Batch, logits: torch.Tensor) -> None:
        if self.is_final(phase, epoch):
            # on the host at once: K probabilities per sample would pile up on the device (one pass, once a run)
            self._stats.append(to_host(per_sample_stats(logits, batch.observed_labels, batch.true_labels,
                                                        batch.indices, self.k)))

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: Any) -> None:
        if not self.is_final(phase, epoch):
            return
        shares = ctx.gather(concat(self._stats, self.k))
        self._stats = []
        if self.is_main:
            stats = concat(list(shares), self.k)
            if len(np.unique(stats.index)) != stats.rows:
                raise RuntimeError("--predict-heldout: a held-out sample was predicted twice")  # a sharding bug
            write_predictions(self.path, stats)  # trained_on: False for every row
        self.written = True


@RECORDERS.register("heldout", help="--predict-heldout / --fold: heldout_predictions.parquet, the final model's "
                    "prediction of every sample left out of training")
def build_heldout(ctx: RunContext) -> Optional[Recorder]:
    wanted = ctx.cfg.record.predict_heldout or ctx.cfg.noise.fold is not None
    return HeldoutRecorder(ctx) if wanted and ctx.data.removed is not None and ctx.data.removed.any() else None
