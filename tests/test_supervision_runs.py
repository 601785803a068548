"""Teacher -> student runs of every supervision method on real MNIST JPEGs, on 1 and 2 processes,
and SIGTERM mid-epoch + resume for the methods that keep per-sample state."""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cg_train.supervision import METHODS
from cg_train.tables import shard_bounds

from conftest import (FAST, REPO, accelerate_launch, assert_same_csvs, assert_same_up_to_rounding, make_subset,
                      read_csv, train)
from supervision_probe import student_args
from test_preemption import sigterm_after_rows, wait_for_train_rows

STUDENT = ["--epochs", "1", "--corrupt-fraction", "0.4", "--sample-size", "20", "--seed", "5"]


def train_teacher(data: Path, out: Path) -> Path:
    """One epoch of simple_cnn with seed 000's p_smoothing table (the Filter-KD teacher) on ``data``."""
    assert train(data, out, "--epochs", "1", "--p-smoothing", "0.3", "--sample-size", "20") == 0
    return out


@pytest.fixture(scope="module")
def teacher(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_teacher(mnist_small, tmp_path_factory.mktemp("teacher") / "run")


@pytest.fixture(scope="module")
def mnist_tiny(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 train / 50 val of the same JPEGs (10 / 5 per class): 4 batches of 32, the last a partial one."""
    return make_subset(mnist_small, tmp_path_factory.mktemp("tiny") / "mnist", 10, 5)


@pytest.fixture(scope="module")
def tiny_teacher(mnist_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``teacher`` recipe on ``mnist_tiny`` (a teacher's tables are per sample of its own dataset)."""
    return train_teacher(mnist_tiny, tmp_path_factory.mktemp("tiny_teacher") / "run")


def test_ce_gives_the_same_csvs_as_the_code_before_the_supervision_layer(mnist_small: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # the pre-change trainer line, F.cross_entropy(logits.float(), targets), is what a Trainer without
    # supervision runs; --method ce through the registry must write bit-identical CSVs
    run_module = importlib.import_module("cg_train.engine.run")  # the module, not engine's run() function

    assert train(mnist_small, tmp_path / "ce", *STUDENT) == 0

    class NoSupervision(run_module.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args[:7])
            assert self.supervision is None

    monkeypatch.setattr(run_module, "Trainer", NoSupervision)
    assert train(mnist_small, tmp_path / "before", *STUDENT) == 0
    assert_same_csvs(tmp_path / "before", tmp_path / "ce")


def test_every_method_on_one_and_two_processes_gives_the_same_results(tiny_teacher: Path, mnist_tiny: Path,
                                                                      tmp_path: Path) -> None:
    # 18 student runs: on 100 samples (not 300) they cost a third; the 2 ranks still split uneven batches
    # (the feature methods have their own 1-vs-2-process runs: test_feature_kd_runs.py)
    methods = [name for name in METHODS.names() if not METHODS.get(name).is_feature_method()]
    for method in methods:
        assert train(mnist_tiny, tmp_path / "one" / method, *STUDENT, *student_args(method, str(tiny_teacher))) == 0
    accelerate_launch("tests/supervision_probe.py", str(mnist_tiny), str(tiny_teacher), str(tmp_path / "two"),
                      *methods, "--", *FAST, *STUDENT)
    n = len(np.load(tiny_teacher / "p_smoothing.npy"))
    for method in methods:
        one, two = tmp_path / "one" / method, tmp_path / "two" / method
        assert_same_up_to_rounding(one, two)
        if method.startswith("sl"):  # the learned labels, and each process wrote only its own rows
            np.testing.assert_allclose(np.load(two / "labels.npy"), np.load(one / "labels.npy"), atol=1e-4)
            for rank in range(2):
                shard = sorted((two / "tables/labels").glob(f"gen*.rank{rank:05d}-of-00002.rows.npy"))[-1]
                assert len(np.load(shard)) == len(range(*shard_bounds(n, 2, rank))) <= -(-n // 2)


@pytest.mark.parametrize("method, epoch", [("sl_kd", 0), ("self_kd", 1)])
def test_sigterm_mid_epoch_and_resume_give_identical_csvs_and_tables(teacher: Path, mnist_small: Path,
                                                                     tmp_path: Path, method: str, epoch: int) -> None:
    args = [*FAST, "--epochs", "2", "--corrupt-fraction", "0.4", "--sample-size", "10", "--batch-size", "20",
            "--print-freq", "1", "--p-smoothing", "0.3", *student_args(method, str(teacher))]
    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *args) == 0

    stopped = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "cg_train", str(mnist_small), "--output-dir", str(stopped), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    wait_for_train_rows(stopped, epoch=epoch, rows=3, proc=proc)
    os.kill(proc.pid, signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    state = torch.load(stopped / "checkpoint.pth.tar", weights_only=False, map_location="cpu")["train_state"]
    assert state["epoch"] == epoch and 0 < state["step"] < 15, state  # mid-epoch (300 samples, batch 20)

    assert train(mnist_small, stopped, *args, "--resume") == 0
    assert_same_csvs(reference, stopped)
    tables = ["p_smoothing.npy", "p_smoothing_best.npy"] + (["labels.npy"] if method.startswith("sl") else [])
    for name in tables:
        np.testing.assert_array_equal(np.load(stopped / name), np.load(reference / name), err_msg=name)
    assert not pd.isna(read_csv(stopped / "test.csv").acc1).any()


def test_sl_stops_running_its_teacher_once_every_sample_has_a_label(tiny_teacher: Path, mnist_tiny: Path,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Epoch 0 gives every sample its initial label from the teacher; from epoch 1 on the teacher is not run,
    also after a resume, and the run is bit-identical to one that runs it at every step (its output would not
    be used)."""
    from cg_train.supervision import Supervision

    calls: list[int] = []

    def count_teacher(module: torch.nn.Module, args: tuple) -> None:
        if type(module).__name__ == "SimpleCNN" and not any(p.requires_grad for p in module.parameters()):
            calls.append(len(args[0]))

    args = ["--method", "sl", "--teacher", str(tiny_teacher / "model_best.pth.tar"), "--epochs", "3",
            "--batch-size", "32", "--sample-size", "20", "--seed", "5", "--print-freq", "1"]
    resumed = tmp_path / "resumed"  # SIGTERMed in epoch 1 (stops at its end at the latest), resumed for epoch 2
    cmd = [sys.executable, "-m", "cg_train", str(mnist_tiny), "--output-dir", str(resumed), *FAST, *args]
    returncode, err = sigterm_after_rows(cmd, resumed, rows=1, epoch=1)
    assert returncode == 128 + signal.SIGTERM, err
    assert torch.load(resumed / "checkpoint.pth.tar", weights_only=False)["train_state"]["epoch"] < 3
    handle = torch.nn.modules.module.register_module_forward_pre_hook(count_teacher)
    try:
        assert train(mnist_tiny, resumed, *args, "--resume") == 0  # the checkpoint's labels are complete
        after_resume = len(calls)
        assert train(mnist_tiny, tmp_path / "skipping", *args) == 0
        skipping = len(calls) - after_resume
        monkeypatch.setattr(Supervision, "_labels_complete", lambda self: False)
        assert train(mnist_tiny, tmp_path / "every_step", *args) == 0
        every_step = len(calls) - after_resume - skipping
    finally:
        handle.remove()
    # 100 samples / 32: 4 steps per epoch; a fresh run also evaluates its teacher once on the 50 test samples
    # (2 batches) before training, a resumed one reads that result from supervision_checks.json
    assert (after_resume, skipping, every_step) == (0, 2 + 4, 2 + 12)
    assert_same_csvs(tmp_path / "every_step", tmp_path / "skipping")
    assert_same_csvs(resumed, tmp_path / "skipping")
    for run in ("every_step", "resumed"):
        np.testing.assert_array_equal(np.load(tmp_path / run / "labels.npy"),
                                      np.load(tmp_path / "skipping" / "labels.npy"))
