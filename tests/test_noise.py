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


@pytest.mark.parametrize("noise_type", ["symmetric", "flip"])
@pytest.mark.parametrize("fraction", [0.2, 0.4, 0.77])
def test_seed002_noise_corrupts_exactly_the_ratio_and_never_keeps_the_class(noise_type: str, fraction: float) -> None:
    labels = np.arange(1003) % 10
    observed, resampled = corrupt_labels(labels, 10, fraction, noise_type, seed=1)
    assert resampled.sum() == (observed != labels).sum() == round(fraction * 1003)  # the whole rate is off-diagonal
    assert (observed[resampled] != labels[resampled]).all()
    if noise_type == "symmetric":  # every other class is drawn, about equally often
        offsets = (observed[resampled] - labels[resampled]) % 10
        assert set(offsets.tolist()) == set(range(1, 10))


def test_noise_types_say_which_seed_they_follow() -> None:
    from cg_train.noise import NOISES

    assert "seed 004" in NOISES.describe("uniform") and "seed 002" in NOISES.describe("symmetric")


def build_train(root, dataset: str, fraction: float, *extra: str):
    from cg_train.config import build_config
    from cg_train.data.bundle import build_data
    import torch

    cfg = build_config(overrides=[f"data.dir={root}", f"data.dataset={dataset}", f"noise.corrupt_fraction={fraction}",
                                  "noise.noise_type=symmetric", "data.workers=0", "data.batch_size=2", *extra])
    return build_data(cfg, 32, 32, 0, 1, torch.device("cpu"))


def test_unknown_true_labels_are_never_redrawn_through_the_bundle(tmp_path) -> None:
    from test_readers import clothing_tree, webvision_tree

    from cg_train.data.readers import DATASETS

    webvision_tree(tmp_path / "web")
    web = build_train(tmp_path / "web", "webvision", 1.0).train
    original = DATASETS.get("webvision")(str(tmp_path / "web"), "train")
    assert np.array_equal(web.observed_labels, original.observed_labels)  # nothing re-drawn: no true label known

    clothing_tree(tmp_path / "cl")
    data = build_train(tmp_path / "cl", "clothing1m", 1.0)
    # samples 2 and 3 have clean annotations (true 2 and 5): re-drawn away from the true class; the rest keep web labels
    assert data.resampled.tolist() == [False, False, True, True, False, False, False, False]
    assert data.train.observed_labels[2] != 2 and data.train.observed_labels[3] != 5
    keep = [0, 1, 4, 5, 6, 7]
    assert data.train.observed_labels[keep].tolist() == keep
