"""STL-10 (10 classes, 96x96) from the official binary release (``stl10_binary/``), held in memory."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import DataError
from ..manifest import Manifest
from . import DATASETS
from .files import check_split, dataset_root, first_existing, read_lines, relabel

LAYOUT = "ROOT/stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin,class_names.txt} (or those files in ROOT/)"
SPLITS = {"train": "train", "val": "test"}
SIDE = 96


def read_binary_images(path: Path) -> np.ndarray:
    """``[N, 96, 96, 3]`` uint8 from STL-10's ``*_X.bin``: per image the R, G, B planes, each column-major."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * SIDE * SIDE):
        raise DataError(f"{path} holds {raw.size} bytes, not a whole number of 3x96x96 images: a truncated download?")
    # stored as [N, channel, column, row]: swap to rows first, channels last
    return np.ascontiguousarray(raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 3, 2, 1))


@DATASETS.register("stl10", help="STL-10, binary release (stl10_binary/), labelled train/test, in memory")
def read_stl10(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """STL-10's 5,000 labelled training and 8,000 test 96x96 images (the unlabelled 100,000 are not read).

    ROOT/stl10_binary/train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt
    labels in *_y.bin are 1..10 (one byte each); splits: train, val (= test). The models'
    default input is 32 px: pass --image-size 96 to train at full size.
    """
    base = dataset_root(root, "stl10", LAYOUT)
    check_split("stl10", split, SPLITS)
    folder = base / "stl10_binary" if (base / "stl10_binary").is_dir() else base
    part = SPLITS[split]
    names = read_lines(first_existing([folder / "class_names.txt"], "stl10", LAYOUT))
    images = read_binary_images(first_existing([folder / f"{part}_X.bin"], "stl10", LAYOUT))
    labels_path = first_existing([folder / f"{part}_y.bin"], "stl10", LAYOUT)
    labels = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != len(images) or len(labels) and not (0 <= labels.min() and labels.max() < len(names)):
        raise DataError(f"{labels_path} holds {len(labels)} labels in 1..{labels.max(initial=0) + 1} for "
                        f"{len(images)} images and {len(names)} classes: the files do not belong together")
    ids, names = relabel(labels, names, classes, f"{folder} ({split})")
    return Manifest.from_labels(split, names, ids, images=images, root=str(folder))
