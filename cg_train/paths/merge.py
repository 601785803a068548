"""``cg-train paths merge``: one Parquet file from all parts, one epoch in memory at a time.

The merged file has real ``epoch`` and ``rank`` columns (int16) instead of
directory partitions, rows ordered by ``(epoch, step, rank)`` (training order:
global batch ``step`` is split over ranks in rank order), one row group per epoch.
Before writing, every epoch is checked to hold each sample index at most once
(for a log of mixed images, where ``cutmix_pick`` may show one sample in several
rows of a step: each step of a rank in one part only), so a merged file is a
faithful copy of a complete, duplicate-free log. The file
is written under a temporary name and renamed.
"""
from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CgTrainError
from ..io import atomic_path
from .layout import Part, is_mixed, list_parts


def find_parts(root: Path) -> list[Part]:
    parts = list_parts(root)
    if not parts:
        raise CgTrainError(f"no path logs under {root}: train with --paths (or --paths-eval for "
                           f"{root.parent / 'paths_eval'}) first, or pass the run's --output-dir")
    return parts


def read_epochs(parts: list[Part], columns: list[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
    """``(epoch, table)`` in epoch order; each table holds that epoch's rows of all ranks plus ``rank``."""
    for epoch, group in groupby(parts, key=lambda p: p.epoch):
        tables, steps = [], []
        for part in group:
            table = pq.read_table(part.path, columns=columns)
            tables.append(table.append_column("rank", pa.array(np.full(len(table), part.rank, np.int16))))
            if is_mixed(table.schema):
                steps.append(step_keys(part, table))
        table = pa.concat_tables(tables)
        if steps:  # mixed images: a sample may fill several rows of a step (cutmix_pick), but a step is in one part
            keys = np.concatenate(steps)
            twice = len(np.unique(keys)) != len(keys)
        else:
            indices = table.column("index").to_numpy()
            twice = len(np.unique(indices)) != len(indices)
        if twice:
            raise CgTrainError(f"epoch {epoch} of {parts[0].path.parents[2]} holds a sample twice: the log was "
                               f"not written by one cg-train run (or was copied over); re-run with a new "
                               f"--output-dir")
        yield epoch, table


def step_keys(part: Part, table: pa.Table) -> np.ndarray:
    """One key per (rank, step) that the part holds."""
    step = table.column("step") if "step" in table.column_names else \
        pq.read_table(part.path, columns=["step"]).column("step")
    return np.unique(step.to_numpy()).astype(np.int64) * 65536 + part.rank


def merge_paths(root: Path, out: Path) -> tuple[int, int]:
    """Merge the parts under ``root`` into the file ``out``; return (rows, epochs)."""
    parts = find_parts(root)
    schema = pq.read_schema(parts[0].path)
    rows = epochs = 0
    with atomic_path(out) as tmp:
        writer = None
        try:
            for epoch, table in read_epochs(parts):
                table = table.sort_by([("step", "ascending"), ("rank", "ascending")])  # stable: batch order kept
                table = table.add_column(0, "epoch", pa.array(np.full(len(table), epoch, np.int16)))
                rank = table.column("rank")
                table = table.drop_columns(["rank"]).add_column(2, "rank", rank)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema.with_metadata(schema.metadata),
                                              compression="zstd")
                writer.write_table(table, row_group_size=max(len(table), 1))
                rows, epochs = rows + len(table), epochs + 1
        finally:
            if writer is not None:
                writer.close()
    return rows, epochs
