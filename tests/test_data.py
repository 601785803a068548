"""The data layer on real MNIST JPEGs: ImageFolder reader, loader contract, odd and broken files."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cg_train.config import build_config
from cg_train.data.bundle import build_data, read_manifests
from cg_train.data.readers import DATASETS
from cg_train.errors import DataError


def test_imagefolder_reads_imagenet_layout(mnist_small: Path) -> None:
    train = DATASETS.get("imagefolder")(str(mnist_small), "train")
    assert len(train) == 300 and train.classes == tuple(str(d) for d in range(10))
    assert np.array_equal(np.bincount(train.true_labels), [30] * 10)
    assert all(Path(f).parent.name == train.classes[label] for f, label in zip(train.files, train.true_labels))
    assert np.array_equal(train.observed_labels, train.true_labels)


@pytest.mark.parametrize("damage, expected", [
    (lambda root: shutil.rmtree(root / "train"), "expected {root}/train/"),
    (lambda root: shutil.rmtree(root / "val"), "expected {root}/val/"),
    (lambda root: (root / "train" / "empty").mkdir(), "class folder {root}/train/empty has no images"),
    (lambda root: (root / "val" / "7").rename(root / "val" / "seven"), "class folders the training set lacks (seven)"),
    (lambda root: shutil.rmtree(root), "data directory {root} does not exist"),
])
def test_bad_layouts_name_the_problem(mnist_copy: Path, damage, expected: str) -> None:
    damage(mnist_copy)
    cfg = build_config(overrides=[f"data.dir={mnist_copy}"])
    with pytest.raises(DataError) as err:
        read_manifests(cfg)
    assert expected.format(root=mnist_copy) in str(err.value)


def test_loader_yields_the_corrupted_labels_and_stable_indices(mnist_small: Path) -> None:
    cfg = build_config(overrides=[f"data.dir={mnist_small}", "noise.corrupt_fraction=0.5", "model.arch=simple_cnn",
                                  "data.batch_size=64", "data.workers=2", "data.sample_size=40"])
    data = build_data(cfg, 32, 32, rank=0, world_size=1, device=torch.device("cpu"))
    assert data.resampled.sum() == 150
    loader = data.train_loader
    loader.set_epoch(0)
    seen = []
    for images, observed, true, indices in loader:
        assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32
        assert torch.equal(observed, torch.from_numpy(data.train.observed_labels[indices.numpy()]))
        assert torch.equal(true, torch.from_numpy(data.train.true_labels[indices.numpy()]))
        # the image really is the file at that index: its folder name is the true class
        assert all(Path(data.train.files[i]).parent.name == str(int(t)) for i, t in zip(indices, true))
        seen.extend(indices.tolist())
    assert sorted(seen) == list(range(300))
    assert set(data.eval_loaders) == {"pristine", "corrupt", "train_sample", "test"}
    corrupt = data.train.observed_labels != data.train.true_labels
    assert corrupt[data.subsets["corrupt"]].all() and not corrupt[data.subsets["pristine"]].any()


def test_eval_images_are_deterministic_and_train_augmentation_is_seeded(mnist_small: Path) -> None:
    def first_batch(random_aug: bool, epoch: int, workers: int) -> torch.Tensor:
        cfg = build_config(overrides=[f"data.dir={mnist_small}", f"data.random_augmentations={random_aug}",
                                      f"data.workers={workers}", "data.batch_size=16"])
        loader = build_data(cfg, 36, 32, 0, 1, torch.device("cpu")).train_loader
        loader.set_epoch(epoch)
        return next(iter(loader)).images

    assert torch.equal(first_batch(True, 1, 0), first_batch(True, 1, 2))  # same crops whatever the workers
    assert not torch.equal(first_batch(True, 1, 0), first_batch(True, 2, 0))  # new crops (and order) each epoch
    assert torch.equal(first_batch(False, 1, 0), first_batch(False, 1, 0))


def test_cmyk_jpeg_and_png_named_jpeg_decode_as_rgb(mnist_copy: Path) -> None:
    digit = Image.open(next((mnist_copy / "train" / "3").iterdir())).convert("RGB")
    digit.convert("CMYK").save(mnist_copy / "train" / "3" / "cmyk.JPEG", format="JPEG")
    digit.save(mnist_copy / "train" / "3" / "really_png.JPEG", format="PNG")
    train = DATASETS.get("imagefolder")(str(mnist_copy), "train")
    for name in ("cmyk.JPEG", "really_png.JPEG"):
        index = [Path(f).name for f in train.files].index(name)
        image = train.load_image(index)
        assert image.mode == "RGB" and image.size == (28, 28)
        assert train.true_labels[index] == 3
