"""Whole training runs on real MNIST JPEGs: seed 004's CSVs, the corruption record, resume, bad files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, REPO, assert_same_csvs, read_csv, train

EVAL_CSVS = ("pristine", "corrupt", "train_sample", "test")


def test_seed_004_csvs_and_corruption_record(mnist_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(mnist_small, out, "--epochs", "2", "--corrupt-fraction", "0.5", "--sample-size", "50",
                 "--print-freq", "2") == 0
    for name in EVAL_CSVS:
        df = read_csv(out / f"{name}.csv")
        assert list(df.columns) == ["epoch", "count", "loss", "acc1", "acc5"]
        assert df.epoch.tolist() == [0, 1, 2]  # before each epoch and once after the last
        assert (df["count"] == (100 if name == "test" else 50)).all()
        assert df[["acc1", "acc5"]].stack().between(0, 100).all() and (df.acc5 >= df.acc1).all()
    steps = read_csv(out / "train.csv")
    assert list(steps.columns) == ["epoch", "step", "count", "loss"]
    # 300 samples / batch 32 = 10 steps per epoch, logged every 2nd step
    assert steps.groupby("epoch").step.apply(list).tolist() == [[0, 2, 4, 6, 8]] * 2
    assert (steps["count"] == 32).all() and np.isfinite(steps.loss).all()

    record = pd.read_parquet(out / "corruption.parquet")
    assert list(record.columns[:6]) == ["index", "path", "true_label", "observed_label", "is_corrupt", "resampled"]
    assert len(record) == 300 and record.resampled.sum() == 150 and record["index"].tolist() == list(range(300))
    assert (record.is_corrupt == (record.observed_label != record.true_label)).all()
    assert (record.true_label == record.path.map(lambda p: int(Path(p).parent.name))).all()
    assert record.in_pristine.sum() == record.in_corrupt.sum() == record.in_train_sample.sum() == 50
    assert not record[record.in_pristine].is_corrupt.any() and record[record.in_corrupt].is_corrupt.all()

    for name in ("checkpoint.pth.tar", "model_best.pth.tar", "initial_state.pth.tar", "log.txt"):
        assert (out / name).is_file(), name
    saved = OmegaConf.load(out / "config.yaml")
    assert saved.noise.corrupt_fraction == 0.5 and saved.meta.world_size == 1
    assert saved.meta.versions.torch == torch.__version__ and "commit" in saved.meta.git
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["train_state"]["evaluated_epoch"] == 2


def test_killed_run_resumes_to_the_same_csvs(mnist_small: Path, tmp_path: Path) -> None:
    args = ["--epochs", "3", "--corrupt-fraction", "0.5", "--sample-size", "50", "--print-freq", "1", "--seed", "7"]
    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *args) == 0

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cg_train", str(mnist_small), "--output-dir", str(killed), *FAST, *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # kill it in the middle of epoch 1's training, after the checkpoint that follows epoch 1's evaluation
    while time.time() < deadline:
        train_rows = read_csv(killed / "train.csv") if (killed / "train.csv").exists() else pd.DataFrame()
        if len(train_rows) and (train_rows.epoch == 1).sum() >= 3:
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (read_csv(killed / "pristine.csv").epoch.max()) < 3  # it really was cut short

    assert train(mnist_small, killed, *args, "--resume") == 0
    assert_same_csvs(reference, killed)


def test_resume_with_more_epochs_continues_without_duplicates(mnist_small: Path, tmp_path: Path) -> None:
    args = ["--corrupt-fraction", "0.3", "--sample-size", "40", "--lr-scheduler", "constant"]
    assert train(mnist_small, tmp_path / "two", "--epochs", "2", *args) == 0
    assert train(mnist_small, tmp_path / "one", "--epochs", "1", *args) == 0
    assert train(mnist_small, tmp_path / "one", "--epochs", "2", *args, "--resume") == 0
    assert_same_csvs(tmp_path / "two", tmp_path / "one")
    # resuming a finished run adds nothing
    assert train(mnist_small, tmp_path / "one", "--epochs", "2", *args, "--resume") == 0
    assert_same_csvs(tmp_path / "two", tmp_path / "one")


def test_existing_run_is_never_overwritten(mnist_small: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert train(mnist_small, out, "--epochs", "1") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert train(mnist_small, out, "--epochs", "1") == 2
    assert "already holds a run: add --resume" in capsys.readouterr().err
    assert train(mnist_small, out, "--epochs", "1", "--corrupt-fraction", "0.2", "--resume") == 2
    assert "--corrupt-fraction (noise.corrupt_fraction) 0.0 -> 0.2" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_unreadable_images_are_skipped_counted_and_reported(mnist_copy: Path, tmp_path: Path) -> None:
    good = next((mnist_copy / "train" / "3").iterdir()).read_bytes()
    (mnist_copy / "train" / "3" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (mnist_copy / "train" / "4" / "notes.jpg").write_text("not an image")
    (mnist_copy / "val" / "5" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "run"
    assert train(mnist_copy, out, "--epochs", "1", "--sample-size", "400") == 0
    skipped = read_csv(out / "skipped.csv")
    assert list(skipped.columns) == ["epoch", "phase", "index", "path", "error"]
    train_skips = skipped[(skipped.phase == "train")]
    assert sorted(Path(p).name for p in train_skips.path) == ["notes.jpg", "truncated.jpg"]
    assert set(skipped[skipped.phase == "test"].path.map(lambda p: Path(p).name)) == {"empty.jpg"}
    assert set(skipped.epoch) == {0, 1}
    test = read_csv(out / "test.csv")
    assert (test["count"] == 100).all()  # 101 files, one unreadable
    sample = read_csv(out / "train_sample.csv")
    assert (sample["count"] == 300).all()  # 302 files, two unreadable
    record = pd.read_parquet(out / "corruption.parquet")
    bad = record[record.path.str.endswith(("truncated.jpg", "notes.jpg"))]
    assert sorted(bad["index"]) == sorted(train_skips["index"].unique())  # indices never shift
