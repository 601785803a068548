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

The new label is drawn from the sample's *true* label, which is why samples whose
true label is unknown (WebVision train, unannotated Clothing1M) are never chosen.

NumPy's PCG64 stream makes the result identical on every machine and for any
number of processes (each process computes it; nothing is broadcast).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import pandas as pd

from .data.manifest import UNKNOWN_LABEL, Manifest
from .io import atomic_path
from .registry import Registry

NOISE_STREAM = 3

NoiseFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
NOISES: Registry[NoiseFn] = Registry("noise type", "--noise-type (noise.noise_type)")


@NOISES.register("uniform", help="a uniformly random class, possibly the true one (seed 004)")
def uniform_noise(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, num_classes, size=len(labels), dtype=np.int64)


@NOISES.register("symmetric", help="a uniformly random class other than the true one: every re-drawn sample "
                "is corrupt (seed 002)")
def symmetric_noise(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    if num_classes < 2:
        raise ValueError("symmetric noise needs at least 2 classes")
    return (labels + rng.integers(1, num_classes, size=len(labels), dtype=np.int64)) % num_classes


@NOISES.register("flip", help="true class + 1 (mod K): class-flip (asymmetric) noise (seed 002's flip)")
def flip_noise(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    return (labels + 1) % num_classes


def corrupt_labels(labels: np.ndarray, num_classes: int, fraction: float, noise_type: str,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(observed_labels, resampled_mask)`` for the true ``labels`` (int64, -1 = unknown, never chosen)."""
    labels = np.asarray(labels, dtype=np.int64)
    noise = NOISES.get(noise_type)
    rng = np.random.default_rng([seed, NOISE_STREAM])
    candidates = np.flatnonzero(labels != UNKNOWN_LABEL)
    count = int(round(fraction * len(candidates)))
    chosen = np.sort(rng.permutation(candidates)[:count])
    observed = labels.copy()
    observed[chosen] = noise(labels[chosen], num_classes, rng)
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
