"""A run's training dynamics as NumPy arrays: what every noise detector reads.

Read from the run's files only: ``corruption.parquet`` (observed / true labels,
paths) and the per-sample path logs (``--paths`` training passes or
``--paths-eval`` passes after each epoch). Per sample and epoch: loss,
p(observed), p(true), the logit margin (AUM's) and whether the top-1 class is the
observed one; per sample, the predicted distribution averaged over epochs
(exact when the run logged ``--paths-topk`` >= classes, otherwise the unlogged
mass is spread evenly over the unlogged classes, as ``paths export-td`` does).
A sample missing from an epoch takes its neighbouring epoch's values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.parquet as pq

from cg_train.errors import CgTrainError
from cg_train.paths.export_td import epoch_rows, fill_missing, read_labels, resolve_source
from cg_train.paths.layout import META_NUM_CLASSES, META_TOPK
from cg_train.paths.merge import find_parts, read_epochs

UNKNOWN = -1
#: per-epoch columns, in the order of ``Dynamics.series``
SERIES = ("loss", "p_observed", "p_true", "margin", "correct", "p_other")
LOGGED = SERIES[:-1]  # p_other: the largest probability of a class other than the observed one (from the top-k)


@dataclass
class Dynamics:
    run_dir: Path
    source: str  # "train" (training passes) or "eval" (eval passes after each epoch)
    epochs: list[int]
    path: np.ndarray  # object [N]: file path or split[index]
    observed: np.ndarray  # int64 [N]: the label the run trained on
    true: np.ndarray  # int64 [N]: -1 where unknown
    removed: np.ndarray  # bool [N]: left out of training (nothing logged)
    series: np.ndarray  # float32 [N, T, len(SERIES)]
    probs: np.ndarray  # float32 [N, K]: predicted distribution averaged over epochs
    #: float64 [N, K]: K-fold out-of-sample predictions (``cg-analyze noise --oos``); None when not given
    oos_probs: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.observed)

    def column(self, name: str) -> np.ndarray:
        """``[N, T]`` array of one of :data:`SERIES`."""
        return self.series[:, :, SERIES.index(name)]

    @property
    def known(self) -> np.ndarray:
        return self.true != UNKNOWN

    @property
    def is_corrupt(self) -> np.ndarray:
        return self.known & (self.observed != self.true)

    @property
    def num_classes(self) -> int:
        return self.probs.shape[1]


def full_probs(rows, num_classes: int) -> np.ndarray:
    """``[R, K]`` per-row distribution from the logged top-k, p(observed) and the residual estimate."""
    dense = np.repeat(rows.residual[:, None], num_classes, axis=1)
    np.put_along_axis(dense, rows.classes, rows.probs, axis=1)
    dense[np.arange(len(dense)), rows.observed] = rows.p_observed
    return dense


@dataclass
class PathLog:
    """The per-sample path log a run's dynamics are read from."""

    source: str  # "train" or "eval"
    root: Path
    parts: list  # cg_train.paths.layout.Part, in epoch order (eval: the passes after a training epoch)
    num_classes: int
    k: int  # top-k logged per row


def path_log(run_dir: Path, source: str = "auto") -> PathLog:
    """The training passes (what AUM and forgetting events are defined on) when logged, else the eval passes."""
    source, root = resolve_source(Path(run_dir), source, prefer="train")
    parts = [p for p in find_parts(root) if source == "train" or p.epoch >= 1]
    if not parts:
        raise CgTrainError(f"{root} has no evaluation after a training epoch yet: train longer or use --source train")
    meta = pq.read_schema(parts[0].path).metadata
    return PathLog(source, root, parts, int(meta[META_NUM_CLASSES]), int(meta[META_TOPK]))


def load_dynamics(run_dir: Path, source: str = "auto") -> Dynamics:
    """Everything the detectors need from ``run_dir`` (a cg-train ``--output-dir`` with path logs)."""
    run_dir = Path(run_dir)
    record = read_labels(run_dir, columns=None)  # labels, paths and the removed column: one read
    log = path_log(run_dir, source)
    source, root, parts, num_classes, k = log.source, log.root, log.parts, log.num_classes, log.k
    n = len(record)
    columns = ["index", "observed_label"] + list(LOGGED) + [f"top{i}_{c}" for i in range(1, k + 1)
                                                           for c in ("class", "prob")]
    epochs, slices = [], []
    prob_sum, prob_count = np.zeros((n, num_classes), np.float32), np.zeros(n)  # float32: N x K can be large
    for epoch, table in read_epochs(parts, columns):
        rows = epoch_rows(table, k, num_classes)
        if rows.index.max(initial=-1) >= n:
            raise CgTrainError(f"{root} logs sample {rows.index.max()} but corruption.parquet has {n}: "
                               f"the log belongs to another run")
        block = np.full((n, len(SERIES)), np.nan, dtype=np.float32)
        block[rows.index, :len(LOGGED)] = np.stack([table.column(c).to_numpy().astype(np.float32) for c in LOGGED], 1)
        other = np.where(rows.classes == rows.observed[:, None], -1.0, rows.probs)
        block[rows.index, len(LOGGED)] = np.maximum(other.max(axis=1), rows.residual)
        slices.append(block)
        prob_sum[rows.index] += full_probs(rows, num_classes)
        prob_count[rows.index] += 1
        epochs.append(epoch)
    series = np.stack(slices, 1)
    fill_missing(series)
    probs = prob_sum / np.maximum(prob_count, 1)[:, None]
    removed = record["removed"].to_numpy(bool) if "removed" in record else np.zeros(n, bool)
    return Dynamics(run_dir, source, epochs, record["path"].to_numpy(object),
                    record["observed_label"].to_numpy(np.int64), record["true_label"].to_numpy(np.int64),
                    removed, series, probs)


def true_noise_rate(dyn: Dynamics) -> Optional[float]:
    """Fraction of corrupt samples among those with a known true label (None when none is known)."""
    known = dyn.known & ~dyn.removed
    return float(dyn.is_corrupt[known].mean()) if known.any() else None
