"""``--store-learned`` (seed 004): which training samples the final model has learned.

After the last epoch the trainer evaluates the whole training set once more in
eval mode with the evaluation transform (phase ``train_all``, every sample on
exactly one process). A sample is *learned* when the top-1 prediction equals its
observed label (the label it was trained on). The main process writes
``learned_examples.csv`` and ``not_learned_examples.csv`` with columns
``index,path,label`` (Manifest index, image path, observed label), sorted by
index; together they hold every readable training sample once (unreadable ones
are in ``skipped.csv`` instead). ``cg-train subset`` reads the ``index`` column.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from ..data.bundle import TRAIN_ALL
from ..data.manifest import Batch
from ..io import atomic_path
from ..sample_stats import PackedStats, concat, per_sample_stats, to_host
from . import RECORDERS, Recorder, RunContext
from .final_pass import FinalPassRecorder

LEARNED = "learned_examples.csv"
NOT_LEARNED = "not_learned_examples.csv"
COLUMNS = ("index", "path", "label")


class LearnedRecorder(FinalPassRecorder):
    phase = TRAIN_ALL

    def __init__(self, ctx: RunContext):
        super().__init__(ctx, [ctx.output_dir / LEARNED, ctx.output_dir / NOT_LEARNED])
        self.output_dir = ctx.output_dir
        self._stats: list[PackedStats] = []

    def on_eval_batch(self, ctx: RunContext, phase: str, epoch: int, batch: Batch, logits: torch.Tensor) -> None:
        if self.is_final(phase, epoch):  # kept on the device: no sync per batch
            self._stats.append(per_sample_stats(logits, batch.observed_labels, batch.true_labels, batch.indices, 1))

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: Any) -> None:
        if not self.is_final(phase, epoch):
            return
        stats = concat([to_host(s) for s in self._stats], k=1)
        self._stats = []
        mine = (stats.index.astype(np.int64), stats.correct)
        shares = ctx.gather(mine)
        if self.is_main:
            indices = np.concatenate([s[0] for s in shares])
            correct = np.concatenate([s[1] for s in shares])
            write_learned(self.output_dir, ctx.data.train, indices, correct)
        self.written = True


def write_learned(output_dir: Path, manifest: Any, indices: np.ndarray, correct: np.ndarray) -> None:
    """Write both CSVs atomically, sorted by index."""
    order = np.argsort(indices, kind="stable")
    indices, correct = indices[order], correct[order]
    if len(np.unique(indices)) != len(indices):
        raise RuntimeError("--store-learned: a training sample was evaluated twice")  # a sharding bug, not input
    for name, chosen in ((LEARNED, indices[correct]), (NOT_LEARNED, indices[~correct])):
        table = pd.DataFrame({"index": chosen, "path": [manifest.source(int(i)) for i in chosen],
                              "label": manifest.observed_labels[chosen]}, columns=list(COLUMNS))
        with atomic_path(output_dir / name) as tmp:
            table.to_csv(tmp, index=False)


@RECORDERS.register("learned", help="--store-learned: learned_examples.csv / not_learned_examples.csv (seed 004)")
def build_learned(ctx: RunContext) -> Optional[Recorder]:
    return LearnedRecorder(ctx) if ctx.cfg.record.store_learned else None
