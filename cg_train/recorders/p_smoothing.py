"""``--p-smoothing A`` (seed 000, Filter-KD): a per-sample running average of predicted distributions.

At every training step, for every sample in the batch, ``q <- (1 - A) q + A softmax(logits / tau)``.
The starting value is ``--p-smoothing-init``: ``first`` (default, exactly seed 000's
``store_table``) sets ``q <- softmax(logits / tau)`` at the sample's first visit; ``onehot``
starts from the observed label, ``uniform`` from 1/K (both then average from the first visit).
The table ``[N, K]`` lives on the
device (float16 when it would exceed ``FLOAT16_ABOVE`` float32 values, i.e. beyond
CIFAR/Tiny-ImageNet sizes) and is written as ``p_smoothing.npy`` (float32, ``[N, K]``,
rows by Manifest index; all-zero rows = never seen) after every training epoch, and
as ``p_smoothing_best.npy`` whenever the test top-1 improves (seed 000 keeps the
table of its best model as the Filter-KD teacher). Beside each goes how many updates
every row had and how the table was made (``cg_train.smoothing_record``), so a
Filter-KD run can tell a table that is still mostly its starting values.

With several processes the table is sharded by sample index (``cg_train.tables``):
each process holds ``ceil(N / W)`` rows, the owner of a row applies the update
sent by whichever process trained that sample, and checkpoints write one shard
per process under ``tables/p_smoothing/`` (a resume on another process count
reads the rows it now owns). The result equals one process's table.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..data.manifest import Batch
from ..data.sharding import max_share
from ..smoothing_record import TableRecord, record_path, updates_path
from ..tables import ShardedTable
from . import RECORDERS, Recorder, RunContext

log = logging.getLogger("cg_train")

TABLE = "p_smoothing.npy"
BEST_TABLE = "p_smoothing_best.npy"
SHARDS = "tables/p_smoothing"
#: Tables larger than this many values are kept in float16 on the device.
FLOAT16_ABOVE = 2 ** 26


class PSmoothingRecorder(Recorder):
    collective = True  # rows go to their owners

    def __init__(self, ctx: RunContext, alpha: float, tau: float, init: str = "first"):
        n, k = len(ctx.data.train), ctx.data.train.num_classes
        self.ctx, self.alpha, self.tau, self.init = ctx, alpha, tau, init
        self.output_dir, self.is_main = ctx.output_dir, ctx.is_main
        dtype = torch.float16 if n * k > FLOAT16_ABOVE else torch.float32
        self.table = ShardedTable(n, k, ctx.rank, ctx.world_size, ctx.accelerator.device, dtype,
                                  step_rows=max_share(ctx.cfg.data.batch_size, ctx.world_size), count_updates=True)
        self.best_acc1 = -1.0
        self.generation = 0
        self._set_start()

    def _set_start(self) -> None:
        """Rows hold their starting value until their first visit (``first``: nothing, zeros)."""
        table = self.table
        if self.init == "onehot":
            observed = torch.from_numpy(self.ctx.data.train.observed_labels[table.start:table.stop])
            table.rows.copy_(F.one_hot(observed.long(), table.k).to(table.device, table.dtype))
        elif self.init == "uniform":
            table.rows.fill_(1.0 / table.k)

    def _average(self, old: torch.Tensor, seen: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        if self.init != "first":  # ``old`` is the starting value on a first visit
            return (1 - self.alpha) * old + self.alpha * probs
        return torch.where(seen.unsqueeze(1), (1 - self.alpha) * old + self.alpha * probs, probs)

    @torch.no_grad()
    def on_train_batch(self, ctx: RunContext, epoch: int, step: int, batch: Batch, logits: torch.Tensor,
                       losses: torch.Tensor) -> None:
        probs = torch.softmax(logits[:len(batch.indices)].detach().float() / self.tau, dim=1)
        self.table.scatter(batch.indices, probs, combine=self._average)

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        self._write(self.output_dir / TABLE, epoch + 1)

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: Any) -> None:
        if phase == "test" and result.count and result.acc1 > self.best_acc1:
            self.best_acc1 = result.acc1
            self._write(self.output_dir / BEST_TABLE, epoch)

    def _write(self, path: Path, epochs: int) -> None:
        """The table, then its update counts, then its record (each atomic; a reader trusts the record last)."""
        table = self.table
        table.write_npy(path, self.is_main, zero_unseen=True)  # starting values of unvisited rows: not written
        if table.updates_known:
            table.write_updates_npy(updates_path(path), self.is_main)
        if self.is_main:
            TableRecord(self.alpha, self.tau, self.init, epochs,
                        updates_path(path).name if table.updates_known else None).write(path)

    def state_dict(self) -> dict[str, Any]:
        self.generation += 1
        saved = self.table.save(self.output_dir / SHARDS, self.generation, self.is_main)
        return {**saved, "best_acc1": self.best_acc1}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.table.clear()
        self.best_acc1, self.generation = -1.0, 0
        if not state:
            self._set_start()
            if self.is_main:
                for name in (TABLE, BEST_TABLE):
                    for path in (self.output_dir / name, updates_path(self.output_dir / name),
                                 record_path(self.output_dir / name)):
                        path.unlink(missing_ok=True)
                shutil.rmtree(self.output_dir / SHARDS, ignore_errors=True)
            self.table.barrier()
            return
        self.table.load(self.output_dir / SHARDS, state, "p_smoothing")  # starting values included
        self.best_acc1, self.generation = float(state["best_acc1"]), int(state["generation"])
        if not self.table.updates_known:
            log.info("p_smoothing: the checkpoint predates per-row update counts; this run's tables are written "
                     "without them (a Filter-KD run judges them by their content)")


@RECORDERS.register("p_smoothing", help="--p-smoothing: seed 000's running-average probability table")
def build_p_smoothing(ctx: RunContext) -> Optional[Recorder]:
    rec = ctx.cfg.record
    if rec.p_smoothing <= 0:
        return None
    return PSmoothingRecorder(ctx, rec.p_smoothing, rec.p_smoothing_tau, rec.p_smoothing_init)
