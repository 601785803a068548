"""``cg-train paths export-td``: seed 002's ``training_dynamics.npz`` and ``metadata.pth`` from path logs.

What seed 002 (Learning from Training Dynamics, ``util.transfor_and_save``) writes,
and what this writes:

- ``td``: float16 ``[N samples, T epochs, C channels]`` — seed 002's README says
  ``[N, channels, epochs]`` but its code builds ``[N, epochs, channels]`` and its
  detector reads ``td[:, :, 0]`` as an LSTM sequence, so the code's order is kept.
  Channel 0 is the probability of the label the network was trained on (seed 002
  calls it "ground truth"; it is the assigned, possibly corrupted label); channels
  1..C-1 are the other classes ranked by their mean probability over all epochs.
  Seed 002 keeps every class (C = K); ``--top-n`` keeps C = N channels.
- ``labels``: int16 ``[N, C]``, the class of every channel.
- ``metadata.pth`` (and ``metadata.npz``): ``train_indices`` (row i of ``td`` is
  Manifest index i), ``valid_indices`` (empty), ``true_targets``,
  ``assigned_targets`` and ``label_flipped`` (observed != known true label).

Time axis: with ``--source eval`` (the ``--paths-eval`` pass) ``t`` is the model
after ``t + 1`` training epochs, as seed 002 records it; with ``--source train`` it
is training epoch ``t`` (training-mode predictions, weights changing within the
epoch).

Full probability vectors are only on disk when ``--paths-topk`` was at least the
number of classes; then the export is exact. Otherwise a class that is outside
a row's logged top-k is given the probability mass the row did not log, spread
evenly over the classes it did not log — an upper-bounded, mean-exact estimate
(the unlogged classes' average is exactly that). Channel 0 is always exact
(``p_observed`` is logged for every row). Ranking uses the same estimate; classes
never logged fill the last channels in class-id order. A sample missing from an
epoch (an unreadable image, or a last partial batch the trainer skipped) takes
its previous epoch's values (the next one's if the first is missing); a sample
never seen stays NaN.

Epochs are streamed: one epoch's rows, the output array and a sparse
accumulator of the logged (sample, class) pairs are in memory at once.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from ..errors import CgTrainError
from ..io import atomic_path
from .layout import EVAL_DIR, META_NUM_CLASSES, META_TOPK, TRAIN_DIR, is_mixed, label_type, list_parts
from .merge import find_parts, read_epochs

TD_FILE = "training_dynamics.npz"
METADATA_FILE = "metadata.pth"
METADATA_NPZ = "metadata.npz"
SOURCES = ("auto", "train", "eval")


@dataclass(frozen=True)
class TdExport:
    source: str
    epochs: list[int]
    samples: int
    channels: int
    exact: bool  # full probability vectors were logged
    filled: int  # (sample, epoch) entries copied from a neighbouring epoch
    never_seen: int  # samples without any row (NaN)


@dataclass(frozen=True)
class EpochRows:
    """One epoch of a path log, as NumPy arrays."""

    index: np.ndarray  # int64 [R]
    observed: np.ndarray  # int64 [R]
    p_observed: np.ndarray  # float64 [R]
    classes: np.ndarray  # int64 [R, k]
    probs: np.ndarray  # float64 [R, k]
    residual: np.ndarray  # float64 [R]: estimated probability of each class outside the logged ones


def epoch_rows(table: object, k: int, num_classes: int) -> EpochRows:
    get = table.column  # type: ignore[attr-defined]
    observed = get("observed_label").to_numpy().astype(np.int64)
    p_observed = get("p_observed").to_numpy().astype(np.float64)
    classes = np.stack([get(f"top{i}_class").to_numpy() for i in range(1, k + 1)], 1).astype(np.int64)
    probs = np.stack([get(f"top{i}_prob").to_numpy() for i in range(1, k + 1)], 1).astype(np.float64)
    observed_in_top = (classes == observed[:, None]).any(axis=1)
    logged_mass = probs.sum(axis=1) + np.where(observed_in_top, 0.0, p_observed)
    unlogged = num_classes - k - (~observed_in_top)
    residual = np.where(unlogged > 0, np.clip(1.0 - logged_mass, 0.0, None) / np.maximum(unlogged, 1), 0.0)
    return EpochRows(get("index").to_numpy().astype(np.int64), observed, p_observed, classes, probs, residual)


class SparseSums:
    """Sum of values per int64 key, kept as sorted unique keys (grows with distinct keys, not epochs)."""

    def __init__(self) -> None:
        self.keys = np.empty(0, np.int64)
        self.values = np.empty(0, np.float64)

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add ``values`` at ``keys`` (keys unique within one call)."""
        pos = np.searchsorted(self.keys, keys)
        hit = pos < len(self.keys)
        hit[hit] = self.keys[pos[hit]] == keys[hit]
        np.add.at(self.values, pos[hit], values[hit])
        keys, values = np.concatenate([self.keys, keys[~hit]]), np.concatenate([self.values, values[~hit]])
        order = np.argsort(keys, kind="stable")
        self.keys, self.values = keys[order], values[order]


