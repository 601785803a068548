"""Caltech-256, which has no official train/test split: this module defines a fixed one."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from ...errors import DataError
from ..manifest import Manifest
from . import DATASETS
from .files import check_split, dataset_root, first_existing, relabel
from .listing import class_listings

LAYOUT = "ROOT/256_ObjectCategories/<NNN.name>/*.jpg (ROOT may also be 256_ObjectCategories itself)"
SPLITS = ("train", "val")
#: Left out: the background class, not an object category.
CLUTTER = "257.clutter"
#: The split: per class, a fixed permutation (PCG64 seeded with [SPLIT_SEED, class number]) of the sorted
#: file names; its first VAL_FRACTION (rounded, at least 1) are val, the rest train.
SPLIT_SEED = 256
VAL_FRACTION = 0.2


def val_positions(count: int, class_number: int) -> np.ndarray:
    """Which of a class's ``count`` sorted files are in val (the rest are train)."""
    n_val = max(1, int(round(VAL_FRACTION * count))) if count > 1 else 0
    return np.sort(np.random.default_rng([SPLIT_SEED, class_number]).permutation(count)[:n_val])


@DATASETS.register("caltech256", help="Caltech-256: 256_ObjectCategories/NNN.name/; a fixed seeded 80/20 "
                                      "split per class")
def read_caltech256(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """Caltech-256 (256 object classes; 257.clutter is left out). It has no official split, so: per class,
    20% of the images (rounded, at least one) chosen by a fixed permutation (numpy PCG64 seeded with
    [256, class number]) are val, the rest train; the same on every machine and for every --seed.

    ROOT/256_ObjectCategories/001.ak47/001_0001.jpg ...
    splits: train, val
    """
    base = dataset_root(root, "caltech256", LAYOUT)
    check_split("caltech256", split, SPLITS)
    folder = base if base.name == "256_ObjectCategories" else first_existing(
        [base / "256_ObjectCategories"], "caltech256", LAYOUT, kind="folder")
    names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and e.name != CLUTTER
                   and not e.name.startswith("."))
    if not names:
        raise DataError(f"{folder} has no class folders: expected {LAYOUT}")
    files: list[str] = []
    labels: list[int] = []
    listings = class_listings(folder, names)
    for label, name in enumerate(names):
        images = listings[name]
        number = int(name.split(".", 1)[0]) if name.split(".", 1)[0].isdigit() else label + 1
        in_val = np.zeros(len(images), dtype=bool)
        in_val[val_positions(len(images), number)] = True
        chosen = [f for f, v in zip(images, in_val) if v == (split == "val")]
        files += chosen
        labels += [label] * len(chosen)
    ids, mapped = relabel(np.asarray(labels, dtype=np.int64), names, classes, f"{folder} ({split})")
    return Manifest.from_labels(split, mapped, ids, files=files, root=str(base))
