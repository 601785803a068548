"""Resume exactness beyond the plain SGD run: AMP state, plan-changing resumes refused, no host sync per step.

A stop is requested the way a cluster does it, with a real signal through the real handler, sent by the
process to itself at a chosen step (deterministic on any machine) rather than by a timer.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from cg_train.engine.trainer import Trainer
from conftest import FAST, accelerate_launch, assert_same_csvs, make_subset, read_csv, train

RUN = ["--epochs", "1", "--corrupt-fraction", "0.5", "--sample-size", "20", "--print-freq", "1", "--seed", "2",
       "--batch-size", "10", "--lr-scheduler", "step"]


def signal_at_step(monkeypatch: pytest.MonkeyPatch, step: int, sig: int = signal.SIGUSR2) -> None:
    """Send ``sig`` to this process just before training step ``step`` (submitit's time-limit warning)."""
    original = Trainer.train_step

    def train_step(self: Trainer, batch: Any, at: int, total: int) -> Any:
        if at == step and not self.stop.requested:
            os.kill(os.getpid(), sig)
        return original(self, batch, at, total)

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="fp16 autocast and its GradScaler need a GPU"))])
def test_mixed_precision_run_stopped_mid_epoch_resumes_exactly(mnist_small: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    args = [*RUN, "--mixed-precision", precision]
    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *args) == 0
    full = tmp_path / "fp32"
    assert train(mnist_small, full, *RUN, "--mixed-precision", "no") == 0
    assert not read_csv(full / "train.csv").loss.equals(read_csv(reference / "train.csv").loss)  # autocast is on

    stopped = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        signal_at_step(patch, 13)
        assert train(mnist_small, stopped, *args) == 128 + signal.SIGUSR2
    ckpt = torch.load(stopped / "checkpoint.pth.tar", weights_only=False, map_location="cpu")
    assert ckpt["train_state"]["step"] in range(14, 18), ckpt["train_state"]  # polled every 4 steps
    if precision == "fp16":  # the loss scale and growth tracker travel with the checkpoint
        assert ckpt["grad_scaler"]["_growth_tracker"] == ckpt["train_state"]["step"], ckpt["grad_scaler"]
    else:
        assert ckpt["grad_scaler"] is None
    assert train(mnist_small, stopped, *args, "--resume") == 0
    assert_same_csvs(reference, stopped)


def test_launcher_mixed_precision_is_used_and_a_conflict_is_refused(mnist_small: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert train(mnist_small, tmp_path / "conflict", *RUN, "--mixed-precision", "no") == 2
    assert ("--mixed-precision (train.mixed_precision) is no but accelerate launch was given --mixed_precision "
            "bf16") in capsys.readouterr().err
    assert not (tmp_path / "conflict").exists()
    out = tmp_path / "launcher"
    assert train(mnist_small, out, *RUN, "--epochs", "0") == 0
    assert "mixed_precision: bf16" in (out / "config.yaml").read_text()


def test_a_resume_that_changes_the_plan_is_refused_before_anything_is_written(
        mnist_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert train(mnist_small, out, *RUN) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert train(mnist_small, out, *RUN, "--batch-size", "20", "--random-augmentations", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ("--batch-size (data.batch_size) 10 -> 20; --random-augmentations "
                                     "(data.random_augmentations) False -> True;") in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # keys that may change, and a registry name in another spelling (stored as registered: simple_cnn)
    assert train(mnist_small, out, *RUN, "--arch", "Simple_CNN", "--print-freq", "5", "--workers", "1",
                 "--no-keep-freed-memory", "--epochs", "2", "--resume") == 0
    assert read_csv(out / "test.csv").epoch.tolist() == [0, 1, 2]


def test_a_training_step_does_not_synchronise_with_the_device(mnist_small: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """No value read back to the host and no tensor built from Python values inside a training step.

    On a GPU either one waits for the queued forward pass (``torch.tensor([...], device="cuda")`` is a
    pageable, blocking copy). Checked structurally here, as CPU tensors never wait.
    """
    calls: list[str] = []
    inside = [False]

    def counting(name: str, original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if inside[0]:
                calls.append(name)
            return original(*args, **kwargs)
        return wrapper

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "tensor", counting("torch.tensor", torch.tensor))
    original = Trainer.train_step

    def train_step(self: Trainer, *args: Any) -> Any:
        inside[0] = True
        try:
            return original(self, *args)
        finally:
            inside[0] = False

    monkeypatch.setattr(Trainer, "train_step", train_step)
    assert train(mnist_small, tmp_path / "run", *RUN, "--grad-accum-steps", "2") == 0
    assert read_csv(tmp_path / "run" / "train.csv").step.tolist() == list(range(30))  # the steps did run
    assert calls == []


BN_RUN = ["--arch", "resnet18", "--image-size", "32", "--epochs", "1", "--sample-size", "20", "--print-freq", "1",
          "--batch-size", "20", "--seed", "9", "--corrupt-fraction", "0.2"]


def test_default_resnet18_with_batchnorm_stopped_mid_epoch_resumes_exactly(
        mnist_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default model end to end: BatchNorm's running statistics must come back with the checkpoint."""
    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *BN_RUN) == 0
    stopped = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        signal_at_step(patch, 5, signal.SIGTERM)
        assert train(mnist_small, stopped, *BN_RUN) == 128 + signal.SIGTERM
    assert torch.load(stopped / "checkpoint.pth.tar", weights_only=False)["train_state"]["step"] in range(6, 10)
    assert train(mnist_small, stopped, *BN_RUN, "--resume") == 0
    assert_same_csvs(reference, stopped)


@pytest.mark.slow
def test_default_resnet18_on_two_processes_and_a_resume_on_another_count_is_refused(
        mnist_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 30 training images (2 steps of 20 and 10, split over the ranks), not 300: the DDP steps of an 11M-parameter
    # model cost CPU and check nothing more; the 100 test images are all evaluated, twice
    data = make_subset(mnist_small, tmp_path / "data", 3, 10)
    out = tmp_path / "two"
    accelerate_launch("-m", "cg_train", str(data), "--output-dir", str(out), *FAST, *BN_RUN)
    assert "2 process(es) on cpu" in (out / "log.txt").read_text()
    assert read_csv(out / "train.csv").step.tolist() == [0, 1]
    test = read_csv(out / "test.csv")
    assert test.epoch.tolist() == [0, 1] and test["count"].tolist() == [100, 100] and test.loss.notna().all()
    capsys.readouterr()
    assert train(data, out, *BN_RUN, "--epochs", "2", "--resume") == 2
    assert "number of processes 2 -> 1 (the model has BatchNorm)" in capsys.readouterr().err
