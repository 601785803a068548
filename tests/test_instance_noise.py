"""Instance-dependent noise: ``cg-train confusions`` against a hand-run softmax, and ``--noise-type instance``."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from cg_train.cli import main
from cg_train.config import NoiseConfig
from cg_train.noise import corrupt_labels
from cg_train.noise.instance import write_confusions
from conftest import accelerate_launch, train

#: a BatchNorm model: the confusions must come from eval mode (running statistics), as recomputed below
ARCH = ["--arch", "cifar_resnet20"]


@pytest.fixture(scope="module")
def confusions(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a 1-epoch clean run's folder, the confusions table of its checkpoint on the same data)."""
    base = tmp_path_factory.mktemp("instance")
    run = base / "clean"
    assert train(mnist_small, run, *ARCH, "--epochs", "1", "--sample-size", "60") == 0
    table = base / "confusions.parquet"
    assert main(["confusions", str(run / "checkpoint.pth.tar"), str(mnist_small), "-o", str(table),
                 "-j", "2", "-b", "64", "--no-progress"]) == 0
    return run, table


def hand_softmax(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, softmax [N, K]) of the checkpoint's model on every training image, in index order, computed
    here with torchvision's transforms and PIL (not the package's loaders)."""
    from cg_train.models import MODELS, build_model

    state = torch.load(run / "checkpoint.pth.tar", map_location="cpu", weights_only=False)
    record = pd.read_parquet(run / "corruption.parquet")
    model = build_model(state["arch"], 10)
    model.load_state_dict(state["state_dict"])
    model.eval()
    spec = MODELS.get(state["arch"])
    transform = T.Compose([T.Resize(spec.resize_size), T.CenterCrop(spec.crop_size), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    images = torch.stack([transform(Image.open(path).convert("RGB")) for path in record.path])
    with torch.no_grad():
        probs = torch.softmax(model(images).double(), dim=1).numpy()
    return record.true_label.to_numpy(), probs


def test_confusions_are_the_top_wrong_class_of_the_checkpoints_softmax(confusions: tuple[Path, Path]) -> None:
    run, path = confusions
    table = pd.read_parquet(path)
    true, probs = hand_softmax(run)
    assert table.columns.tolist() == ["index", "true_label", "top_wrong_class", "p_top_wrong"]
    assert table["index"].tolist() == list(range(300)) and np.array_equal(table.true_label, true)
    others = probs.copy()
    others[np.arange(len(true)), true] = -1.0
    expected = others.argmax(axis=1)
    np.testing.assert_allclose(table.p_top_wrong, others.max(axis=1), rtol=1e-4, atol=1e-6)
    differ = np.flatnonzero(table.top_wrong_class.to_numpy() != expected)
    for i in differ:  # only a tie (within float32 rounding) may pick another class
        assert math.isclose(others[i, table.top_wrong_class[i]], others[i, expected[i]], rel_tol=1e-4)
    assert len(differ) <= 3
    assert (table.top_wrong_class != table.true_label).all()


def test_confusions_under_accelerate_launch_are_the_same_table(confusions: tuple[Path, Path], mnist_small: Path,
                                                              tmp_path: Path) -> None:
    run, path = confusions
    out = tmp_path / "two_processes.parquet"
    accelerate_launch("-m", "cg_train", "confusions", str(run / "checkpoint.pth.tar"), str(mnist_small), "-o",
                      str(out), "-j", "0", "-b", "64", "--no-progress")
    one, two = pd.read_parquet(path), pd.read_parquet(out)
    pd.testing.assert_frame_equal(one.drop(columns="p_top_wrong"), two.drop(columns="p_top_wrong"))
    np.testing.assert_allclose(one.p_top_wrong, two.p_top_wrong, rtol=1e-5)


def synthetic_table(tmp_path: Path, true: np.ndarray, k: int, seed: int = 0) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    top = (true + rng.integers(1, k, size=len(true))) % k
    p = rng.random(len(true)).round(2)  # rounding makes ties, broken by index
    known = true >= 0
    path = tmp_path / "synthetic.parquet"
    write_confusions(str(path), true, np.where(known, top, -1), np.where(known, p, np.nan))
    return path, pd.read_parquet(path)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("pick", ["random", "confusable"])
def test_exact_count_and_unknown_truth_never_chosen(tmp_path: Path, fraction: float, pick: str) -> None:
    true = np.array([-1, 0, 1, 2, -1, 3, 4, 0, 1, -1] * 20, dtype=np.int64)
    path, table = synthetic_table(tmp_path, true, 5)
    options = NoiseConfig(noise_type="instance", confusions=str(path), instance_pick=pick)
    observed, resampled = corrupt_labels(true, 5, fraction, "instance", seed=4, options=options)
    known = true >= 0
    assert resampled.sum() == round(fraction * known.sum())
    assert not resampled[~known].any() and (observed[~known] == -1).all()
    assert np.array_equal(observed[resampled], table.top_wrong_class[resampled])
    assert (observed[resampled] != true[resampled]).all()  # every chosen sample is corrupt
    assert np.array_equal(observed[~resampled], true[~resampled])


def test_confusable_picks_the_highest_p_top_wrong(tmp_path: Path) -> None:
    true = np.array([-1, 0, 1, 2, 3] * 40, dtype=np.int64)
    path, table = synthetic_table(tmp_path, true, 4 + 1, seed=3)
    options = NoiseConfig(noise_type="instance", confusions=str(path), instance_pick="confusable")
    count = round(0.3 * 160)
    # by hand: highest p first, ties to the lower index, unknown truth left out
    ranked = sorted((i for i in range(len(true)) if true[i] >= 0), key=lambda i: (-table.p_top_wrong[i], i))
    expected = np.zeros(len(true), dtype=bool)
    expected[ranked[:count]] = True
    for seed in (0, 1):  # the choice depends on the model only, not on the seed
        observed, resampled = corrupt_labels(true, 5, 0.3, "instance", seed=seed, options=options)
        assert np.array_equal(resampled, expected)
        assert np.array_equal(observed[resampled], table.top_wrong_class[resampled])


def test_random_pick_follows_the_seed(tmp_path: Path) -> None:
    true = np.arange(500, dtype=np.int64) % 10
    path, _ = synthetic_table(tmp_path, true, 10)
    options = NoiseConfig(noise_type="instance", confusions=str(path))
    a = corrupt_labels(true, 10, 0.4, "instance", seed=7, options=options)
    b = corrupt_labels(true, 10, 0.4, "instance", seed=7, options=options)
    c = corrupt_labels(true, 10, 0.4, "instance", seed=8, options=options)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1]) and a[1].sum() == c[1].sum() == 200
    # the same samples as any other noise type of that seed: only their new label differs
    assert np.array_equal(a[1], corrupt_labels(true, 10, 0.4, "flip", seed=7)[1])


def test_a_run_with_instance_noise_trains_on_the_confused_labels(confusions: tuple[Path, Path], mnist_small: Path,
                                                                 tmp_path: Path) -> None:
    from cg_train.cli import parse_train_args
    from cg_train.data.bundle import build_data

    _, path = confusions
    table = pd.read_parquet(path)
    out = tmp_path / "noisy"
    flags = [*ARCH, "--workers", "2", "--epochs", "1", "--sample-size", "60", "--noise-type", "instance",
             "--noise-confusions", str(path), "--corrupt-fraction", "0.3", "--instance-noise-pick", "confusable"]
    assert train(mnist_small, out, *flags) == 0
    record = pd.read_parquet(out / "corruption.parquet")
    chosen = sorted(range(300), key=lambda i: (-table.p_top_wrong[i], i))[:90]
    assert sorted(np.flatnonzero(record.resampled)) == sorted(chosen)
    assert np.array_equal(record.observed_label[record.resampled], table.top_wrong_class[record.resampled])
    assert record.is_corrupt.sum() == 90 and (record.is_corrupt == record.resampled).all()
    assert np.array_equal(record.observed_label[~record.resampled], record.true_label[~record.resampled])
    # what the training loader (2 workers) hands the model is these labels
    cfg, _ = parse_train_args([str(mnist_small), "--output-dir", str(tmp_path / "unused"), *flags])
    data = build_data(cfg, 32, 32, 0, 1, torch.device("cpu"))
    seen = np.full(300, -2)
    data.train_loader.set_epoch(0)
    for batch in data.train_loader:
        seen[batch.indices.numpy()] = batch.observed_labels.numpy()
    assert np.array_equal(seen, record.observed_label)


def test_instance_noise_refuses_bad_input_in_one_line(confusions: tuple[Path, Path], mnist_small: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, path = confusions
    table = pd.read_parquet(path)
    subset = tmp_path / "subset.parquet"
    table.iloc[:-1].to_parquet(subset)
    relabelled = tmp_path / "other_labels.parquet"
    table.assign(true_label=np.roll(table.true_label, 1)).to_parquet(relabelled)
    cases = [
        (["--noise-type", "instance"], "needs --noise-confusions"),
        (["--noise-type", "instance", "--noise-confusions", str(tmp_path / "missing.parquet")], "does not exist"),
        (["--noise-type", "instance", "--noise-confusions", str(subset)], "another dataset or subset"),
        (["--noise-type", "instance", "--noise-confusions", str(relabelled)], "another dataset or subset"),
        (["--noise-type", "symmetric", "--noise-confusions", str(path)], "--noise-type instance only"),
        (["--noise-type", "flip", "--instance-noise-pick", "confusable"], "--noise-type instance only"),
    ]
    capsys.readouterr()
    for extra, message in cases:
        out = tmp_path / "run"
        assert train(mnist_small, out, "--corrupt-fraction", "0.2", *extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "noise" in err[0], (extra, err)
        assert not out.exists()  # refused before anything was written
