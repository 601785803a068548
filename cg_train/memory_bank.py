"""CRD's contrast memory (RepDistiller's ``ContrastMemory``), sharded by sample index across processes.

Two per-sample memories, the student's and the teacher's embeddings (``[N, dim]`` each, L2-normalised rows),
addressed by the sample index the loaders carry. A step scores each sample's student embedding against the
teacher memory (its own row, the positive, and ``K`` negatives) and its teacher embedding against the student
memory, then moves the positives' rows toward the new embeddings:
``m_i <- normalise(momentum * m_i + (1 - momentum) * v_i)``. Scores are ``exp(v . m / T) / Z`` with ``Z`` fixed
from the first batch (``mean score * N``), as RepDistiller does.

**Sharding.** The memory is cut into ``blocks`` contiguous row blocks (default 64), and process ``r`` of ``W``
holds ``blocks / W`` whole blocks: ``N / W`` rows when ``W`` divides ``blocks`` (ImageNet,
1.28M x 128 float32: 655 MB per model in all, 82 MB per process on 8). Each step draws ``K / blocks``
negatives from every block, so the negatives a sample meets depend on the run seed, epoch, step, block and
the sample's position in the global batch only, never on ``W``: 1 process and W processes draw the same
negatives, and a resume on another process count continues the same stream.

**Communication.** Instead of fetching ``b x (K + 1)`` memory rows from their owners every step
(``b * (K + 1) * dim`` values per process and memory: 1 GB of float32 per memory at ``K = 16384``,
``b = 128``, ``dim = 128``), every process all-gathers the global batch's embeddings and indices
(``B * (2 dim + 1)`` values, with autograd) and scores *all* ``B`` samples against the negatives it holds.
The NCE loss is a sum of one term per positive and one per negative, so each process returns its partial
sums per sample and one autograd all-reduce of ``B`` values adds them up (:meth:`ContrastMemory.to_local`).
Each process scores the ``B`` samples against the ``N / W`` rows it holds in one matrix product and picks
the ``B * K / W`` drawn scores out of it. The collectives have fixed sizes (``step_rows`` rows per process,
padded with index -1), rows held elsewhere and padding read from one spare row and are weighted 0, so no
step waits for the device to tell the host a count. ``benchmarks/crd_memory.py`` measures both designs.

**Negatives.** As RepDistiller's ``--mode exact`` (its default): drawn uniformly from the samples of other
classes (the observed labels; samples the run does not train on are never drawn), with replacement (its
``ContrastMemory`` sampler; RepDistiller's dataset draws without replacement when ``K`` fits). Block ``s``
gives ``k_s`` draws among its ``E_s`` eligible rows; each draw is weighted ``(E_s / E) * (K / k_s)``, so the
weighted sum over the ``K`` draws is an unbiased estimate of RepDistiller's sum over ``K`` uniform draws
(weight 1 for every draw with ``blocks = 1``).

**Checkpoints.** Each process writes its shard of each memory (:attr:`ContrastMemory.tables`, through
``ShardedTable.save``: one file per process, generations, atomic); ``Z`` is a small state of its own
(:meth:`ContrastMemory.z_state`). A resume, also on another process count, reads the rows it now holds
(``ShardedTable.load`` reads the layout a checkpoint was saved with).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

from .errors import ConfigError
from .tables import ShardedTable

#: Seed streams (next to cg_train.data.sharding's): negatives, and the memories' initial rows.
NEGATIVES_STREAM = 5
MEMORY_INIT_STREAM = 6


def block_start(n: int, blocks: int, block: int) -> int:
    return min(block * -(-n // blocks), n)


def held_blocks(blocks: int, world: int, rank: int) -> range:
    """The blocks process ``rank`` of ``world`` holds: ``blocks / world`` of them, one more for some ranks."""
    return range(rank * blocks // world, (rank + 1) * blocks // world)


def block_rows(n: int, world: int, rank: int, blocks: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of the whole blocks process ``rank`` of ``world`` holds."""
    held = held_blocks(blocks, world, rank)
    return block_start(n, blocks, held.start), block_start(n, blocks, held.stop)


def stream_seed(*words: int) -> int:
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1, np.uint64)[0])


def _distributed(world: int) -> bool:
    return world > 1 and dist.is_available() and dist.is_initialized()


