"""ImageNet-1k (ILSVRC2012) as distributed: class folders for train, and a val split either
sorted into class folders or flat with one of the official label files."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional, Sequence

from ...errors import DataError
from ..manifest import Manifest
from . import DATASETS
from .files import class_index, read_lines
from .imagefolder import read_class_folders, split_dir
from .listing import IMAGE_EXTENSIONS

LAYOUT = ("ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG, or a flat ROOT/val/*.JPEG labelled by "
          "ROOT/LOC_val_solution.csv (Kaggle) or by the devkit's ROOT/ILSVRC2012_devkit_t12/data/"
          "{ILSVRC2012_validation_ground_truth.txt,meta.mat}")
KAGGLE_LABELS = "LOC_val_solution.csv"
DEVKIT_LABELS = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
DEVKIT_DIR = Path("ILSVRC2012_devkit_t12", "data")
#: Kaggle's tree keeps the label files three levels above the image root ILSVRC/Data/CLS-LOC.
KAGGLE_IMAGE_ROOT = ("ILSVRC", "Data", "CLS-LOC")


def label_dirs(root: Path) -> list[Path]:
    """Where label files may live: the root, and Kaggle's top folder when ROOT is its ILSVRC/Data/CLS-LOC."""
    dirs = [root]
    if root.resolve().parts[-3:] == KAGGLE_IMAGE_ROOT:
        dirs.append(root.resolve().parents[2])
    return dirs


def read_kaggle_labels(path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv``: ImageId,PredictionString; the first token of the string is the wnid."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        if rows.fieldnames is None or not {"ImageId", "PredictionString"} <= set(rows.fieldnames):
            raise DataError(f"{path}: expected the header ImageId,PredictionString of Kaggle's {KAGGLE_LABELS}")
        return {row["ImageId"]: row["PredictionString"].split()[0] for row in rows if row["PredictionString"]}


def read_devkit_labels(folder: Path) -> dict[str, str]:
    """Devkit: line k of the ground truth is the ILSVRC2012_ID of ILSVRC2012_val_<k>; meta.mat maps ids to wnids."""
    meta = folder / DEVKIT_META
    if not meta.is_file():
        raise DataError(f"expected {meta} beside {folder / DEVKIT_LABELS}: the devkit's meta.mat maps its "
                        f"class ids to wnids")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError("reading the devkit's meta.mat needs scipy: pip install scipy") from None
    synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
    wnid_of = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"])}
    labels = {}
    for number, line in enumerate(read_lines(folder / DEVKIT_LABELS), start=1):
        class_id = int(line)
        if class_id not in wnid_of:
            raise DataError(f"{folder / DEVKIT_LABELS}:{number}: class id {class_id} is not in {meta}")
        labels[f"ILSVRC2012_val_{number:08d}"] = wnid_of[class_id]
    return labels


def flat_val_labels(root: Path) -> dict[str, str]:
    """Image stem -> wnid from whichever official label file the tree has."""
    for folder in label_dirs(root):
        if (folder / KAGGLE_LABELS).is_file():
            return read_kaggle_labels(folder / KAGGLE_LABELS)
        for devkit in (folder / DEVKIT_DIR, folder):
            if (devkit / DEVKIT_LABELS).is_file():
                return read_devkit_labels(devkit)
    raise DataError(f"{root}/val has no class folders, so it needs a label file: expected "
                    f"{root / KAGGLE_LABELS} or {root / DEVKIT_DIR / DEVKIT_LABELS} (with meta.mat beside it)")


def read_flat_split(folder: Path, entries: Sequence[os.DirEntry], root: Path, split: str,
                    classes: Optional[Sequence[str]], only_known: bool) -> Manifest:
    """A flat split: ``entries`` (``folder``'s, already scanned) labelled by the official val label file."""
    images = sorted(e.name for e in entries
                    if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith("."))
    if not images:
        raise DataError(f"{folder} has neither class folders nor images: expected {LAYOUT}")
    wnid_of = flat_val_labels(root)
    missing = [name for name in images if Path(name).stem not in wnid_of]
    if missing:
        raise DataError(f"{folder / missing[0]} (and {len(missing) - 1} more) has no label in the val label file: "
                        f"use the label file that belongs to these images")
    wnids = [wnid_of[Path(name).stem] for name in images]
    names, class_ids = class_index(wnids, classes, only_known, f"{folder} has images of classes")
    keep = [i for i, w in enumerate(wnids) if w in class_ids] if only_known else range(len(images))
    return Manifest.from_labels(split, names, [class_ids[wnids[i]] for i in keep],
                                files=[str(folder / images[i]) for i in keep], root=str(root))


def read_imagenet_split(root: str, split: str, classes: Optional[Sequence[str]] = None,
                        only_known: bool = False) -> Manifest:
    """One split of an ImageNet tree; ``only_known`` keeps only the classes in ``classes`` (a subset's test)."""
    folder = split_dir(root, split, LAYOUT)
    with os.scandir(folder) as scan:
        entries = list(scan)
    if any(e.is_dir() and not e.name.startswith(".") for e in entries):
        return read_class_folders(folder, split, classes, root=str(root), only_known=only_known)
    return read_flat_split(folder, entries, Path(root), split, classes, only_known)


@DATASETS.register("imagenet", help="ImageNet-1k (ILSVRC2012): train/<wnid>/, val/ in class folders or flat "
                                    "with LOC_val_solution.csv or the devkit's labels")
def read_imagenet(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """ImageNet-1k (ILSVRC2012); classes are the wnids, sorted (the usual class ids 0..999).

    ROOT/train/<wnid>/*.JPEG
    ROOT/val/<wnid>/*.JPEG                                  val sorted into class folders, or
    ROOT/val/ILSVRC2012_val_00000001.JPEG ...               flat, labelled by one of
        ROOT/LOC_val_solution.csv                           Kaggle (also found 3 levels above
                                                            ROOT=.../ILSVRC/Data/CLS-LOC)
        ROOT/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt + meta.mat   devkit
    splits: train, val
    """
    return read_imagenet_split(root, split, classes)


def is_imagenet_tree(root: str) -> bool:
    """True when ``root`` holds ImageNet's train/ or val/ (where datasets with wnid classes can be tested)."""
    return (Path(root) / "val").is_dir() or (Path(root) / "train").is_dir()