def choose_channels(sums: SparseSums, observed: np.ndarray, num_classes: int, channels: int) -> np.ndarray:
    """``labels [N, C]``: the observed label, then the other classes by decreasing summed estimate."""
    n = len(observed)
    labels = np.full((n, channels), -1, dtype=np.int64)
    labels[:, 0] = observed
    sample, cls = sums.keys // num_classes, sums.keys % num_classes
    keep = sums.values > 0
    sample, cls, score = sample[keep], cls[keep], sums.values[keep]
    order = np.lexsort((cls, -score, sample))
    sample, cls = sample[order], cls[order]
    rank = np.arange(len(sample)) - np.searchsorted(sample, sample, side="left")
    take = rank < channels - 1
    labels[sample[take], 1 + rank[take]] = cls[take]
    # rows with fewer ranked classes: the lowest class ids not used yet
    need = (labels == -1).any(axis=1)
    if need.any():
        rows = np.flatnonzero(need)
        pool = np.broadcast_to(np.arange(min(num_classes, 2 * channels)), (len(rows), min(num_classes, 2 * channels)))
        used = (pool[:, :, None] == labels[rows][:, None, :]).any(axis=2)
        for j in range(1, channels):
            empty = labels[rows, j] == -1
            if not empty.any():
                continue
            first_free = np.argmax(~used, axis=1)
            pick = pool[np.arange(len(rows)), first_free]
            labels[rows[empty], j] = pick[empty]
            used[np.arange(len(rows))[empty], first_free[empty]] = True
    return labels


def fill_epoch(td: np.ndarray, t: int, rows: EpochRows, labels: np.ndarray, num_classes: int) -> None:
    """Write epoch ``t`` of every sample in ``rows`` into ``td [N, T, C]``."""
    keys = (rows.index[:, None] * num_classes + rows.classes).ravel()
    order = np.argsort(keys)
    keys, values = keys[order], rows.probs.ravel()[order]
    wanted = rows.index[:, None] * num_classes + labels[rows.index, 1:]
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = keys[pos] == wanted
    channels = np.where(found, values[pos], rows.residual[:, None])
    td[rows.index, t, 0] = rows.p_observed
    td[rows.index, t, 1:] = channels


def fill_missing(td: np.ndarray) -> tuple[int, int]:
    """Copy a neighbouring epoch into (sample, epoch) holes; return (filled, never seen)."""
    missing = np.isnan(td[:, :, 0])
    filled = int(missing.sum())
    for t in range(1, td.shape[1]):
        hole = np.isnan(td[:, t, 0])
        td[hole, t] = td[hole, t - 1]
    for t in range(td.shape[1] - 2, -1, -1):
        hole = np.isnan(td[:, t, 0])
        td[hole, t] = td[hole, t + 1]
    never = int(np.isnan(td[:, 0, 0]).sum())
    return filled - never * td.shape[1], never


def resolve_source(run_dir: Path, source: str, prefer: str = "eval") -> tuple[str, Path]:
    """``(source, directory)`` to read; ``auto`` takes ``prefer`` where it is there and readable per sample.

    Training logs of mixed images (``--da mixup`` etc. without ``--lw-mix``) are refused: a row there is two
    samples, so per-sample dynamics read from it would credit one sample with another's share.
    """
    if source not in SOURCES:
        raise CgTrainError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    train_parts = list_parts(run_dir / TRAIN_DIR)
    mixed = bool(train_parts) and is_mixed(pq.read_schema(train_parts[0].path))
    if source == "auto":
        usable = {"eval": any(p.epoch >= 1 for p in list_parts(run_dir / EVAL_DIR)),
                  "train": bool(train_parts) and not mixed}
        other = "train" if prefer == "eval" else "eval"
        source = prefer if usable[prefer] else other if usable[other] else "train"
    if source == "train" and mixed:
        raise CgTrainError(f"{run_dir / TRAIN_DIR} logs mixed images (each row is two samples with a weight): "
                           f"per-sample dynamics need unmixed rows; train with --paths-eval and read --source eval")
    return source, run_dir / (EVAL_DIR if source == "eval" else TRAIN_DIR)


