"""T. stddev (seed 001): how much a DA makes the teacher's mean probability vary, with a fixed student.

``--fix-student --lr 0 --check-ce-var --epochs E``: the DA runs over the training
set for E epochs and nothing is updated. As Good-DA-in-KD's ``check_ce_var``, the
teacher's softmax rows (on everything the teacher sees: the augmented batch, plus
the original one under ``--lw-mix``) are pooled in chunks of ``CHUNK_BATCHES``
steps; each chunk gives its mean probability vector ``[K]``; T. stddev is the
std (unbiased) over all chunks so far of those vectors, averaged over classes.
Per epoch, ``t_stddev.csv`` also holds the mean teacher entropy and the mean and
unbiased variance of the teacher-student cross-entropy ``-sum p_t log p_s`` over
the epoch's rows (the variance the proposition is about).

Chunks run on across epochs, as in the seed; each process pools its own rows,
and the chunk means of all processes enter one std.
"""
from __future__ import annotations

from typing import Optional, Protocol

import torch
import torch.nn.functional as F

from ..data.manifest import Batch
from ..io import CsvLog
from ..run_context import Recorder, RunContext

#: Seed 001: a chunk is 5 steps (10 probability blocks with an augmented copy).
CHUNK_BATCHES = 5
FILE = "t_stddev.csv"
COLUMNS = ("epoch", "chunks", "t_stddev", "t_entropy", "ce_mean", "ce_var")


def t_stddev(chunk_means: torch.Tensor) -> float:
    """Mean over classes of the unbiased std over chunks of ``[chunks, K]`` mean probabilities."""
    if len(chunk_means) < 2:
        return float("nan")
    return chunk_means.double().std(dim=0).mean().item()


class TeacherOutputs(Protocol):
    """What this recorder reads from the run's supervision (``cg_train.supervision.Supervision``)."""

    teachers: list[torch.nn.Module]
    last_teacher_logits: Optional[torch.Tensor]  # [teachers, rows, K] of the last step, or None
    last_logits: Optional[torch.Tensor]  # the student's logits of the last step


class TStddevRecorder(Recorder):
    """Writes one ``t_stddev.csv`` row per epoch from the teacher logits the supervision computed."""

    def __init__(self, ctx: RunContext, supervision: TeacherOutputs):
        self.supervision, self.is_main = supervision, ctx.is_main
        self.log = CsvLog(ctx.output_dir / FILE, COLUMNS)
        self.reset_all()

    def reset_all(self) -> None:
        self.chunk_means: list[torch.Tensor] = []  # [K] float64 on the CPU
        self.chunk_sum: Optional[torch.Tensor] = None
        self.chunk_rows, self.chunk_steps = 0, 0
        self.epoch_sums = torch.zeros(4, dtype=torch.float64)  # rows, entropy, ce, ce^2

    def on_train_batch(self, ctx: RunContext, epoch: int, step: int, batch: Batch, logits: torch.Tensor,
                       losses: torch.Tensor) -> None:
        teacher = self.supervision.last_teacher_logits
        student = self.supervision.last_logits
        if teacher is None or student is None:
            return
        log_t = F.log_softmax(teacher[0].double(), dim=1)  # float64: the CE variance is tiny next to its mean
        p_t = log_t.exp()
        ce = -(p_t * F.log_softmax(student.double(), dim=1)).sum(1)
        ent = -(p_t * log_t).sum(1)
        self.epoch_sums += torch.stack([torch.tensor(float(len(ce)), dtype=torch.float64), ent.sum().cpu(),
                                        ce.sum().cpu(), (ce ** 2).sum().cpu()])
        total = p_t.sum(0).cpu()
        self.chunk_sum = total if self.chunk_sum is None else self.chunk_sum + total
        self.chunk_rows += len(p_t)
        self.chunk_steps += 1
        if self.chunk_steps == CHUNK_BATCHES:
            self.chunk_means.append(self.chunk_sum / self.chunk_rows)
            self.chunk_sum, self.chunk_rows, self.chunk_steps = None, 0, 0

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        shares = ctx.gather({"chunks": self.chunk_means, "sums": self.epoch_sums})
        chunks = [c for share in shares for c in share["chunks"]]
        rows, ent, ce, ce2 = sum(share["sums"] for share in shares).tolist()
        self.epoch_sums = torch.zeros(4, dtype=torch.float64)
        if not self.is_main or rows == 0:
            return
        var = (ce2 - ce * ce / rows) / (rows - 1) if rows > 1 else float("nan")
        std = t_stddev(torch.stack(chunks)) if chunks else float("nan")
        self.log.append((epoch, len(chunks), std, ent / rows, ce / rows, var))

    def state_dict(self) -> dict[str, Any]:
        return {"chunk_means": [c.tolist() for c in self.chunk_means],
                "chunk_sum": None if self.chunk_sum is None else self.chunk_sum.tolist(),
                "chunk_rows": self.chunk_rows, "chunk_steps": self.chunk_steps,
                "epoch_sums": self.epoch_sums.tolist(), "rows": self.log.rows() if self.is_main else 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset_all()
        if state:
            self.chunk_means = [torch.tensor(c, dtype=torch.float64) for c in state["chunk_means"]]
            if state["chunk_sum"] is not None:
                self.chunk_sum = torch.tensor(state["chunk_sum"], dtype=torch.float64)
            self.chunk_rows, self.chunk_steps = state["chunk_rows"], state["chunk_steps"]
            self.epoch_sums = torch.tensor(state["epoch_sums"], dtype=torch.float64)
        if self.is_main:
            self.log.ensure_header()
            self.log.truncate(state.get("rows", 0))
