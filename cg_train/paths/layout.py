"""The on-disk format of the path logs: hive-partitioned Parquet parts and their schema.

::

    OUTPUT_DIR/paths/epoch=E/rank=R/part-SSSSSS.parquet       training steps (SSSSSS: first step in the part)
    OUTPUT_DIR/paths_eval/epoch=E/rank=R/part-BBBBBB.parquet  eval-mode passes (BBBBBB: first batch)

``epoch`` and ``rank`` live only in the directory names (hive partitions), so
``pyarrow.dataset``, ``pandas.read_parquet(dir)`` and duckdb's
``read_parquet('paths/**/*.parquet', hive_partitioning=true)`` read a folder as
one table. Parts are written under a dot-prefixed temporary name and renamed,
so readers (which skip dot files) never see a half-written part.

A run whose training images are mixed (``--da mixup``/``cutmix``/``cutmix_pick``
without ``--lw-mix``) writes ``paths/`` with four more columns after ``correct``
(:func:`path_schema` with ``mixed``; schema metadata ``cg_train.mixed = 1``): each
row is the image made of ``index`` (weight ``mix_weight``) and ``mix_partner``
(weight ``1 - mix_weight``, observed label ``partner_label``; -1 and weight 1 for
a row left unmixed); ``p_partner`` is the probability of ``partner_label``. Under
``cutmix_pick`` a sample can be the first source of several rows of one step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from ..sample_stats import HostStats

TRAIN_DIR = "paths"
EVAL_DIR = "paths_eval"

PART_RE = re.compile(r"^part-(\d+)\.parquet$")
META_NUM_CLASSES = b"cg_train.num_classes"
META_TOPK = b"cg_train.topk"
META_MIXED = b"cg_train.mixed"


def label_type(num_classes: int) -> pa.DataType:
    return pa.int16() if num_classes <= np.iinfo(np.int16).max else pa.int32()


def path_schema(num_classes: int, k: int, mixed: bool = False) -> pa.Schema:
    """Columns of one part (epoch and rank come from the directories); ``mixed``: rows are mixed images."""
    labels = label_type(num_classes)
    fields = [("step", pa.int32()), ("index", pa.int32()), ("observed_label", labels), ("true_label", labels),
              ("loss", pa.float32()), ("p_observed", pa.float32()), ("p_true", pa.float32()),
              ("margin", pa.float32()), ("correct", pa.bool_())]
    if mixed:
        fields += [("mix_partner", pa.int32()), ("partner_label", labels), ("mix_weight", pa.float32()),
                   ("p_partner", pa.float32())]
    for i in range(1, k + 1):
        fields += [(f"top{i}_class", labels), (f"top{i}_prob", pa.float16())]
    meta = {META_NUM_CLASSES: str(num_classes).encode(), META_TOPK: str(k).encode()}
    if mixed:
        meta[META_MIXED] = b"1"
    return pa.schema(fields, metadata=meta)


def is_mixed(schema: pa.Schema) -> bool:
    """True for a log of mixed training images (see the module docstring)."""
    return (schema.metadata or {}).get(META_MIXED) == b"1"


def to_table(steps: np.ndarray, stats: HostStats, schema: pa.Schema) -> pa.Table:
    labels = schema.field("observed_label").type.to_pandas_dtype()
    top_classes = stats.top_classes.astype(labels)
    top_probs = stats.top_probs.astype(np.float16)
    columns = [steps, stats.index, stats.observed.astype(labels), stats.true.astype(labels), stats.loss,
               stats.p_observed, stats.p_true, stats.margin, stats.correct]
    if stats.mixed:
        columns += [stats.mix_partner, stats.partner_label.astype(labels), stats.mix_weight, stats.p_partner]
    for j in range(len(top_probs)):
        columns += [top_classes[j], top_probs[j]]
    return pa.Table.from_arrays([pa.array(c) for c in columns], schema=schema)


#: Parquet options of every part: zstd; no dictionaries (values are nearly all distinct and trying costs time);
#: float32 columns byte-stream-split (zstd compresses them better); min/max statistics only where a filter can
#: use them (step ranges, index ranges).
WRITE_OPTIONS = {"compression": "zstd", "compression_level": 1, "use_dictionary": False,
                 "use_byte_stream_split": ["loss", "p_observed", "p_true", "margin"],
                 "write_statistics": ["step", "index"]}


def part_dir(root: Path, epoch: int, rank: int) -> Path:
    return root / f"epoch={epoch}" / f"rank={rank}"


def part_name(first_step: int) -> str:
    return f"part-{first_step:06d}.parquet"


@dataclass(frozen=True)
class Part:
    epoch: int
    rank: int
    first_step: int
    path: Path


def _partition(name: str, key: str) -> int | None:
    prefix = f"{key}="
    if name.startswith(prefix) and name[len(prefix):].isdigit():
        return int(name[len(prefix):])
    return None


def rank_dirs(root: Path) -> Iterator[tuple[int, int, Path]]:
    """``(epoch, rank, directory)`` of every partition under ``root``, in epoch then rank order."""
    if not root.is_dir():
        return
    epochs = sorted((e, d) for d in root.iterdir() if d.is_dir() and (e := _partition(d.name, "epoch")) is not None)
    for epoch, epoch_dir in epochs:
        ranks = sorted((r, d) for d in epoch_dir.iterdir()
                       if d.is_dir() and (r := _partition(d.name, "rank")) is not None)
        for rank, rank_dir in ranks:
            yield epoch, rank, rank_dir


def list_parts(root: Path) -> list[Part]:
    """Every committed part under ``root`` (temporary files are not parts), in (epoch, rank, step) order."""
    parts = []
    for epoch, rank, rank_dir in rank_dirs(root):
        for f in rank_dir.iterdir():
            match = PART_RE.match(f.name)
            if match:
                parts.append(Part(epoch, rank, int(match.group(1)), f))
    return sorted(parts, key=lambda p: (p.epoch, p.rank, p.first_step))
