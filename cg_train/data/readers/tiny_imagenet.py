"""Tiny ImageNet (200 classes, 64x64) in its distributed layout."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ...errors import DataError
from ..manifest import Manifest
from . import DATASETS
from .files import check_split, dataset_root, first_existing, read_columns, read_lines, relabel
from .listing import images_under

LAYOUT = ("ROOT/wnids.txt, ROOT/train/<wnid>/images/*.JPEG, ROOT/val/images/*.JPEG with "
          "ROOT/val/val_annotations.txt")
SPLITS = ("train", "val")


@DATASETS.register("tiny_imagenet", help="Tiny ImageNet: wnids.txt, train/<wnid>/images/, "
                                         "val/val_annotations.txt")
def read_tiny_imagenet(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """Tiny ImageNet (tiny-imagenet-200); classes are the wnids of wnids.txt, sorted (as an ImageFolder).

    ROOT/wnids.txt                          the 200 wnids
    ROOT/train/<wnid>/images/*.JPEG         500 per class
    ROOT/val/images/val_<n>.JPEG            labelled by ROOT/val/val_annotations.txt
                                            ("<file>\\t<wnid>\\t<box>" per line)
    splits: train, val (the test split has no labels)
    """
    base = dataset_root(root, "tiny_imagenet", LAYOUT)
    check_split("tiny_imagenet", split, SPLITS)
    wnids = sorted(read_lines(first_existing([base / "wnids.txt"], "tiny_imagenet", LAYOUT)))
    files: list[str] = []
    labels: list[int] = []
    if split == "train":
        for label, wnid in enumerate(wnids):
            folder = first_existing([base / "train" / wnid / "images"], "tiny_imagenet", LAYOUT, kind="folder")
            images = images_under(folder)
            files += images
            labels += [label] * len(images)
    else:
        annotations = first_existing([base / "val" / "val_annotations.txt"], "tiny_imagenet", LAYOUT)
        image_dir = first_existing([base / "val" / "images"], "tiny_imagenet", LAYOUT, kind="folder")
        label_of = {wnid: i for i, wnid in enumerate(wnids)}
        for name, wnid, *_ in read_columns(annotations, 2, sep="\t"):
            if wnid not in label_of:
                raise DataError(f"{annotations}: {name} has class {wnid}, which {base / 'wnids.txt'} lacks")
            files.append(str(image_dir / name))
            labels.append(label_of[wnid])
    ids, names = relabel(np.asarray(labels, dtype=np.int64), wnids, classes, f"{base} ({split})")
    return Manifest.from_labels(split, names, ids, files=files, root=str(base))
