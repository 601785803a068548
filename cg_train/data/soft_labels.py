"""Per-sample soft-label tables: CIFAR-10H's human label distributions for CIFAR-10's test set (seed 000).

CIFAR-10H (Peterson et al. 2019) asked ~50 people per image to label CIFAR-10's
10,000 test images; ``cifar10h-probs.npy`` is the ``[10000, 10]`` table of their
label frequencies, rows in ``test_batch`` order and columns in ``batches.meta``'s class
order: exactly the sample indices and class ids of ``--dataset cifar10``'s val split.
Seed 000 uses it as the ground-truth ``p(y|x)`` that a good supervisory signal should
approach. :func:`read_cifar10h` checks the table against that split and returns it
as a per-sample table (row ``i`` = sample index ``i``), the shape every per-sample
target table in cg-train has (e.g. a teacher's ``p_smoothing.npy``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from .manifest import Manifest

CIFAR10H_FILE = "cifar10h-probs.npy"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def find_cifar10h(root: str | Path) -> Optional[Path]:
    """``cifar10h-probs.npy`` in the CIFAR-10 root or its ``cifar-10-batches-py/``, else None."""
    root = Path(root)
    for path in (root / CIFAR10H_FILE, root / "cifar-10-batches-py" / CIFAR10H_FILE):
        if path.is_file():
            return path
    return None


def read_soft_labels(path: str | Path, split: Manifest) -> np.ndarray:
    """A ``[N, K]`` float32 table of label distributions for ``split``, row ``i`` for sample index ``i``."""
    path = Path(path)
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a NumPy .npy table ({exc})") from None
    if table.shape != (len(split), split.num_classes):
        raise DataError(f"{path} has shape {table.shape}, expected ({len(split)}, {split.num_classes}): one row per "
                        f"sample of the {split.split} split, one column per class")
    table = table.astype(np.float32)
    if (table < 0).any() or not np.allclose(table.sum(axis=1), 1.0, atol=1e-3):
        raise DataError(f"{path}: rows must be probability distributions (non-negative, summing to 1)")
    return table


def read_cifar10h(path: str | Path, test: Manifest) -> np.ndarray:
    """The ``[N, 10]`` float32 human label distributions for ``test`` (CIFAR-10's val split), by sample index."""
    if tuple(test.classes) != CIFAR10_CLASSES:
        raise DataError(f"{path}: CIFAR-10H labels CIFAR-10's test set, whose classes are {', '.join(CIFAR10_CLASSES)}; "
                        f"this split has {', '.join(test.classes[:4])}...")
    return read_soft_labels(path, test)
