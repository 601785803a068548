"""WebVision 1.0 (2.4M web images of ImageNet's 1,000 synsets, real label noise) and mini-WebVision.

Both also read an ImageNet tree: WebVision's classes are ImageNet wnids, so
``--test-imagenet-dir /imagenet`` evaluates on ImageNet's val images of exactly the
training classes (for webvision50, its 50 wnids), mapped by name to the same ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import DataError
from ..manifest import UNKNOWN_LABEL, Manifest
from . import DATASETS
from .files import check_split, dataset_root, first_existing, parse_int, read_columns, read_lines, relabel
from .imagenet import is_imagenet_tree, read_imagenet_split

LAYOUT = ("ROOT/info/{synsets.txt,train_filelist_google.txt,train_filelist_flickr.txt,val_filelist.txt}, "
          "ROOT/google/..., ROOT/flickr/..., ROOT/val_images_256/ (or val_images/)")
SPLITS = ("train", "val")
VAL_IMAGE_DIRS = ("val_images_256", "val_images")
#: mini-WebVision (seed 002's webvision50, as in DivideMix/AUM): the first 50 classes, Google images only.
MINI_CLASSES = 50


def read_synsets(root: Path) -> list[str]:
    """``info/synsets.txt``: line c is class c, ``<wnid> <words>``."""
    path = first_existing([root / "info" / "synsets.txt"], "webvision", LAYOUT)
    return [line.split()[0] for line in read_lines(path)]


def read_filelist(path: Path, image_dir: Path, num_classes: int, known_classes: int) -> tuple[list[str], list[int]]:
    """``<relative path> <class id>`` per line, keeping classes below ``num_classes``; an id that synsets.txt
    (``known_classes`` lines) does not have is an error, whether or not it is kept."""
    files, labels = [], []
    for relative, label, *_ in read_columns(path, 2):
        class_id = parse_int(label, path)
        if class_id >= known_classes:
            raise DataError(f"{path} has class id {class_id} but info/synsets.txt lists {known_classes}: use the "
                            f"synsets.txt that came with these file lists")
        if class_id < num_classes:
            files.append(str(image_dir / relative))
            labels.append(class_id)
    return files, labels


def read_webvision_tree(root: str, split: str, classes: Optional[Sequence[str]], num_classes: Optional[int],
                        sources: Sequence[str]) -> Manifest:
    if is_imagenet_tree(root) and not (Path(root) / "info").is_dir():
        if classes is None:
            raise DataError(f"{root} is an ImageNet tree, not WebVision: evaluate on it with --test-imagenet-dir "
                            f"(it takes the training set's wnids)")
        return read_imagenet_split(root, split, classes, only_known=True)
    base = dataset_root(root, "webvision", LAYOUT)
    check_split("webvision", split, SPLITS)
    synsets = read_synsets(base)
    count = num_classes or len(synsets)
    if split == "train":
        lists = [first_existing([base / "info" / f"train_filelist_{source}.txt"], "webvision", LAYOUT)
                 for source in sources]
        image_dir = base
    else:
        lists = [first_existing([base / "info" / "val_filelist.txt"], "webvision", LAYOUT)]
        image_dir = first_existing([base / name for name in VAL_IMAGE_DIRS], "webvision", LAYOUT, kind="folder")
    files: list[str] = []
    labels: list[int] = []
    for path in lists:
        more_files, more_labels = read_filelist(path, image_dir, count, len(synsets))
        files += more_files
        labels += more_labels
    ids, names = relabel(np.asarray(labels, dtype=np.int64), synsets[:count], classes, f"{base} ({split})")
    if split == "train":  # web labels from search queries: observed, but nobody verified them
        return Manifest.from_labels(split, names, np.full(len(ids), UNKNOWN_LABEL), observed=ids, files=files,
                                    root=str(base))
    return Manifest.from_labels(split, names, ids, files=files, root=str(base))  # val: human-annotated


@DATASETS.register("webvision", help="WebVision 1.0: 1,000 ImageNet synsets, Google + Flickr images "
                                     "(info/*.txt file lists)")
def read_webvision(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """WebVision 1.0, all 1,000 classes. Train labels come from search queries (real noise): they are the
    observed labels and the true ones are unknown (-1); val labels are human-annotated.

    ROOT/info/synsets.txt                  line c: the wnid of class c
    ROOT/info/train_filelist_google.txt    "google/q0001/<image>.jpg <class id>" per line
    ROOT/info/train_filelist_flickr.txt    "flickr/q0001/<image>.jpg <class id>"
    ROOT/info/val_filelist.txt             "<image>.jpg <class id>", images in ROOT/val_images_256/
    splits: train (Google + Flickr), val; an ImageNet root (train/, val/) is read for its wnids
    """
    return read_webvision_tree(root, split, classes, None, ("google", "flickr"))


@DATASETS.register("webvision50", help="mini-WebVision: WebVision's first 50 classes, Google images only "
                                       "(seed 002)")
def read_webvision50(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """mini-WebVision: the first 50 classes of WebVision 1.0, Google images only (DivideMix, AUM, seed 002).

    The WebVision 1.0 layout (see webvision). Test on ImageNet's val images of the same 50 wnids with
    --test-imagenet-dir IMAGENET_ROOT.
    splits: train (Google, classes 0..49), val (WebVision val, classes 0..49)
    """
    return read_webvision_tree(root, split, classes, MINI_CLASSES, ("google",))
