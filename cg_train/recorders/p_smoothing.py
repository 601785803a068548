"""``--p-smoothing A`` (seed 000, Filter-KD): a per-sample running average of predicted distributions.

At every training step, for every sample in the batch, ``q <- softmax(logits / tau)``
the first time the sample is seen and ``q <- (1 - A) q + A softmax(logits / tau)``
afterwards, exactly as seed 000's ``store_table``. The table ``[N, K]`` lives on the
device (float16 when it would exceed ``FLOAT16_ABOVE`` float32 values, i.e. beyond
CIFAR/Tiny-ImageNet sizes) and is written as ``p_smoothing.npy`` (float32, ``[N, K]``,
rows by Manifest index; all-zero rows = never seen) after every training epoch, and
as ``p_smoothing_best.npy`` whenever the test top-1 improves (seed 000 keeps the
table of its best model as the Filter-KD teacher).

With several processes the table is sharded by sample index (``cg_train.tables``):
each process holds ``ceil(N / W)`` rows, the owner of a row applies the update
sent by whichever process trained that sample, and checkpoints write one shard
per process under ``tables/p_smoothing/`` (a resume on another process count
reads the rows it now owns). The result equals one process's table.
"""
from __future__ import annotations

import shutil
from typing import Any, Optional

import torch

from ..data.manifest import Batch
from ..data.sharding import max_share
from ..tables import ShardedTable
from . import RECORDERS, Recorder, RunContext

TABLE = "p_smoothing.npy"
BEST_TABLE = "p_smoothing_best.npy"
SHARDS = "tables/p_smoothing"
#: Tables larger than this many values are kept in float16 on the device.
FLOAT16_ABOVE = 2 ** 26


class PSmoothingRecorder(Recorder):
    collective = True  # rows go to their owners

    def __init__(self, ctx: RunContext, alpha: float, tau: float):
        n, k = len(ctx.data.train), ctx.data.train.num_classes
        self.ctx, self.alpha, self.tau = ctx, alpha, tau
        self.output_dir, self.is_main = ctx.output_dir, ctx.is_main
        dtype = torch.float16 if n * k > FLOAT16_ABOVE else torch.float32
        self.table = ShardedTable(n, k, ctx.rank, ctx.world_size, ctx.accelerator.device, dtype,
                                  step_rows=max_share(ctx.cfg.data.batch_size, ctx.world_size))
        self.best_acc1 = -1.0
        self.generation = 0

    def _average(self, old: torch.Tensor, seen: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return torch.where(seen.unsqueeze(1), (1 - self.alpha) * old + self.alpha * probs, probs)

    @torch.no_grad()
    def on_train_batch(self, ctx: RunContext, epoch: int, step: int, batch: Batch, logits: torch.Tensor,
                       losses: torch.Tensor) -> None:
        probs = torch.softmax(logits[:len(batch.indices)].detach().float() / self.tau, dim=1)
        self.table.scatter(batch.indices, probs, combine=self._average)

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        self.table.write_npy(self.output_dir / TABLE, self.is_main)

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: Any) -> None:
        if phase == "test" and result.count and result.acc1 > self.best_acc1:
            self.best_acc1 = result.acc1
            self.table.write_npy(self.output_dir / BEST_TABLE, self.is_main)

    def state_dict(self) -> dict[str, Any]:
        self.generation += 1
        saved = self.table.save(self.output_dir / SHARDS, self.generation, self.is_main)
        return {**saved, "best_acc1": self.best_acc1}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.table.clear()
        self.best_acc1, self.generation = -1.0, 0
        if not state:
            if self.is_main:
                for name in (TABLE, BEST_TABLE):
                    (self.output_dir / name).unlink(missing_ok=True)
                shutil.rmtree(self.output_dir / SHARDS, ignore_errors=True)
            self.table.barrier()
            return
        self.table.load(self.output_dir / SHARDS, state, "p_smoothing")
        self.best_acc1, self.generation = float(state["best_acc1"]), int(state["generation"])


@RECORDERS.register("p_smoothing", help="--p-smoothing: seed 000's running-average probability table")
def build_p_smoothing(ctx: RunContext) -> Optional[Recorder]:
    rec = ctx.cfg.record
    return PSmoothingRecorder(ctx, rec.p_smoothing, rec.p_smoothing_tau) if rec.p_smoothing > 0 else None
