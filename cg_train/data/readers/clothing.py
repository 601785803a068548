"""Clothing1M (1M shop images, labels from surrounding text) and seed 002's clothing100k subset.

Training samples carry the noisy label as the observed one and the clean,
human-annotated label as the true one where the dataset has it (about 25k of the
1M noisy training images also appear in ``clean_label_kv.txt``), else -1: so
noise detection can be scored on real noise wherever the truth is known.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import DataError
from ..manifest import UNKNOWN_LABEL, Manifest
from . import DATASETS
from .files import check_split, dataset_root, first_existing, parse_int, read_columns, read_lines, relabel

LAYOUT = ("ROOT/annotations/{noisy_label_kv.txt,clean_label_kv.txt,noisy_train_key_list.txt,"
          "clean_val_key_list.txt,clean_test_key_list.txt} (or the same files in ROOT/), images at "
          "ROOT/<key> (e.g. ROOT/images/0/00/xxx.jpg)")
#: Clothing1M's 14 classes in id order (category_names_eng.txt, used when that file is absent).
CLASSES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket", "Downcoat",
           "Suit", "Shawl", "Dress", "Vest", "Underwear")
SPLITS = {"train": "noisy_train_key_list.txt", "val": "clean_val_key_list.txt",
          "test": "clean_test_key_list.txt"}
#: clothing100k: this many noisy training images, a fixed random subset (the same on every machine).
SUBSET_SIZE = 100_000
SUBSET_SEED = 100_000


def annotation_file(root: Path, name: str) -> Path:
    return first_existing([root / "annotations" / name, root / name], "clothing1m", LAYOUT)


def read_labels(path: Path) -> dict[str, int]:
    """``<key> <class id>`` per line."""
    labels = {key: parse_int(label, path) for key, label, *_ in read_columns(path, 2)}
    bad = [label for label in labels.values() if not 0 <= label < len(CLASSES)]
    if bad:
        raise DataError(f"{path}: class id {bad[0]} is outside 0..{len(CLASSES) - 1}")
    return labels


def class_names(root: Path) -> tuple[str, ...]:
    for path in (root / "annotations" / "category_names_eng.txt", root / "category_names_eng.txt"):
        if path.is_file():
            names = tuple(read_lines(path))
            if len(names) != len(CLASSES):
                raise DataError(f"{path} lists {len(names)} classes, Clothing1M has {len(CLASSES)}")
            return names
    return CLASSES


def subset_positions(count: int, size: int = SUBSET_SIZE, seed: int = SUBSET_SEED) -> np.ndarray:
    """Positions of clothing100k's samples in the noisy key list (all of them when there are fewer)."""
    if count <= size:
        return np.arange(count, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).permutation(count)[:size]).astype(np.int64)


def read_clothing(root: str, split: str, classes: Optional[Sequence[str]], subset: bool) -> Manifest:
    base = dataset_root(root, "clothing1m", LAYOUT)
    check_split("clothing1m", split, SPLITS)
    keys = read_lines(annotation_file(base, SPLITS[split]))
    clean = read_labels(annotation_file(base, "clean_label_kv.txt"))
    if split == "train":
        if subset:
            keys = [keys[i] for i in subset_positions(len(keys))]
        noisy = read_labels(annotation_file(base, "noisy_label_kv.txt"))
        missing = [key for key in keys if key not in noisy]
        observed = np.array([noisy.get(key, -1) for key in keys], dtype=np.int64)
        true = np.array([clean.get(key, UNKNOWN_LABEL) for key in keys], dtype=np.int64)
    else:
        missing = [key for key in keys if key not in clean]
        true = observed = np.array([clean.get(key, -1) for key in keys], dtype=np.int64)
    if missing:
        raise DataError(f"{SPLITS[split]} lists {missing[0]} (and {len(missing) - 1} more) without a label in "
                        f"{'noisy' if split == 'train' else 'clean'}_label_kv.txt: use the original annotation files")
    names = class_names(base)
    observed, mapped = relabel(observed, names, classes, f"{base} ({split})")
    known = true != UNKNOWN_LABEL
    true = true.copy()
    true[known] = relabel(true[known], names, classes, f"{base} ({split})")[0]
    return Manifest.from_labels(split, mapped, true, observed=observed, files=[str(base / key) for key in keys],
                                root=str(base))


@DATASETS.register("clothing1m", help="Clothing1M: 14 classes, 1M noisy training images, clean val/test "
                                      "(annotations/*.txt)")
def read_clothing1m(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """Clothing1M. Observed label = noisy label; true label = clean label where known, else -1.

    ROOT/annotations/noisy_label_kv.txt        "images/0/00/<id>.jpg <class id 0..13>" per line
    ROOT/annotations/clean_label_kv.txt        the same for the human-annotated images
    ROOT/annotations/noisy_train_key_list.txt  one key per line: the training set
    ROOT/annotations/clean_val_key_list.txt, clean_test_key_list.txt
    ROOT/images/...                            (the annotation files may also sit directly in ROOT/)
    splits: train (noisy), val (clean), test (clean; --test-split test)
    """
    return read_clothing(root, split, classes, subset=False)


@DATASETS.register("clothing100k", help="seed 002's Clothing1M subset: a fixed random 100,000 of the noisy "
                                        "training images; Clothing1M's clean val/test")
def read_clothing100k(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """clothing100k: Clothing1M with 100,000 noisy training images chosen once and for all (numpy PCG64,
    seed 100000, kept in key-list order); val and test are Clothing1M's. The Clothing1M layout.
    (AUM's prepared tarball of this subset is an ImageFolder tree: read it with --dataset imagefolder.)
    splits: train, val, test
    """
    return read_clothing(root, split, classes, subset=True)
