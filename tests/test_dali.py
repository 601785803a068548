"""The DALI loader in CPU mode (no GPU here) against the torchvision reference loader, on real files.

Tolerance of the eval comparison: both loaders resize the same source window (the
geometry is computed identically, see test_crops) with the same triangle filter
(PIL's antialiased bilinear; DALI's antialiased linear). PIL uses fixed-point
coefficients and DALI floats, so a pixel may round to the neighbouring 8-bit level
(up to a quarter of the pixels do at non-integer scales): we allow at most 2 levels
anywhere and half a level on average. A window off by one pixel would give
differences of tens of levels on these textured images.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cg_train.data.loaders import LOADERS, LoaderSpec
from cg_train.data.manifest import Manifest
from cg_train.data.readers import DATASETS
from cg_train.data.transforms import IMAGENET_STD
from conftest import read_csv, train
from image_files import textured, write_broken_files, write_cifar

BROKEN = ["bad_huffman.jpg", "empty.jpg", "notes.jpg", "truncated.jpg"]
STD_LEVELS = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255  # one 8-bit level in normalised units


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of textured JPEGs at ImageNet-like sizes, with ImageNet's odd files among them."""
    root = tmp_path_factory.mktemp("photos")
    for split, count in (("train", 10), ("val", 4)):
        for c in range(2):
            for k in range(count):
                size = (375, 500) if k % 2 else (500, 375)
                if split == "train":
                    size = (size[0] // 3, size[1] // 3)
                folder = root / split / f"class{c}"
                folder.mkdir(parents=True, exist_ok=True)
                textured(*size, seed=100 * c + k).save(folder / f"{k:03d}.JPEG", quality=90)
    odd = root / "val" / "class1"
    textured(333, 257, seed=7).convert("CMYK").save(odd / "cmyk.JPEG", format="JPEG")
    textured(300, 400, seed=8).save(odd / "really_png.JPEG", format="PNG")
    textured(280, 260, seed=9).convert("L").save(odd / "gray.JPEG", format="JPEG")
    return root


def spec(manifest: Manifest, train: bool, *, batch: int = 8, resize: int = 256, crop: int = 224,
         augment: bool = False, world: int = 1, rank: int = 0, threads: int = 2, **more) -> LoaderSpec:
    return LoaderSpec(manifest=manifest, indices=np.arange(len(manifest), dtype=np.int64), train=train,
                      batch_size=batch, resize_size=resize, crop_size=crop, random_augmentations=augment,
                      workers=0, seed=3, rank=rank, world_size=world, device=torch.device("cpu"),
                      dali_threads=threads, **more)


def epoch(loader_name: str, loader_spec: LoaderSpec, number: int = 0, start_step: int = 0):
    loader = LOADERS.get(loader_name)(loader_spec)
    loader.set_epoch(number, start_step)
    batches = list(loader)
    assert len(batches) == len(loader)
    return batches, loader.skipped


def assert_close_images(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    if not a.numel():
        return  # a batch whose files were all unreadable
    levels = (a - b).abs() * STD_LEVELS
    assert levels.max() <= 2.0 + 1e-4 and levels.mean() <= 0.5, (levels.max(), levels.mean())


def joined(batches) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([b.images for b in batches]), torch.cat([b.indices for b in batches])


@pytest.mark.parametrize("tree, resize, crop", [("photos", 256, 224), ("mnist_small", 36, 32)])
def test_eval_batches_match_torchvision(request: pytest.FixtureRequest, tree: str, resize: int, crop: int) -> None:
    val = DATASETS.get("imagefolder")(str(request.getfixturevalue(tree)), "val")
    dali, _ = epoch("dali", spec(val, False, resize=resize, crop=crop))
    reference, _ = epoch("torchvision", spec(val, False, resize=resize, crop=crop))
    assert [b.indices.tolist() for b in dali] == [b.indices.tolist() for b in reference]
    for ours, theirs in zip(dali, reference):
        assert ours.images.shape[1:] == (3, crop, crop) and ours.images.dtype == torch.float32
        assert torch.equal(ours.observed_labels, theirs.observed_labels)
        assert torch.equal(ours.true_labels, theirs.true_labels)
        assert_close_images(ours.images, theirs.images)


@pytest.mark.parametrize("world", [1, 3])
def test_training_steps_follow_the_sharding_plan(mnist_small: Path, world: int) -> None:
    train_set = DATASETS.get("imagefolder")(str(mnist_small), "train")
    for number in (0, 1):
        per_rank = []
        for rank in range(world):
            args = dict(batch=32, resize=36, crop=32, world=world, rank=rank)
            dali, _ = epoch("dali", spec(train_set, True, **args), number)
            reference, _ = epoch("torchvision", spec(train_set, True, **args), number)
            assert [b.indices.tolist() for b in dali] == [b.indices.tolist() for b in reference]
            per_rank.append(torch.cat([b.indices for b in dali]))
        seen = torch.cat(per_rank)
        assert sorted(seen.tolist()) == list(range(len(train_set)))  # every index once per epoch


def test_augmentations_survive_resume_and_thread_count(photos: Path) -> None:
    train_set = DATASETS.get("imagefolder")(str(photos), "train")
    kwargs = dict(batch=6, resize=128, crop=112, augment=True)
    full, _ = epoch("dali", spec(train_set, True, **kwargs), 2)
    resumed, _ = epoch("dali", spec(train_set, True, threads=1, **kwargs), 2, start_step=2)
    assert len(resumed) == len(full) - 2
    for a, b in zip(full[2:], resumed):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)
    images, indices = joined(full)
    other, other_indices = joined(epoch("dali", spec(train_set, True, **kwargs), 3)[0])
    plain, plain_indices = joined(epoch("dali", spec(train_set, True, batch=6, resize=128, crop=112), 2)[0])
    first = {int(i): image for i, image in zip(indices, images)}
    assert all(not torch.equal(first[int(i)], image) for i, image in zip(other_indices, other))  # new crops
    assert all(not torch.equal(first[int(i)], image) for i, image in zip(plain_indices, plain))  # really random
    # the reference decoder (the fallback for files DALI must not see) reproduces DALI's random crops
    loader = LOADERS.get("dali")(spec(train_set, True, **kwargs))
    for index in indices[:4].tolist():
        reference, error = loader.reference_image(index, 2)
        assert error is None
        assert_close_images(first[index][None], reference[None])


def test_bad_files_are_skipped_like_torchvision(photos: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "data"
    shutil.copytree(photos / "val", root / "val")
    write_broken_files(root / "val" / "class0")
    val = DATASETS.get("imagefolder")(str(root), "val")
    with caplog.at_level(logging.WARNING, logger="cg_train"):
        dali, dali_skipped = epoch("dali", spec(val, False, batch=4))
    assert "decoding its samples with PIL instead" in caplog.text  # bad_huffman.jpg failed a DALI batch
    reference, reference_skipped = epoch("torchvision", spec(val, False, batch=4))
    assert sorted(dali_skipped) == sorted(reference_skipped)
    assert sorted(Path(s.source).name for s in dali_skipped) == BROKEN
    assert all(val.source(s.index) == s.source for s in dali_skipped)  # the index is the file's, not shifted
    assert [b.indices.tolist() for b in dali] == [b.indices.tolist() for b in reference]
    for ours, theirs in zip(dali, reference):
        assert_close_images(ours.images, theirs.images)


def test_training_run_with_dali_on_cpu(mnist_copy: Path, tmp_path: Path) -> None:
    write_broken_files(mnist_copy / "train" / "4")
    out = tmp_path / "run"
    assert train(mnist_copy, out, "--loader", "dali", "--dali-threads", "2", "--epochs", "1",
                 "--random-augmentations", "--corrupt-fraction", "0.5", "--sample-size", "400") == 0
    skipped = read_csv(out / "skipped.csv")
    assert set(skipped.path.map(lambda p: Path(p).name)) == set(BROKEN)
    assert {"train", "train_sample"} <= set(skipped.phase) <= {"train", "train_sample", "pristine", "corrupt"}
    assert set(skipped[skipped.phase == "train"].epoch) == {0} and set(skipped.epoch) == {0, 1}
    record = pd.read_parquet(out / "corruption.parquet")
    bad = record[record.path.map(lambda p: Path(p).name in BROKEN)]
    assert sorted(bad["index"]) == sorted(skipped["index"].unique())  # indices never shift
    for name in ("pristine", "corrupt", "train_sample", "test"):
        df = read_csv(out / f"{name}.csv")
        assert df.epoch.tolist() == [0, 1] and np.isfinite(df.loss).all(), name
    assert (read_csv(out / "test.csv")["count"] == 100).all()
    assert (read_csv(out / "train_sample.csv")["count"] == 300).all()  # 304 files, 4 unreadable
    steps = read_csv(out / "train.csv")
    assert np.isfinite(steps.loss).all() and set(steps.epoch) == {0}


def test_in_memory_cifar_trains_with_dali(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar", "cifar10")
    val = DATASETS.get("cifar10")(str(tmp_path / "cifar"), "train")
    dali, _ = epoch("dali", spec(val, False, batch=4, resize=32, crop=32))
    reference, _ = epoch("torchvision", spec(val, False, batch=4, resize=32, crop=32))
    for ours, theirs in zip(dali, reference):
        assert torch.equal(ours.indices, theirs.indices)
        assert torch.allclose(ours.images, theirs.images, atol=1e-5)  # 32 -> 32: no resampling at all
    out = tmp_path / "run"
    assert train(tmp_path / "cifar", out, "--dataset", "cifar10", "--loader", "dali", "--epochs", "1",
                 "--random-augmentations", "--batch-size", "2") == 0
    assert read_csv(out / "test.csv")["count"].tolist() == [1, 1]
    assert read_csv(out / "train.csv").epoch.tolist() == [0]


def assert_same_batches(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.observed_labels, b.observed_labels)
        assert torch.equal(a.images, b.images)


def test_reader_pool_feeds_exactly_what_the_serial_read_feeds(photos: Path, tmp_path: Path) -> None:
    """Files read concurrently ahead of the step: the same batches, crops and skipped files as reading
    each file on the training thread, bad files (which make DALI fail a batch and restart) included."""
    root = tmp_path / "data"
    shutil.copytree(photos / "train", root / "train")
    write_broken_files(root / "train" / "class0")
    train_set = DATASETS.get("imagefolder")(str(root), "train")
    kwargs = dict(batch=6, resize=128, crop=112, augment=True)
    serial, serial_skipped = epoch("dali", spec(train_set, True, readers=0, **kwargs), 1)
    pooled, pooled_skipped = epoch("dali", spec(train_set, True, readers=3, **kwargs), 1)
    assert_same_batches(pooled, serial)
    assert sorted(pooled_skipped) == sorted(serial_skipped) and len(serial_skipped) == len(BROKEN)
    resumed, _ = epoch("dali", spec(train_set, True, readers=3, **kwargs), 1, start_step=3)
    assert_same_batches(resumed, serial[3:])


def test_loaders_of_a_run_share_one_pipeline(photos: Path) -> None:
    """Train and eval loaders with one ``shared`` dict hold one DALI pipeline, yield what loaders of
    their own yield, and an epoch left unfinished does not leak its queued batches into another phase."""
    from cg_train.data.loaders.dali import SharedPipeline

    train_set = DATASETS.get("imagefolder")(str(photos), "train")
    val = DATASETS.get("imagefolder")(str(photos), "val")
    kwargs = dict(batch=4, resize=128, crop=112)
    shared: dict = {}
    loaders = {"train": LOADERS.get("dali")(spec(train_set, True, augment=True, shared=shared, **kwargs)),
               "val": LOADERS.get("dali")(spec(val, False, shared=shared, **kwargs)),
               "train_eval": LOADERS.get("dali")(spec(train_set, False, shared=shared, **kwargs))}
    alone = {name: epoch("dali", spec(loader.spec.manifest, loader.spec.train, augment=loader.spec.train,
                                      **kwargs))[0] for name, loader in loaders.items()}
    got = {}
    for name in ("val", "train", "train_eval", "val"):
        loader = loaders[name]
        loader.set_epoch(0)
        if name == "val" and name not in got:  # leave the first val epoch after one batch
            next(iter(loader))
            got[name] = None
            continue
        got[name] = list(loader)
    partial = loaders["train"]
    partial.set_epoch(0)
    batches = iter(partial)
    next(batches)  # left unfinished and still open while another phase runs
    got["val"] = list(loaders["val"])
    for name, batches_alone in alone.items():
        assert_same_batches(got[name], batches_alone)
    pipelines = [v for v in shared.values() if isinstance(v, SharedPipeline)]
    assert len(pipelines) == 1 and pipelines[0].pipe is not None
    with pytest.raises(RuntimeError, match="took the pipeline over"):
        next(batches)


def test_channels_last_output_is_the_same_images_in_nhwc(photos: Path) -> None:
    val = DATASETS.get("imagefolder")(str(photos), "val")
    for name in ("dali", "torchvision"):
        plain, _ = epoch(name, spec(val, False, batch=4))
        nhwc, _ = epoch(name, spec(val, False, batch=4, channels_last=True))
        assert_same_batches(nhwc, plain)
        assert all(b.images.is_contiguous(memory_format=torch.channels_last) for b in nhwc), name