LABEL_COLUMNS = ["index", "true_label", "observed_label", "is_corrupt"]


def read_labels(run_dir: Path, columns: Optional[list[str]] = LABEL_COLUMNS) -> pd.DataFrame:
    """The run's ``corruption.parquet`` (these ``columns``; None: all of them)."""
    path = run_dir / "corruption.parquet"
    if not path.is_file():
        raise CgTrainError(f"{path} does not exist: pass the --output-dir of a cg-train run")
    return pd.read_parquet(path, columns=columns)


def export_td(run_dir: Path, out_dir: Path, top_n: int, source: str = "auto") -> TdExport:
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    record = read_labels(run_dir)
    source, root = resolve_source(run_dir, source)
    parts = [p for p in find_parts(root) if source == "train" or p.epoch >= 1]  # eval epoch 0: untrained
    if not parts:
        raise CgTrainError(f"{root} has no evaluation after a training epoch yet: use --source train")
    meta = pq.read_schema(parts[0].path).metadata
    num_classes, k = int(meta[META_NUM_CLASSES]), int(meta[META_TOPK])
    if not 1 <= top_n <= num_classes:
        raise CgTrainError(f"--top-n {top_n} must be between 1 and the number of classes ({num_classes})")
    observed = record["observed_label"].to_numpy().astype(np.int64)
    n = len(observed)
    columns = ["index", "observed_label", "p_observed"] + [f"top{i}_{c}" for i in range(1, k + 1)
                                                           for c in ("class", "prob")]

    sums = SparseSums()  # pass 1: rank the classes of every sample
    epochs = []
    for epoch, table in read_epochs(parts, columns):
        rows = epoch_rows(table, k, num_classes)
        if rows.index.max(initial=-1) >= n:
            raise CgTrainError(f"{root} logs sample {rows.index.max()} but corruption.parquet has {n}: "
                               f"the log belongs to another run")
        other = rows.classes != rows.observed[:, None]
        sums.add((rows.index[:, None] * num_classes + rows.classes)[other],
                 (rows.probs - rows.residual[:, None])[other])
        epochs.append(epoch)
    labels = choose_channels(sums, observed, num_classes, top_n)
    del sums

    td = np.full((n, len(epochs), top_n), np.nan, dtype=np.float16)  # pass 2: fill the channels
    for t, (epoch, table) in enumerate(read_epochs(parts, columns)):
        fill_epoch(td, t, epoch_rows(table, k, num_classes), labels, num_classes)
    filled, never = fill_missing(td)

    write_td(out_dir, td, labels.astype(label_type(num_classes).to_pandas_dtype()))
    write_metadata(out_dir, record, source, epochs)
    return TdExport(source, epochs, n, top_n, k >= num_classes, filled, never)


def write_td(out_dir: Path, td: np.ndarray, labels: np.ndarray) -> None:
    with atomic_path(out_dir / TD_FILE) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, td=td, labels=labels)


def write_metadata(out_dir: Path, record: pd.DataFrame, source: str, epochs: list[int]) -> None:
    true = record["true_label"].to_numpy().astype(np.int64)
    arrays = {"train_indices": record["index"].to_numpy().astype(np.int64),
              "valid_indices": np.empty(0, np.int64),
              "true_targets": true,
              "assigned_targets": record["observed_label"].to_numpy().astype(np.int64),
              "label_flipped": record["is_corrupt"].to_numpy().astype(bool)}
    with atomic_path(out_dir / METADATA_FILE) as tmp:
        torch.save(OrderedDict((name, torch.from_numpy(a)) for name, a in arrays.items()), tmp)
    with atomic_path(out_dir / METADATA_NPZ) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays, epochs=np.asarray(epochs, np.int64), source=np.asarray(source))