class _AllGather(torch.autograd.Function):
    """``cat`` of every process's ``[rows, d]`` tensor in rank order; the gradient of a process's rows is
    the sum of every process's gradient for them (an all-reduce, which every backend has)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rows, ctx.rank = len(tensor), dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


class _AllReduce(torch.autograd.Function):
    """Sum over processes; its gradient is the sum of every process's gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


@dataclass
class Contrast:
    """One step's normalised scores ``exp(v . m / T) / Z`` for every row of the global batch (padded, in rank
    order), against the positives and negatives this process holds; float32."""

    student_pos: torch.Tensor  # [B] student embedding . teacher memory row of the sample itself
    student_neg: torch.Tensor  # [B, k] student embedding . teacher memory rows of this process's negatives
    teacher_pos: torch.Tensor  # [B] teacher embedding . student memory row of the sample
    teacher_neg: torch.Tensor  # [B, k]
    own: torch.Tensor  # [B] bool: this process holds the sample's row (its positive terms count here)
    weight: torch.Tensor  # [B, k] weight of each negative (0: padding, or a block with no eligible row)
    valid: torch.Tensor  # [B] bool: a real row (not padding)


class ContrastMemory:
    """This process's share of CRD's student and teacher memories, its negative sampler and ``Z``."""

    def __init__(self, n: int, dim: int, labels: np.ndarray, rank: int, world: int, device: torch.device,
                 step_rows: int, batch_rows: int, negatives: int = 16384, temperature: float = 0.07,
                 momentum: float = 0.5, seed: int = 0, blocks: int = 64, excluded: Optional[np.ndarray] = None,
                 other_class: bool = True):
        """``labels``: the observed label of every training sample (negatives come from other classes);
        ``step_rows``: the most rows one process passes per step; ``batch_rows``: the most rows of one global
        batch (the global batch size); ``excluded``: samples the run does not train on (never negatives)."""
        if blocks < world:
            raise ConfigError(f"CRD's memory is cut into {blocks} blocks, fewer than the run's {world} processes: "
                              f"set --crd-memory-blocks to at least {world}")
        if negatives < blocks:
            raise ConfigError(f"--nce-k {negatives} is smaller than CRD's {blocks} memory blocks (each block "
                              f"gives at least one negative): raise --nce-k or lower --crd-memory-blocks")
        self.n, self.dim, self.rank, self.world, self.device = n, dim, rank, world, device
        self.step_rows, self.batch_rows, self.negatives, self.blocks = step_rows, batch_rows, negatives, blocks
        self.temperature, self.momentum, self.seed = temperature, momentum, seed
        bounds = functools.partial(block_rows, blocks=blocks)
        self.student = ShardedTable(n, dim, rank, world, device, step_rows=step_rows, bounds=bounds)
        self.teacher = ShardedTable(n, dim, rank, world, device, step_rows=step_rows, bounds=bounds)
        self.start, self.stop = self.student.start, self.student.stop
        self.my_blocks = held_blocks(blocks, world, rank)
        self.draws = [negatives // blocks + (s < negatives % blocks) for s in range(blocks)]
        self.initialise()
        self._build_sampler(np.asarray(labels, dtype=np.int64), excluded, other_class)
        self._generators = [torch.Generator(device=device) for _ in self.my_blocks]
        self.z: Optional[torch.Tensor] = None  # [2]: (student anchor, teacher anchor), set by the first batch

    # ------------------------------------------------------------------ set-up
    def initialise(self) -> None:
        """RepDistiller's initial rows, uniform in ``[-s, s]`` with ``s = 1 / sqrt(dim / 3)``, block by block
        from seeded streams (the same memory on any number of processes); ``Z`` unset."""
        bound = 1.0 / math.sqrt(self.dim / 3)
        for which, table in enumerate((self.student, self.teacher)):
            table.clear()
            for s in self.my_blocks:
                lo, hi = block_start(self.n, self.blocks, s), block_start(self.n, self.blocks, s + 1)
                gen = torch.Generator().manual_seed(stream_seed(self.seed, MEMORY_INIT_STREAM, which, s))
                rows = torch.rand(hi - lo, self.dim, generator=gen) * (2 * bound) - bound
                table.rows[lo - self.start:hi - self.start] = rows.to(self.device)
        self.z = None

    def _build_sampler(self, labels: np.ndarray, excluded: Optional[np.ndarray], other_class: bool) -> None:
        """Per held block: its rows sorted by label (excluded rows last), each class's offset and count, and
        the weight of one draw per (block, label of the anchor)."""
        if len(labels) != self.n:
            raise ValueError(f"{len(labels)} labels for a memory of {self.n} samples")
        classes = int(labels.max(initial=0)) + 1
        if not other_class:  # one class: every trained sample is a candidate, the anchor itself included
            labels, classes = np.zeros_like(labels), 1
        key = np.where(excluded, classes, labels) if excluded is not None else labels
        per_class = np.bincount(key, minlength=classes + 1)[:classes]
        eligible_all = per_class.sum() - (per_class if other_class else 0)
        order, first, starts, skips, live, weights, column_block = [], [], [], [], [], [], []
        offset = 0
        for j, s in enumerate(self.my_blocks):
            lo, hi = block_start(self.n, self.blocks, s), block_start(self.n, self.blocks, s + 1)
            block_key = key[lo:hi]
            order.append(np.argsort(block_key, kind="stable") + (lo - self.start))
            first.append(offset)
            offset += hi - lo
            count = np.bincount(block_key, minlength=classes + 1)[:classes]
            starts.append(np.cumsum(count) - count)
            skips.append(count if other_class else np.zeros_like(count))
            live.append(count.sum())
            eligible = live[-1] - skips[-1]
            share = np.divide(eligible, eligible_all, out=np.zeros(classes), where=eligible_all > 0)
            weights.append(np.where(eligible > 0, share * self.negatives / self.draws[s], 0.0))
            column_block += [j] * self.draws[s]
        held = self.stop - self.start

        def device(values: Any, dtype: torch.dtype = torch.int64) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values), dtype=dtype).to(self.device)

        self._labels = device(labels)
        # one sentinel entry at the end: the spare row, for draws from a block without an eligible row
        self._order = device(np.concatenate([*order, [held]]))
        self._first, self._live = device(first), device(live)  # [blocks held]
        self._starts, self._skips = device(np.stack(starts)), device(np.stack(skips))  # [blocks held, C]
        self._weights = device(np.stack(weights), torch.float32)
        self._column_block = device(column_block)  # [k]: the held block each negative column draws from

    # ------------------------------------------------------------------ one step
    def gather(self, emb_s: torch.Tensor, emb_t: torch.Tensor, idx: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every process's embeddings (with autograd) and indices, each padded to ``step_rows`` (index -1), in
        rank order (collective)."""
        idx = idx.to(self.device, torch.int64)
        if not _distributed(self.world):
            return emb_s, emb_t, idx
        if len(idx) > self.step_rows:
            raise ValueError(f"CRD's memory was passed {len(idx)} rows in one step, more than its step_rows "
                             f"({self.step_rows})")
        pad = self.step_rows - len(idx)
        both = torch.cat([emb_s, emb_t], 1)
        gathered = _AllGather.apply(torch.cat([both, both.new_zeros(pad, both.shape[1])]))
        padded = torch.cat([idx, idx.new_full((pad,), -1)])
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return gathered[:, :self.dim], gathered[:, self.dim:], torch.cat(parts)

    def draw_negatives(self, idx: torch.Tensor, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(local memory rows ``[B, k]``, weights ``[B, k]``) of the negatives this process holds for the global
        batch ``idx`` (padded with -1). Row ``p`` of the global batch (padding skipped) takes row ``p`` of each
        block's seeded uniform draws, so the draws do not depend on how the batch is split."""
        valid = idx >= 0
        uniform = []
        for gen, s in zip(self._generators, self.my_blocks):
            gen.manual_seed(stream_seed(self.seed, NEGATIVES_STREAM, epoch, step, s))
            uniform.append(torch.rand(self.batch_rows, self.draws[s], generator=gen, device=self.device))
        position = (valid.cumsum(0) - 1).clamp(0, self.batch_rows - 1)
        u = torch.cat(uniform, 1)[position]  # [B, k]
        label = self._labels[idx.clamp(min=0)].unsqueeze(1)  # [B, 1]
        block = self._column_block.unsqueeze(0)  # [1, k]
        start, count = self._starts[block, label], self._skips[block, label]  # [B, k]
        eligible = self._live[block] - count
        j = torch.minimum((u * eligible).long(), eligible - 1).clamp(min=0)
        j = torch.where(j < start, j, j + count)  # skip the anchor's own class
        at = torch.where(eligible > 0, self._first[block] + j, torch.full_like(j, len(self._order) - 1))
        weight = self._weights[block, label] * valid.unsqueeze(1)
        return self._order[at], weight

    def contrast(self, emb_s: torch.Tensor, emb_t: torch.Tensor, idx: torch.Tensor, epoch: int, step: int,
                 update: bool = True) -> Contrast:
        """Score this step's embeddings (``[b, dim]``, L2-normalised, with grad) against the memories, fix ``Z`` on
        the first call, then (``update``) move the positives' rows (collective: every process calls, also with
        ``b = 0``)."""
        g_s, g_t, g_idx = self.gather(emb_s.float(), emb_t.float(), idx)
        rows, weight = self.draw_negatives(g_idx, epoch, step)
        own, pos = self.student._local(g_idx)
        with torch.autocast(self.device.type, enabled=False):
            scale = 1.0 / self.temperature
            # every held row's score in one matmul, then the drawn ones picked out: cheaper than copying
            # B x k x dim rows whenever N / W is not far above k (and never more memory than B x N / W);
            # a copy of the memory is kept for the backward pass, as the update below is in place
            keep = torch.is_grad_enabled() and (g_s.requires_grad or g_t.requires_grad)
            mem_s, mem_t = (t._rows.clone() if keep else t._rows for t in (self.student, self.teacher))
            s_all, t_all = g_s @ mem_t.T, g_t @ mem_s.T  # [B, held + 1]: the spare row scores 0
            s_pos = torch.exp(s_all.gather(1, pos.unsqueeze(1)).squeeze(1) * scale)
            t_pos = torch.exp(t_all.gather(1, pos.unsqueeze(1)).squeeze(1) * scale)
            s_neg = torch.exp(s_all.gather(1, rows) * scale)
            t_neg = torch.exp(t_all.gather(1, rows) * scale)
        valid = g_idx >= 0
        if self.z is None:
            self.z = self._normaliser(s_pos, s_neg, t_pos, t_neg, own, weight, valid)
        z_s, z_t = self.z[0], self.z[1]
        if update:
            self.update(g_idx, g_s.detach(), g_t.detach())
        return Contrast(s_pos / z_s, s_neg / z_s, t_pos / z_t, t_neg / z_t, own, weight, valid)

    def _normaliser(self, s_pos: torch.Tensor, s_neg: torch.Tensor, t_pos: torch.Tensor, t_neg: torch.Tensor,
                    own: torch.Tensor, weight: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """RepDistiller's ``Z = mean over the first batch's B x (K + 1) scores * N`` (one all-reduce, once)."""
        with torch.no_grad():
            sums = torch.stack([(s_pos * own).sum() + (s_neg * weight).sum(),
                                (t_pos * own).sum() + (t_neg * weight).sum()]).double()
            if _distributed(self.world):
                dist.all_reduce(sums)
            entries = valid.sum().double() * (self.negatives + 1)
            return (sums / entries.clamp(min=1) * self.n).float()

    @torch.no_grad()
    def update(self, idx: torch.Tensor, emb_s: torch.Tensor, emb_t: torch.Tensor) -> None:
        """Momentum update of the rows this process holds among the global batch ``idx`` (padded, rank order):
        ``m <- normalise(momentum * m + (1 - momentum) * v)``; other rows land in the spare row."""
        _, local = self.student._local(idx)
        for table, emb in ((self.student, emb_s), (self.teacher, emb_t)):
            new = table._rows[local] * self.momentum + emb.float() * (1 - self.momentum)
            table._rows[local] = new / new.norm(dim=1, keepdim=True).clamp(min=1e-12)
            table._seen[local] = True
            table._rows[-1] = 0.0  # the spare row took the other rows' writes: keep its scores finite

    def to_local(self, per_row: torch.Tensor, count: int) -> torch.Tensor:
        """This process's ``count`` samples of ``per_row`` (``[B]``, global batch) summed over processes, with
        autograd (collective)."""
        if not _distributed(self.world):
            return per_row[:count]
        offset = self.rank * self.step_rows
        return _AllReduce.apply(per_row)[offset:offset + count]

    # ------------------------------------------------------------------ checkpoints
    @property
    def tables(self) -> dict[str, ShardedTable]:
        """The two memories; a checkpoint saves each process's shard of them (``ShardedTable.save``)."""
        return {"student_memory": self.student, "teacher_memory": self.teacher}

    def z_state(self) -> Optional[list[float]]:
        return None if self.z is None else self.z.tolist()

    def load_z(self, z: Optional[list[float]]) -> None:
        self.z = None if z is None else torch.tensor(z, dtype=torch.float32, device=self.device)
