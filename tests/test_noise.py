"""Label corruption and seed 004's evaluation subsets (pure functions, no model)."""
from __future__ import annotations

import numpy as np
import pytest

from cg_train.data.subsets import eval_subsets
from cg_train.noise import corrupt_labels


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.77, 1.0])
def test_exact_number_resampled(fraction: float) -> None:
    labels = np.arange(1001) % 10
    observed, resampled = corrupt_labels(labels, 10, fraction, "uniform", seed=3)
    assert resampled.sum() == round(fraction * 1001)
    assert np.array_equal(observed[~resampled], labels[~resampled])  # untouched samples keep their label


def test_uniform_draws_every_class_including_the_true_one() -> None:
    labels = np.arange(20000) % 10
    observed, resampled = corrupt_labels(labels, 10, 0.5, "uniform", seed=0)
    new = observed[resampled]
    counts = np.bincount(new, minlength=10)
    assert counts.min() > 800  # ~1000 each
    kept = (new == labels[resampled]).mean()
    assert 0.08 < kept < 0.12  # about 1/K re-drawn labels equal the true one (seed 004 semantics)


def test_flip_noise_changes_every_chosen_label() -> None:
    labels = np.arange(100) % 7
    observed, resampled = corrupt_labels(labels, 7, 0.3, "flip", seed=0)
    assert np.array_equal(observed[resampled], (labels[resampled] + 1) % 7)
    assert (observed != labels).sum() == 30


def test_same_seed_same_labels_other_seed_other_labels() -> None:
    labels = np.arange(5000) % 100
    a = corrupt_labels(labels, 100, 0.4, "uniform", seed=11)[0]
    b = corrupt_labels(labels, 100, 0.4, "uniform", seed=11)[0]
    c = corrupt_labels(labels, 100, 0.4, "uniform", seed=12)[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_unknown_labels_are_never_corrupted() -> None:
    labels = np.array([-1, 0, 1, -1, 2, 3, -1, 4] * 10)
    observed, resampled = corrupt_labels(labels, 5, 1.0, "uniform", seed=0)
    assert not resampled[labels == -1].any() and (observed[labels == -1] == -1).all()
    assert resampled.sum() == (labels != -1).sum()


def test_eval_subsets_follow_seed_004() -> None:
    rng = np.random.default_rng(0)
    corrupt = rng.random(1000) < 0.4
    known = np.ones(1000, dtype=bool)
    subsets = eval_subsets(corrupt, known, sample_size=100, seed=5)
    assert len(subsets["pristine"]) == len(subsets["corrupt"]) == len(subsets["train_sample"]) == 100
    assert not corrupt[subsets["pristine"]].any() and corrupt[subsets["corrupt"]].all()
    # capped at what exists, and the same seed picks the same samples
    big = eval_subsets(corrupt, known, sample_size=5000, seed=5)
    assert len(big["corrupt"]) == corrupt.sum() and len(big["train_sample"]) == 1000
    assert all(np.array_equal(a, b) for a, b in zip(subsets.values(), eval_subsets(corrupt, known, 100, 5).values()))
    assert eval_subsets(np.zeros(10, bool), np.ones(10, bool), 0, 0)["train_sample"].size == 0
