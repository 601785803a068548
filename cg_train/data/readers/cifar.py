"""CIFAR-10/100 from the official "python version" pickles, held in memory (``Manifest.images``)."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import DataError
from ..manifest import Manifest
from . import DATASETS
from .files import check_split, dataset_root, first_existing, relabel

SPLITS = ("train", "val")
LAYOUTS = {
    "cifar10": "ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (or those files in ROOT/)",
    "cifar100": "ROOT/cifar-100-python/{train,test,meta} (or those files in ROOT/)",
}
FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
BATCHES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"]},
    "cifar100": {"train": ["train"], "val": ["test"]},
}
META = {"cifar10": ("batches.meta", b"label_names", b"labels"),
        "cifar100": ("meta", b"fine_label_names", b"fine_labels")}


def load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path} is not a CIFAR python pickle ({exc}): download the 'python version'") from None


def read_cifar(name: str, root: str, split: str, classes: Optional[Sequence[str]]) -> Manifest:
    layout = LAYOUTS[name]
    base = dataset_root(root, name, layout)
    check_split(name, split, SPLITS)
    folder = base / FOLDERS[name] if (base / FOLDERS[name]).is_dir() else base
    meta_name, names_key, labels_key = META[name]
    meta = load_pickle(first_existing([folder / meta_name], name, layout))
    names = [n.decode() for n in meta[names_key]]
    images, labels = [], []
    for batch in BATCHES[name][split]:
        data = load_pickle(first_existing([folder / batch], name, layout))
        images.append(np.asarray(data[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(data[labels_key])
    ids, names = relabel(np.asarray(labels, dtype=np.int64), names, classes, f"{folder} ({split})")
    return Manifest.from_labels(split, names, ids, images=np.ascontiguousarray(np.concatenate(images)),
                                root=str(folder))


@DATASETS.register("cifar10", help="CIFAR-10, python pickles (cifar-10-batches-py/), in memory")
def read_cifar10(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """CIFAR-10, 50,000 train / 10,000 test 32x32 images held in memory (no files to decode).

    ROOT/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta
    splits: train, val (= test_batch)
    """
    return read_cifar("cifar10", root, split, classes)


@DATASETS.register("cifar100", help="CIFAR-100 (fine labels), python pickles (cifar-100-python/), in memory")
def read_cifar100(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """CIFAR-100 with its 100 fine labels, held in memory.

    ROOT/cifar-100-python/train, test, meta
    splits: train, val (= test)
    """
    return read_cifar("cifar100", root, split, classes)
