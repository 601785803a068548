"""A background thread per rank that turns per-batch statistics into Parquet parts.

The training thread only queues tensors (already copied to the host
asynchronously on CUDA, with an event to wait on) and goes on; the writer
thread waits for the copy, buffers rows and writes a part every
``rows_per_part`` rows, at every epoch change and on :meth:`PartWriter.flush`.
The queue is bounded, so a writer that falls behind slows training down instead
of growing memory. Each part is written to a temporary name, fsynced and renamed
(:func:`cg_train.io.atomic_path`): a crash loses the buffered rows, never a
written part, and never leaves a partial file under a part name.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..errors import CgTrainError
from ..io import atomic_path
from ..sample_stats import HostStats, PackedStats, concat
from .layout import WRITE_OPTIONS, part_dir, part_name, to_table

#: Bounded queue length (batches): enough to ride out one part write without stalling training.
MAX_QUEUED_BATCHES = 256

_FLUSH = object()
_STOP = object()


class PartWriter:
    """Writes ``root/epoch=E/rank=R/part-S.parquet`` for one rank from a background thread."""

    def __init__(self, root: Path, rank: int, schema: pa.Schema, rows_per_part: int):
        self.root, self.rank, self.schema, self.rows_per_part = Path(root), rank, schema, rows_per_part
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_QUEUED_BATCHES)
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._epoch: Optional[int] = None
        self._steps: list[np.ndarray] = []
        self._stats: list[HostStats] = []
        self.buffered_rows = 0  # rows waiting for the next part (read by tests and the benchmark)
        self.rows_written = 0
        self.parts_written = 0

    # ------------------------------------------------------------------ training thread
    def put(self, epoch: int, step: int, stats: PackedStats) -> None:
        """Queue one batch; on CUDA the device-to-host copy is started here and not waited for."""
        self._raise_if_failed()
        event = None
        if stats.floats.is_cuda:
            # non_blocking device-to-host copies land in pinned memory from torch's caching host allocator
            stats = PackedStats(stats.floats.to("cpu", non_blocking=True), stats.ints.to("cpu", non_blocking=True),
                                stats.mixed)
            event = torch.cuda.Event()
            event.record()
        self._start()
        self._queue.put((epoch, step, stats, event))

    def flush(self) -> None:
        """Block until every queued row is in a part on disk."""
        if self._thread is None:
            return
        self._queue.put(_FLUSH)
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        """Flush and stop the thread (it is restarted by the next :meth:`put`)."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None
        self._raise_if_failed()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"cg-train-paths-{self.root.name}-{self.rank}",
                                            daemon=True)
            self._thread.start()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error = self._error
            message = str(error) if isinstance(error, CgTrainError) else f"{type(error).__name__}: {error}"
            raise CgTrainError(f"writing path logs to {self.root} failed: {message}")

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP or item is _FLUSH:
                    self._write_part()
                else:
                    self._add(*item)
            except BaseException as exc:  # reported to the training thread by the next put/flush
                self._error = self._error or exc
                self._drop_buffer()
            finally:
                self._queue.task_done()
            if item is _STOP:
                return

    def _add(self, epoch: int, step: int, stats: PackedStats, event: Any) -> None:
        if self._error is not None:
            return
        if event is not None:
            event.synchronize()
        if self._epoch is not None and epoch != self._epoch:
            self._write_part()
        self._epoch = epoch
        host = HostStats(stats.floats.numpy(), stats.ints.numpy(), stats.mixed)
        self._steps.append(np.full(host.rows, step, dtype=np.int32))
        self._stats.append(host)
        self.buffered_rows += host.rows
        if self.buffered_rows >= self.rows_per_part:
            self._write_part()

    def _write_part(self) -> None:
        if not self._stats or self._error is not None:
            return
        steps = np.concatenate(self._steps)
        table = to_table(steps, concat(self._stats, k=0), self.schema)
        with atomic_path(part_dir(self.root, self._epoch, self.rank) / part_name(int(steps[0]))) as tmp:
            pq.write_table(table, tmp, **WRITE_OPTIONS)
        self.rows_written += len(steps)
        self.parts_written += 1
        self._drop_buffer()

    def _drop_buffer(self) -> None:
        self._steps, self._stats, self.buffered_rows = [], [], 0
