"""Data for the KD seeds: STL-10's binary layout, CIFAR-10H's soft labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cg_train.data.readers import DATASETS
from cg_train.data.soft_labels import CIFAR10_CLASSES, find_cifar10h, read_cifar10h
from cg_train.errors import DataError
from image_files import write_cifar

STL_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def write_stl10(root: Path, counts: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny STL-10 in the official binary layout; returns each part's HWC images and 0-based labels."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    (folder / "class_names.txt").write_text("\n".join(STL_CLASSES) + "\n")
    rng = np.random.default_rng(0)
    written = {}
    for part, n in counts.items():
        hwc = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        # the official files: per image 3 planes (R, G, B), each stored column by column
        hwc.transpose(0, 3, 2, 1).tofile(folder / f"{part}_X.bin")
        (labels + 1).astype(np.uint8).tofile(folder / f"{part}_y.bin")
        written[part] = (hwc, labels)
    return written


def test_stl10_binary_reader_decodes_the_official_layout(tmp_path: Path) -> None:
    written = write_stl10(tmp_path, {"train": 4, "test": 3})
    train = DATASETS.get("stl10")(str(tmp_path), "train")
    val = DATASETS.get("stl10")(str(tmp_path), "val", classes=train.classes)
    assert train.classes == tuple(STL_CLASSES) and len(train) == 4 and len(val) == 3
    for manifest, part in ((train, "train"), (val, "test")):
        hwc, labels = written[part]
        assert np.array_equal(manifest.images, hwc) and np.array_equal(manifest.observed_labels, labels)
    # a pixel off the diagonal lands at (row, column) as written, not transposed
    hwc = written["train"][0]
    assert np.array_equal(np.asarray(train.load_image(1))[5, 70], hwc[1, 5, 70])
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(DataError, match="truncated"):
        DATASETS.get("stl10")(str(tmp_path), "val")


def test_cifar10h_is_a_per_sample_table_of_cifar10s_test_split(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")
    test = DATASETS.get("cifar10")(str(tmp_path), "val")
    assert find_cifar10h(tmp_path) is None
    probs = np.random.default_rng(1).dirichlet(np.ones(10), size=len(test))
    np.save(tmp_path / "cifar10h-probs.npy", probs)
    table = read_cifar10h(find_cifar10h(tmp_path), test)
    assert table.dtype == np.float32 and table.shape == (len(test), 10)
    np.testing.assert_allclose(table, probs, rtol=1e-6)
    assert test.classes == CIFAR10_CLASSES
    np.save(tmp_path / "cifar10h-probs.npy", probs[:, :9])
    with pytest.raises(DataError, match=r"expected \(1, 10\)"):
        read_cifar10h(tmp_path / "cifar10h-probs.npy", test)
    np.save(tmp_path / "cifar10h-probs.npy", probs * 2)
    with pytest.raises(DataError, match="probability distributions"):
        read_cifar10h(tmp_path / "cifar10h-probs.npy", test)
