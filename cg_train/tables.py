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

The collectives have a fixed size, ``step_rows`` (the most rows one process
passes per step: its share of the global batch) per process, padded with index
-1, and rows a process does not own are read from and written to one spare row
instead of being selected by a mask: no step waits for the device to tell the
host a count, so a GPU run never synchronises on a table.

Checkpoints write one shard file per process (``save``), never gathering the
table; a resume on another number of processes reads the rows it now owns
from the old shards (``load``). ``write_npy`` writes the whole table as one
``.npy`` for users, every process writing its own rows into a memory map.
With one process every call is local and nothing is communicated.

``count_updates=True`` also keeps how many times each row was written (int32 per
row, e.g. how many updates a p_smoothing row had); it travels with the rows through
``scatter``, checkpoints and ``write_updates_npy``.
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
#: ``(n, world, rank) -> (start, stop)``: the contiguous rows a process holds.
Bounds = Callable[[int, int, int], tuple[int, int]]


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
                 dtype: torch.dtype = torch.float32, step_rows: int = 0, count_updates: bool = False,
                 bounds: Bounds = shard_bounds):
        """``step_rows``: the most rows one process passes to one fetch/scatter (needed with > 1 process);
        ``count_updates``: also count the writes of each row (``updates``);
        ``bounds``: which rows each process holds (default: ``ceil(n / world)``-row blocks); the
        checkpoint records every process's rows, so a table saved with one layout loads into another."""
        self.n, self.k, self.rank, self.world, self.device, self.dtype = n, k, rank, world, device, dtype
        self.step_rows, self.bounds = step_rows, bounds
        self.start, self.stop = bounds(n, world, rank)
        held = self.stop - self.start
        # row ``held`` is the spare row: it takes the reads and writes of rows held elsewhere
        self._rows = torch.zeros(held + 1, k, dtype=dtype, device=device)
        self._seen = torch.zeros(held + 1, dtype=torch.bool, device=device)
        self.rows, self.seen = self._rows[:held], self._seen[:held]
        self._updates: Optional[torch.Tensor] = None
        self.updates: Optional[torch.Tensor] = None  # [held] int32 writes per row (count_updates)
        #: False after loading a checkpoint saved without counts (an older version): the counts are unknown
        self.updates_known = count_updates
        if count_updates:
            self._updates = torch.zeros(held + 1, dtype=torch.int32, device=device)
            self.updates = self._updates[:held]
        assert bounds is not shard_bounds or held <= -(-n // world), "a process holds more than its share"

    @property
    def held_rows(self) -> int:
        return self.rows.shape[0]

    def clear(self) -> None:
        self.rows.zero_()
        self.seen.zero_()
        if self.updates is not None:
            self.updates.zero_()
            self.updates_known = True

    # ------------------------------------------------------------------ collectives
    def _everyone(self, idx: torch.Tensor, values: Optional[torch.Tensor] = None
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor], int]:
        """Every process's ``idx`` (and ``values``), each padded to ``step_rows`` (index -1), in rank order,
        and the offset of this process's rows."""
        if not _distributed(self.world):
            return idx, values, 0
        if len(idx) > self.step_rows:
            raise ValueError(f"a sharded table was passed {len(idx)} rows in one step, more than its step_rows "
                             f"({self.step_rows})")

        def gather(t: torch.Tensor, fill: float) -> torch.Tensor:
            padded = torch.full((self.step_rows, *t.shape[1:]), fill, dtype=t.dtype, device=self.device)
            padded[:len(t)] = t
            parts = [torch.empty_like(padded) for _ in range(self.world)]
            dist.all_gather(parts, padded)
            return torch.cat(parts)

        all_idx = gather(idx.to(self.device, torch.int64), -1)
        all_values = gather(values, 0) if values is not None else None
        return all_idx, all_values, self.rank * self.step_rows

    def _local(self, all_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(owned by this process, local row: the spare row where not owned), both shaped like ``all_idx``."""
        own = (all_idx >= self.start) & (all_idx < self.stop)
        return own, torch.where(own, all_idx - self.start, torch.full_like(all_idx, self.held_rows))

    @torch.no_grad()
    def fetch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 rows ``[b, k]``, seen ``[b]``) of the samples ``idx`` (collective: every process calls)."""
        idx = idx.to(self.device, torch.int64)
        if not _distributed(self.world):
            return self.rows[idx - self.start].float(), self.seen[idx - self.start]
        all_idx, _, offset = self._everyone(idx)
        own, local = self._local(all_idx)
        buf = torch.cat([self._rows[local].float(), self._seen[local].float().unsqueeze(1)], 1)
        buf = torch.where(own.unsqueeze(1), buf, torch.zeros_like(buf))
        dist.all_reduce(buf)  # exactly one process owns each real row
        mine = buf[offset:offset + len(idx)]
        return mine[:, :self.k], mine[:, self.k] > 0

    @torch.no_grad()
    def scatter(self, idx: torch.Tensor, values: torch.Tensor, combine: Optional[Combine] = None) -> None:
        """Store ``values`` as the rows ``idx`` (collective), or ``combine(old, seen, values)`` when given.

        ``combine`` runs on the owning process, so a running average needs no fetch first.
        """
        all_idx, all_values, _ = self._everyone(idx.to(self.device, torch.int64),
                                                values.detach().float().to(self.device))
        _, local = self._local(all_idx)
        new = all_values
        if combine is not None:
            new = combine(self._rows[local].float(), self._seen[local], new)
        self._rows[local] = new.to(self.dtype)  # rows held elsewhere (and padding) land in the spare row
        self._seen[local] = True
        if self._updates is not None:  # a step names each real row once; repeats only hit the spare row
            self._updates[local] += 1

    def barrier(self) -> None:
        if _distributed(self.world):
            dist.barrier()

    # ------------------------------------------------------------------ files
    def write_npy(self, path: Path, is_main: bool, zero_unseen: bool = False) -> None:
        """The whole table as one float32 ``.npy`` (collective; each process writes its own rows).

        ``zero_unseen``: rows never written are written as zeros whatever they hold (a starting value)."""
        mine = self.rows.float().cpu().numpy()  # on CPU in float32: the table itself, not a copy
        if zero_unseen:  # a host copy, so no second copy of the shard on the device
            mine = mine.copy()
            mine[~self.seen.cpu().numpy()] = 0.0
        self._write_whole(path, (self.n, self.k), np.float32, mine, is_main)

    def write_updates_npy(self, path: Path, is_main: bool) -> None:
        """The writes of every row as one int32 ``[n]`` ``.npy`` (collective; ``count_updates`` tables)."""
        self._write_whole(path, (self.n,), np.int32, self.updates.cpu().numpy(), is_main)

    def _write_whole(self, path: Path, shape: tuple[int, ...], dtype: Any, mine: np.ndarray, is_main: bool) -> None:
        tmp = path.with_name(f".{path.name}.writing")
        if is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape).flush()
        self.barrier()
        if self.held_rows:
            out = np.load(tmp, mmap_mode="r+")
            out[self.start:self.stop] = mine
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
        parts = [(".rows.npy", self.rows), (".seen.npy", self.seen)]
        if self.updates is not None and self.updates_known:
            parts.append((".updates.npy", self.updates))
        for suffix, tensor in parts:
            with atomic_path(f"{stem}{suffix}") as tmp, open(tmp, "wb") as f:
                np.save(f, tensor.cpu().numpy())
        for old in folder.glob("gen*.npy"):
            gen, rank, world = _parse(old.name)
            if gen < generation - 1 and (rank == self.rank and world == self.world or is_main and world != self.world):
                old.unlink(missing_ok=True)
        return {"generation": generation, "world": self.world, "n": self.n, "k": self.k,
                "updates": len(parts) == 3,
                "bounds": [list(self.bounds(self.n, self.world, r)) for r in range(self.world)]}

    def load(self, folder: Path, state: dict[str, Any], what: str) -> None:
        """Read the rows this process owns from the shards a checkpoint names (any process count)."""
        if (state["n"], state["k"]) != (self.n, self.k):
            raise CgTrainError(f"--resume: the {what} table in the checkpoint is {state['n']} x {state['k']}, "
                               f"this run needs {self.n} x {self.k}")
        generation, world = int(state["generation"]), int(state["world"])
        with_updates = self.updates is not None and bool(state.get("updates"))
        if self.updates is not None:
            self.updates_known = with_updates  # a checkpoint of an older version has no counts
        saved_bounds = state.get("bounds") or [shard_bounds(self.n, world, r) for r in range(world)]
        for rank, (start, stop) in enumerate(saved_bounds):
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
            if with_updates:
                try:
                    updates = np.load(f"{stem}.updates.npy", mmap_mode="r")
                except OSError:
                    raise CgTrainError(f"--resume: the {what} shard {stem}.updates.npy of the checkpoint is "
                                       f"missing: resume with the output directory the checkpoint was written "
                                       f"in") from None
                self.updates[lo - self.start:hi - self.start] = torch.from_numpy(
                    np.array(updates[lo - start:hi - start])).to(self.device)


_SHARD = re.compile(r"gen(\d+)\.rank(\d+)-of-(\d+)\.")


def _parse(name: str) -> tuple[int, int, int]:
    match = _SHARD.match(name)
    return tuple(int(g) for g in match.groups()) if match else (1 << 62, -1, -1)  # type: ignore[return-value]
