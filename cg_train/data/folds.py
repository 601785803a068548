"""K folds of the training set for out-of-sample predictions (cross-validated confident learning).

``stratified_folds(labels, K, seed)`` gives every sample one fold in 0..K-1 such that:

- each class is spread evenly: its count in any two folds differs by at most one;
- the folds' sizes differ by at most one;
- the same labels and seed give the same folds on any machine (NumPy's PCG64, a stream of its own).

Stratified by the *observed* label (what the run trains on, after corruption and ``--labels``), as
cleanlab's cross-validation (scikit-learn's StratifiedKFold on the given labels) does. Written here rather
than taken from StratifiedKFold so that a fold never moves when scikit-learn changes its shuffling: the
K runs of a fold sweep may run months apart.

A fold run (``--folds K --fold I``) trains on every sample outside fold I; the samples of fold I keep
their index and are only skipped by the training loader (like ``--exclude``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import NoiseConfig

FOLD_STREAM = 5


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """int64 [N]: the fold of every sample (see the module docstring)."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([seed, FOLD_STREAM])
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):  # classes in label order, each shuffled, dealt round-robin
        members = rng.permutation(np.flatnonzero(labels == label))
        folds[members] = (offset + np.arange(len(members))) % k
        offset += len(members)
    return folds


def check_fold_config(cfg: "NoiseConfig") -> None:
    """``--fold`` with ``--folds``, in range, and not mixed with another removal (one-line errors)."""
    if cfg.fold is not None and cfg.folds < 2:
        raise ConfigError(f"--fold (noise.fold)={cfg.fold} needs --folds K (K >= 2): how many folds to split into")
    if cfg.fold is not None and cfg.fold >= cfg.folds:
        raise ConfigError(f"--fold (noise.fold)={cfg.fold} must be in 0..{cfg.folds - 1} for --folds {cfg.folds}")
    if cfg.fold is not None and (cfg.exclude or cfg.remove_ratio > 0):
        raise ConfigError("--fold (noise.fold) leaves out one fold; it cannot be combined with --exclude or "
                          "--remove-ratio (run the folds on the data you want to cross-validate)")


def fold_assignment(cfg: "NoiseConfig", observed: np.ndarray, seed: int) -> Optional[np.ndarray]:
    """The folds of ``--folds K`` (None without)."""
    check_fold_config(cfg)
    if not cfg.folds:
        return None
    if cfg.folds > len(observed):
        raise ConfigError(f"--folds (noise.folds)={cfg.folds} is more than the {len(observed)} training samples")
    return stratified_folds(observed, cfg.folds, seed)
