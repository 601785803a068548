"""CUB-200-2011 (200 bird species) from its index files."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import DataError
from ..manifest import Manifest
from . import DATASETS
from .files import check_split, dataset_root, first_existing, parse_int, read_columns, relabel

LAYOUT = ("ROOT/{images.txt,image_class_labels.txt,train_test_split.txt,classes.txt} and ROOT/images/ "
          "(ROOT may also be the folder that holds CUB_200_2011/)")
SPLITS = {"train": 1, "val": 0, "test": 0}


def index_file(base: Path, name: str) -> dict[str, str]:
    """``<image id> <value>`` per line."""
    path = first_existing([base / name], "cub_200_2011", LAYOUT)
    return {row[0]: row[1] for row in read_columns(path, 2)}


@DATASETS.register("cub_200_2011", help="CUB-200-2011: images.txt, image_class_labels.txt, "
                                        "train_test_split.txt")
def read_cub(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """CUB-200-2011, with its official train/test split.

    ROOT/images.txt              "<image id> <class folder>/<file>.jpg", images in ROOT/images/
    ROOT/image_class_labels.txt  "<image id> <class id 1..200>"
    ROOT/train_test_split.txt    "<image id> <1 = train, 0 = test>"
    ROOT/classes.txt             "<class id> <class folder name>"
    splits: train, val (= the official test images; also called test)
    """
    base = dataset_root(root, "cub_200_2011", LAYOUT)
    if not (base / "images.txt").is_file() and (base / "CUB_200_2011").is_dir():
        base = base / "CUB_200_2011"
    check_split("cub_200_2011", split, SPLITS)
    images = index_file(base, "images.txt")
    class_of = index_file(base, "image_class_labels.txt")
    is_train = index_file(base, "train_test_split.txt")
    class_rows = sorted(index_file(base, "classes.txt").items(), key=lambda kv: parse_int(kv[0], base))
    names = [name for _, name in class_rows]
    wanted = str(SPLITS[split])
    chosen = sorted((i for i, flag in is_train.items() if flag == wanted), key=lambda i: parse_int(i, base))
    missing = [i for i in chosen if i not in images or i not in class_of]
    if missing:
        raise DataError(f"image id {missing[0]} of {base / 'train_test_split.txt'} is missing from images.txt or "
                        f"image_class_labels.txt: use the original index files")
    labels = np.array([parse_int(class_of[i], base) - 1 for i in chosen], dtype=np.int64)
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(names):
        raise DataError(f"{base / 'image_class_labels.txt'} has class ids outside 1..{len(names)} of classes.txt")
    ids, names = relabel(labels, names, classes, f"{base} ({split})")
    return Manifest.from_labels(split, names, ids, files=[str(base / "images" / images[i]) for i in chosen],
                                root=str(base))
