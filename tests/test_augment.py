"""``--augment cifar``: pad-4 random crop + flip with CIFAR mean/std, identical in both loaders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import functional as TF

from cg_train.data.augment import CIFAR_MEAN, CIFAR_STD
from cg_train.data.crops import pad_crop_shifts
from cg_train.data.loaders import LOADERS, LoaderSpec
from cg_train.data.readers import DATASETS
from conftest import read_csv, train
from image_files import write_cifar


def cifar_spec(manifest, train_phase: bool) -> LoaderSpec:
    return LoaderSpec(manifest=manifest, indices=np.arange(len(manifest), dtype=np.int64), train=train_phase,
                      batch_size=2, resize_size=32, crop_size=32, random_augmentations=False, workers=0, seed=5,
                      rank=0, world_size=1, device=torch.device("cpu"), dali_threads=1, augment="cifar")


def one_epoch(name: str, spec: LoaderSpec, epoch: int):
    loader = LOADERS.get(name)(spec)
    loader.set_epoch(epoch)
    return list(loader)


def test_shifts_cover_the_padding_and_depend_only_on_seed_epoch_index() -> None:
    shifts, flips = pad_crop_shifts(0, 3, np.arange(2000), 4)
    assert set(shifts[:, 0]) == set(shifts[:, 1]) == set(range(-4, 5))
    assert 0.45 < flips.mean() < 0.55
    again, _ = pad_crop_shifts(0, 3, np.arange(1000, 2000), 4)
    assert np.array_equal(again, shifts[1000:])
    assert not np.array_equal(pad_crop_shifts(0, 4, np.arange(2000), 4)[0], shifts)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("cifar")
    return root, write_cifar(root, "cifar10")


@pytest.mark.parametrize("loader", ["torchvision", "dali"])
def test_cifar_preset_is_torchvisions_pad_crop_flip(cifar: tuple[Path, np.ndarray], loader: str) -> None:
    root, hwc = cifar
    manifest = DATASETS.get("cifar10")(str(root), "train")
    for epoch in (0, 1):
        batches = one_epoch(loader, cifar_spec(manifest, True), epoch)
        for batch in batches:
            shifts, flips = pad_crop_shifts(5, epoch, batch.indices.numpy(), 4)
            for image, index, (dy, dx), flip in zip(batch.images, batch.indices, shifts, flips):
                # torchvision's RandomCrop(32, padding=4) at offset (4 + dy, 4 + dx), then the flip
                expected = TF.crop(TF.pad(torch.from_numpy(hwc[index]).permute(2, 0, 1), [4]), 4 + int(dy),
                                   4 + int(dx), 32, 32)
                expected = TF.hflip(expected) if flip else expected
                expected = TF.normalize(expected.float() / 255, CIFAR_MEAN, CIFAR_STD)
                torch.testing.assert_close(image, expected, atol=1e-5, rtol=0)
    evaluation = one_epoch(loader, cifar_spec(manifest, False), 0)
    plain = TF.normalize(torch.from_numpy(hwc[:5]).permute(0, 3, 1, 2).float() / 255, CIFAR_MEAN, CIFAR_STD)
    torch.testing.assert_close(torch.cat([b.images for b in evaluation]), plain, atol=1e-5, rtol=0)


def test_a_cifar_run_with_the_preset(cifar: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    root, _ = cifar
    out = tmp_path / "run"
    assert train(root, out, "--dataset", "cifar10", "--augment", "cifar", "--epochs", "1", "--batch-size", "2",
                 "--arch", "cifar_resnet8") == 0
    assert read_csv(out / "train.csv").epoch.tolist() == [0]
    assert "augment: cifar" in (out / "config.yaml").read_text()
    clash = tmp_path / "clash"
    assert train(root, clash, "--dataset", "cifar10", "--augment", "cifar", "--random-augmentations") == 2
    assert not clash.exists()  # refused before anything was written
