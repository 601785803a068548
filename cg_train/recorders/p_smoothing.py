"""``--p-smoothing A`` (seed 000, Filter-KD): a per-sample running average of predicted distributions.

At every training step, for every sample in the batch, ``q <- softmax(logits / tau)``
the first time the sample is seen and ``q <- (1 - A) q + A softmax(logits / tau)``
afterwards, exactly as seed 000's ``store_table``. The table ``[N, K]`` lives on the
device (float16 when it would exceed ``FLOAT16_ABOVE`` float32 values, i.e. beyond
CIFAR/Tiny-ImageNet sizes) and is written as ``p_smoothing.npy`` (float32, ``[N, K]``,
rows by Manifest index; all-zero rows = never seen) after every training epoch, and
as ``p_smoothing_best.npy`` whenever the test top-1 improves (seed 000 keeps the
table of its best model as the Filter-KD teacher).

With several processes each one updates the rows of the samples it trains on;
every sample is on one process per epoch, so merging the rows each process
touched since the last merge (an all-reduce at every epoch end and checkpoint)
gives the same table as one process. The merged table goes into the checkpoint
(main process; broadcast to the others on resume), so a resumed run continues
the same averages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from accelerate.utils import broadcast

from ..data.manifest import Batch
from ..io import atomic_path
from . import RECORDERS, Recorder, RunContext

TABLE = "p_smoothing.npy"
BEST_TABLE = "p_smoothing_best.npy"
#: Tables larger than this many values are kept in float16 on the device.
FLOAT16_ABOVE = 2 ** 26


class PSmoothingRecorder(Recorder):
    def __init__(self, ctx: RunContext, alpha: float, tau: float):
        n, k = len(ctx.data.train), ctx.data.train.num_classes
        self.ctx, self.alpha, self.tau = ctx, alpha, tau
        self.output_dir, self.is_main = ctx.output_dir, ctx.is_main
        self.device, self.shape = ctx.accelerator.device, (n, k)
        self.dtype = torch.float16 if n * k > FLOAT16_ABOVE else torch.float32
        self.best_acc1 = -1.0
        self._allocate()

    def _allocate(self) -> None:
        self.table = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        self.seen = torch.zeros(self.shape[0], dtype=torch.bool, device=self.device)
        self.touched = torch.zeros(self.shape[0], dtype=torch.bool, device=self.device)  # since the last merge

    @torch.no_grad()
    def on_train_batch(self, ctx: RunContext, epoch: int, step: int, batch: Batch, logits: torch.Tensor,
                       losses: torch.Tensor) -> None:
        idx = batch.indices
        probs = torch.softmax(logits.detach().float() / self.tau, dim=1)
        old = self.table[idx].float()
        new = torch.where(self.seen[idx].unsqueeze(1), (1 - self.alpha) * old + self.alpha * probs, probs)
        self.table[idx] = new.to(self.dtype)
        self.seen[idx] = True
        self.touched[idx] = True

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        self.merge(ctx)
        if self.is_main:
            self.save(self.output_dir / TABLE)

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: Any) -> None:
        if phase == "test" and result.count and result.acc1 > self.best_acc1:
            self.best_acc1 = result.acc1
            if self.is_main:
                self.save(self.output_dir / BEST_TABLE)

    @torch.no_grad()
    def merge(self, ctx: RunContext) -> None:
        """Give every process the rows any process updated since the last merge (collective)."""
        if ctx.world_size == 1:
            return
        mine = self.touched.unsqueeze(1)
        rows = ctx.accelerator.reduce(torch.where(mine, self.table, torch.zeros_like(self.table)), reduction="sum")
        updated = ctx.accelerator.reduce(self.touched.int(), reduction="sum") > 0
        self.table = torch.where(updated.unsqueeze(1), rows, self.table)
        self.seen |= updated
        self.touched.zero_()

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, self.table.float().cpu().numpy())

    def state_dict(self) -> dict[str, Any]:
        self.merge(self.ctx)
        if not self.is_main:
            return {"on_main": True}
        return {"table": self.table.cpu(), "seen": self.seen.cpu(), "best_acc1": self.best_acc1}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._allocate()
        self.best_acc1 = -1.0
        if not state:
            if self.is_main:
                for name in (TABLE, BEST_TABLE):
                    (self.output_dir / name).unlink(missing_ok=True)
            return
        if "table" in state:
            self.table.copy_(state["table"].to(self.dtype))
            self.seen.copy_(state["seen"])
            self.best_acc1 = float(state["best_acc1"])
        if self.ctx.world_size > 1:  # the main process's state holds the table for everyone
            self.table = broadcast(self.table, from_process=0)
            self.seen = broadcast(self.seen.int(), from_process=0).bool()
            best = broadcast(torch.tensor([self.best_acc1], dtype=torch.float64, device=self.device), 0)
            self.best_acc1 = float(best.item())


@RECORDERS.register("p_smoothing", help="--p-smoothing: seed 000's running-average probability table")
def build_p_smoothing(ctx: RunContext) -> Optional[Recorder]:
    rec = ctx.cfg.record
    return PSmoothingRecorder(ctx, rec.p_smoothing, rec.p_smoothing_tau) if rec.p_smoothing > 0 else None
