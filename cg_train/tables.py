"""Per-sample tables ``[N, K]`` sharded by sample index across processes.

Seed 000's p_smoothing table and seed 003's learned labels are one row per
training sample: 1.28M x 1000 values on ImageNet (5 GB in float32). Process
``r`` of ``W`` holds only the contiguous rows ``shard_bounds(N, W, r)``
(``ceil(N / W)`` rows at most), so memory per process is ``N * K / W`` values
plus one flag per row. A training step touches rows held anywhere:

* :meth:`ShardedTable.fetch` returns the rows of this process's batch (one
  all-reduce of ``[global batch, K + 1]`` values);
* :meth:`ShardedTable.scatter` sends new values to the rows' owners (one
  all-gather of the same size), optionally combined with the old row there.

Checkpoints write one shard file per process (``save``), never gathering the
table; a resume on another number of processes reads the rows it now owns
from the old shards (``load``). ``write_npy`` writes the whole table as one
``.npy`` for users, every process writing its own rows into a memory map.
With one process every call is local and nothing is communicated.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist

from .errors import CgTrainError
from .io import atomic_path

Combine = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def shard_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` held by ``rank``: contiguous blocks of ``ceil(n / world)`` rows."""
    chunk = -(-n // world)
    start = min(rank * chunk, n)
    return start, min(start + chunk, n)


def _distributed(world: int) -> bool:
    return world > 1 and dist.is_available() and dist.is_initialized()


class ShardedTable:
    """This process's share of an ``[n, k]`` per-sample table, with a 'seen' flag per row."""

    def __init__(self, n: int, k: int, rank: int, world: int, device: torch.device,
                 dtype: torch.dtype = torch.float32):
        self.n, self.k, self.rank, self.world, self.device, self.dtype = n, k, rank, world, device, dtype
        self.start, self.stop = shard_bounds(n, world, rank)
        self.rows = torch.zeros(self.stop - self.start, k, dtype=dtype, device=device)
        self.seen = torch.zeros(self.stop - self.start, dtype=torch.bool, device=device)
        assert self.rows.shape[0] <= -(-n // world), "a process holds more than its share"

    @property
    def held_rows(self) -> int:
        return self.rows.shape[0]

    def clear(self) -> None:
        self.rows.zero_()
        self.seen.zero_()

    # ------------------------------------------------------------------ collectives
    def _everyone(self, idx: torch.Tensor, values: Optional[torch.Tensor] = None
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor], int]:
        """Every process's ``idx`` (and ``values``) concatenated in rank order, and this process's offset."""
        if not _distributed(self.world):
            return idx, values, 0
        count = torch.tensor([len(idx)], dtype=torch.int64, device=self.device)
        counts = [torch.zeros_like(count) for _ in range(self.world)]
        dist.all_gather(counts, count)
        sizes = [int(c.item()) for c in counts]
        most = max(sizes)

        def gather(t: torch.Tensor, fill: float) -> torch.Tensor:
            padded = torch.full((most, *t.shape[1:]), fill, dtype=t.dtype, device=self.device)
            padded[:len(t)] = t
            parts = [torch.empty_like(padded) for _ in range(self.world)]
            dist.all_gather(parts, padded)
            return torch.cat([part[:size] for part, size in zip(parts, sizes)])

        all_idx = gather(idx.to(self.device, torch.int64), -1)
        all_values = gather(values, 0) if values is not None else None
        return all_idx, all_values, sum(sizes[:self.rank])

    def _owned(self, all_idx: torch.Tensor) -> torch.Tensor:
        return (all_idx >= self.start) & (all_idx < self.stop)

    @torch.no_grad()
    def fetch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 rows ``[b, k]``, seen ``[b]``) of the samples ``idx`` (collective: every process calls)."""
        idx = idx.to(self.device, torch.int64)
        if not _distributed(self.world):
            return self.rows[idx - self.start].float(), self.seen[idx - self.start]
        all_idx, _, offset = self._everyone(idx)
        own = self._owned(all_idx)
        local = all_idx[own] - self.start
        buf = torch.zeros(len(all_idx), self.k + 1, dtype=torch.float32, device=self.device)
        buf[own, :self.k] = self.rows[local].float()
        buf[own, self.k] = self.seen[local].float()
        dist.all_reduce(buf)
        mine = buf[offset:offset + len(idx)]
        return mine[:, :self.k], mine[:, self.k] > 0

    @torch.no_grad()
    def scatter(self, idx: torch.Tensor, values: torch.Tensor, combine: Optional[Combine] = None) -> None:
        """Store ``values`` as the rows ``idx`` (collective), or ``combine(old, seen, values)`` when given.

        ``combine`` runs on the owning process, so a running average needs no fetch first.
        """
        all_idx, all_values, _ = self._everyone(idx.to(self.device, torch.int64),
                                                values.detach().float().to(self.device))
        own = self._owned(all_idx)
        local = all_idx[own] - self.start
        new = all_values[own]
        if combine is not None:
            new = combine(self.rows[local].float(), self.seen[local], new)
        self.rows[local] = new.to(self.dtype)
        self.seen[local] = True

    def barrier(self) -> None:
        if _distributed(self.world):
            dist.barrier()

    # ------------------------------------------------------------------ files
    def write_npy(self, path: Path, is_main: bool) -> None:
        """The whole table as one float32 ``.npy`` (collective; each process writes its own rows)."""
        tmp = path.with_name(f".{path.name}.writing")
        if is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n, self.k)).flush()
        self.barrier()
        if self.held_rows:
            out = np.load(tmp, mmap_mode="r+")
            out[self.start:self.stop] = self.rows.float().cpu().numpy()
            out.flush()
            del out
        self.barrier()
        if is_main:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        self.barrier()

    def load_npy(self, path: Path, what: str) -> None:
        """Take this process's rows of a whole-table ``.npy`` (e.g. a teacher's p_smoothing table)."""
        try:
            table = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise CgTrainError(f"{what}: {path} is not a readable .npy table ({exc})") from None
        if table.shape != (self.n, self.k):
            raise CgTrainError(f"{what}: {path} holds a table of shape {table.shape}, but this run has "
                               f"{self.n} training samples of {self.k} classes: use the table of a run on "
                               f"the same data")
        rows = torch.from_numpy(np.array(table[self.start:self.stop], dtype=np.float32))
        self.rows.copy_(rows.to(self.dtype))
        self.seen.copy_(self.rows.abs().sum(1) > 0)

    def save(self, folder: Path, generation: int, is_main: bool) -> dict[str, Any]:
        """Write this process's shard for checkpoint ``generation``; drop shards two generations old."""
        stem = folder / f"gen{generation:06d}.rank{self.rank:05d}-of-{self.world:05d}"
        for suffix, tensor in ((".rows.npy", self.rows), (".seen.npy", self.seen)):
            with atomic_path(f"{stem}{suffix}") as tmp, open(tmp, "wb") as f:
                np.save(f, tensor.cpu().numpy())
        for old in folder.glob("gen*.npy"):
            gen, rank, world = _parse(old.name)
            if gen < generation - 1 and (rank == self.rank and world == self.world or is_main and world != self.world):
                old.unlink(missing_ok=True)
        return {"generation": generation, "world": self.world, "n": self.n, "k": self.k}

    def load(self, folder: Path, state: dict[str, Any], what: str) -> None:
        """Read the rows this process owns from the shards a checkpoint names (any process count)."""
        if (state["n"], state["k"]) != (self.n, self.k):
            raise CgTrainError(f"--resume: the {what} table in the checkpoint is {state['n']} x {state['k']}, "
                               f"this run needs {self.n} x {self.k}")
        generation, world = int(state["generation"]), int(state["world"])
        for rank in range(world):
            start, stop = shard_bounds(self.n, world, rank)
            lo, hi = max(start, self.start), min(stop, self.stop)
            if lo >= hi:
                continue
            stem = folder / f"gen{generation:06d}.rank{rank:05d}-of-{world:05d}"
            try:
                rows = np.load(f"{stem}.rows.npy", mmap_mode="r")
                seen = np.load(f"{stem}.seen.npy", mmap_mode="r")
            except OSError:
                raise CgTrainError(f"--resume: the {what} shard {stem}.rows.npy of the checkpoint is missing: "
                                   f"resume with the output directory the checkpoint was written in") from None
            self.rows[lo - self.start:hi - self.start] = torch.from_numpy(
                np.array(rows[lo - start:hi - start])).to(self.device, self.dtype)
            self.seen[lo - self.start:hi - self.start] = torch.from_numpy(
                np.array(seen[lo - start:hi - start])).to(self.device)


_SHARD = re.compile(r"gen(\d+)\.rank(\d+)-of-(\d+)\.")


def _parse(name: str) -> tuple[int, int, int]:
    match = _SHARD.match(name)
    return tuple(int(g) for g in match.groups()) if match else (1 << 62, -1, -1)  # type: ignore[return-value]
