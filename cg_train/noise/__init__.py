"""Controlled label corruption: seeded, exact in count, recorded per sample.

``corrupt_labels`` re-draws the label of exactly ``round(f * N)`` training
samples (chosen by a permutation seeded with ``seed``; samples whose clean label
is unknown are never chosen). How the new label is drawn is a registered noise
type:

- ``uniform`` (seed 004): any class uniformly, **the true class included**, so
  about 1/K of the re-drawn samples keep their true label. As in seed 004, a
  sample counts as *corrupt* when its observed label differs from the true one;
  ``resampled`` records which samples were re-drawn.
- ``symmetric`` (seed 002, "uniform" in its scripts): any class *other than* the
  true one, uniformly, so the whole rate moves off the diagonal: exactly
  ``round(f * N)`` samples are corrupt and none keeps its true class.
- ``flip``: the true class + 1 (mod K), a class-dependent (asymmetric) noise in
  which every re-drawn sample is corrupt (seed 002's "flip").
- ``instance`` (``instance.py``): instance-dependent noise, the class a trained model
  confuses the image with (``cg-train confusions``); it may also choose *which* samples
  (``--instance-noise-pick confusable``: the most confusable ones).

The new label is drawn from the sample's *true* label, which is why samples whose
true label is unknown (WebVision train, unannotated Clothing1M) are never chosen.

A noise type is one registered function of a :class:`NoiseContext` that returns the
chosen samples and their new labels. Class-conditional types only say how a true label
becomes a new one (``(labels, num_classes, rng) -> labels``) and take the seeded choice
through :func:`class_conditional`; ``corrupt_labels`` checks every type's choice (exactly
``count`` samples, all with a known true label), so no type can break those rules.

NumPy's PCG64 stream makes the result identical on every machine and for any
number of processes (each process computes it; nothing is broadcast).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from ..data.manifest import UNKNOWN_LABEL, Manifest
from ..io import atomic_path
from ..registry import Registry

NOISE_STREAM = 3


@dataclass(frozen=True)
class NoiseContext:
    """What a noise type may look at: the whole training set (instance-dependent noise needs each sample's
    index, not only its true label), how many samples to corrupt, the noise stream and the run's options."""

    true_labels: np.ndarray  # int64 [N] of the training set, -1 = unknown
    num_classes: int
    count: int  # exactly this many samples are chosen: round(f * number of samples with a known true label)
    rng: np.random.Generator  # the noise stream (seed, NOISE_STREAM)
    options: Any = None  # the run's NoiseConfig (e.g. --noise-confusions); None outside a run

    @property
    def candidates(self) -> np.ndarray:
        """Indices of the samples that may be chosen: those whose true label is known."""
        return np.flatnonzero(self.true_labels != UNKNOWN_LABEL)

    def seeded_choice(self) -> np.ndarray:
        """The first ``count`` candidates of a seeded permutation, sorted: every type's default choice."""
        return np.sort(self.rng.permutation(self.candidates)[:self.count])


#: A class-conditional draw: the true labels of the chosen samples -> their new labels.
NoiseFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
#: A noise type: -> (chosen indices, sorted; their new labels).
SampleNoise = Callable[[NoiseContext], tuple[np.ndarray, np.ndarray]]
NOISES: Registry[SampleNoise] = Registry("noise type", "--noise-type (noise.noise_type)")


def class_conditional(draw: NoiseFn) -> SampleNoise:
    """A noise type whose new label depends on the true label only: the seeded choice, then ``draw``."""
    @functools.wraps(draw)
    def noise(ctx: NoiseContext) -> tuple[np.ndarray, np.ndarray]:
        chosen = ctx.seeded_choice()
        return chosen, draw(ctx.true_labels[chosen], ctx.num_classes, ctx.rng)

    return noise


@NOISES.register("uniform", help="a uniformly random class, possibly the true one (seed 004)")
@class_conditional
def uniform_noise(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, num_classes, size=len(labels), dtype=np.int64)


@NOISES.register("symmetric", help="a uniformly random class other than the true one: every re-drawn sample "
                "is corrupt (seed 002)")
@class_conditional
def symmetric_noise(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    if num_classes < 2:
        raise ValueError("symmetric noise needs at least 2 classes")
    return (labels + rng.integers(1, num_classes, size=len(labels), dtype=np.int64)) % num_classes


@NOISES.register("flip", help="true class + 1 (mod K): class-flip (asymmetric) noise (seed 002's flip)")
@class_conditional
def flip_noise(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    return (labels + 1) % num_classes


def corrupt_labels(labels: np.ndarray, num_classes: int, fraction: float, noise_type: str,
                   seed: int, options: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(observed_labels, resampled_mask)`` for the true ``labels`` (int64, -1 = unknown, never chosen).

    ``options``: the run's NoiseConfig, for types that need more than the labels (``instance``)."""
    labels = np.asarray(labels, dtype=np.int64)
    noise = NOISES.get(noise_type)
    ctx = NoiseContext(labels, num_classes, int(round(fraction * int((labels != UNKNOWN_LABEL).sum()))),
                       np.random.default_rng([seed, NOISE_STREAM]), options)
    chosen, new_labels = noise(ctx)
    chosen = np.asarray(chosen, dtype=np.int64)
    if len(np.unique(chosen)) != ctx.count or len(chosen) != ctx.count or (labels[chosen] == UNKNOWN_LABEL).any():
        raise RuntimeError(f"noise type {noise_type!r} chose {len(chosen)} samples, not {ctx.count} distinct ones "
                           f"with a known true label")
    observed = labels.copy()
    observed[chosen] = new_labels
    resampled = np.zeros(len(labels), dtype=bool)
    resampled[chosen] = True
    return observed, resampled


def is_corrupt(manifest: Manifest) -> np.ndarray:
    """Samples whose observed label differs from a known true label."""
    return (manifest.observed_labels != manifest.true_labels) & (manifest.true_labels != UNKNOWN_LABEL)


def write_corruption_record(path: str, manifest: Manifest, resampled: np.ndarray,
                            subsets: dict[str, np.ndarray], removed: Optional[np.ndarray] = None,
                            columns: Optional[dict[str, np.ndarray]] = None) -> None:
    """``corruption.parquet``: one row per training sample, reloadable by analysis with pandas;
    ``removed`` marks the samples left out of training (remove-and-retrain, a held-out fold); ``columns``
    are more per-sample columns (``fold``; ``label_before_debugging`` and ``relabelled`` of ``--labels``).
    ``observed_label`` is always the label the run trains on."""
    n = len(manifest)
    table = pd.DataFrame({
        "index": np.arange(n, dtype=np.int64),
        "path": [manifest.source(i) for i in range(n)] if manifest.files is None else manifest.files,
        "true_label": manifest.true_labels,
        "observed_label": manifest.observed_labels,
        "is_corrupt": is_corrupt(manifest),
        "resampled": resampled,
        "removed": np.zeros(n, dtype=bool) if removed is None else removed,
        **(columns or {}),
    })
    for name, indices in subsets.items():
        member = np.zeros(n, dtype=bool)
        member[indices] = True
        table[f"in_{name}"] = member
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


from . import instance  # noqa: E402,F401,I001  (register)
