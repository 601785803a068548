"""Seed 004's evaluation subsets of the training set: pristine, corrupt, train_sample.

A seeded permutation of the training set is walked once: ``pristine`` takes the
first ``sample_size`` samples whose label is intact, ``corrupt`` the first
``sample_size`` corrupt ones, and ``train_sample`` is the permutation's last
``sample_size`` samples (a mix of both). Each is capped at what exists.
"""
from __future__ import annotations

import numpy as np

SUBSET_STREAM = 4


def eval_subsets(is_corrupt: np.ndarray, label_known: np.ndarray, sample_size: int,
                 seed: int) -> dict[str, np.ndarray]:
    perm = np.random.default_rng([seed, SUBSET_STREAM]).permutation(len(is_corrupt))
    pristine = perm[~is_corrupt[perm] & label_known[perm]][:sample_size]
    corrupt = perm[is_corrupt[perm]][:sample_size]
    train_sample = perm[len(perm) - min(sample_size, len(perm)):]
    return {name: np.sort(idx).astype(np.int64) for name, idx in
            (("pristine", pristine), ("corrupt", corrupt), ("train_sample", train_sample))}
