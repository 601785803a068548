"""Issue 24: what a run does not use costs its training step nothing, and the lean step computes what the
general one computes.

The inactive parts are checked by what runs (calls counted on the real objects of a real run), and the
lean step (cross-entropy inline, torch's backward/step without accelerate's wrappers, host-side count and
stop flag on one process) against the general one (the method through ``Supervision``, accelerate's
wrappers): bit-identical CSVs and path logs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from accelerate.optimizer import AcceleratedOptimizer

from cg_train.engine import fast_path
from cg_train.engine.trainer import Trainer
from cg_train.recorders import Recorder, Recorders
from cg_train.supervision import Supervision
from conftest import assert_same_csvs, train
from test_preemption import read_paths

RUN = ["--epochs", "2", "--corrupt-fraction", "0.3", "--sample-size", "20", "--print-freq", "1", "--seed", "4",
       "--paths", "--workers", "2"]


class PerStep(Recorder):
    def __init__(self) -> None:
        self.batches: list[int] = []

    def on_train_batch(self, ctx: Any, epoch: int, step: int, batch: Any, logits: Any, losses: Any) -> None:
        self.batches.append(step)


class PerEpoch(Recorder):
    def on_train_epoch_end(self, ctx: Any, epoch: int) -> None: ...


def test_only_recorders_with_a_per_step_hook_are_called_per_step() -> None:
    per_step, per_epoch = PerStep(), PerEpoch()
    recorders = Recorders({"a": per_epoch, "b": per_step})
    assert recorders.per_train_batch == [per_step]
    assert recorders.per_train_log == [] and recorders.per_eval_batch == []
    batch = type("B", (), {"indices": torch.arange(3)})()
    recorders.on_train_batch(None, 0, 7, batch, None, None)  # type: ignore[arg-type]
    assert per_step.batches == [7]


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_plain_cross_entropy_run_calls_no_method_and_no_idle_recorder(
        mnist_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainers: list[Trainer] = []
    original_init = Trainer.__init__

    def init(self: Trainer, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        trainers.append(self)

    monkeypatch.setattr(Trainer, "__init__", init)
    supervision_calls = count_calls(monkeypatch, Supervision, "__call__")
    wrapper_steps = count_calls(monkeypatch, AcceleratedOptimizer, "step")
    assert train(mnist_small, tmp_path / "ce", *RUN) == 0
    (trainer,) = trainers
    assert trainer.supervision is None and trainer.augment is None
    assert [type(r).__name__ for r in trainer.recorders.per_train_batch] == ["PathRecorder"]
    assert [type(r).__name__ for r in trainer.recorders.per_train_log] == ["EpochCsvRecorder"]
    assert "supervision" in trainer.recorders.recorders  # its checkpoint state still rides along
    assert supervision_calls == [] and wrapper_steps == []
    # a method that is not plain cross-entropy is called once per step
    assert train(mnist_small, tmp_path / "ls", *RUN, "--method", "ls", "--epochs", "1") == 0
    assert trainers[-1].supervision is not None and len(supervision_calls) == 10  # 300 samples, batch 32


@pytest.mark.parametrize("extra", [[], ["--grad-accum-steps", "2", "--p-smoothing", "0.1", "--seed002-logs"]])
def test_the_lean_step_is_bit_identical_to_the_general_one(mnist_small: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, extra: list[str]) -> None:
    """Inline cross-entropy and torch's own backward/step vs the method through Supervision and accelerate's
    wrappers (the general path: every method but plain cross-entropy, fp16's scaler, DeepSpeed)."""
    lean = tmp_path / "lean"
    assert train(mnist_small, lean, *RUN, *extra) == 0
    general = tmp_path / "general"
    with monkeypatch.context() as patch:
        patch.setattr(Supervision, "active", property(lambda self: True))
        patch.setattr(fast_path, "step_calls", lambda accelerator, optimizer: (
            accelerator.backward, optimizer.step, lambda: optimizer.zero_grad(set_to_none=True)))
        calls = count_calls(patch, Supervision, "__call__")
        assert train(mnist_small, general, *RUN, *extra) == 0
        assert len(calls) == 20
    assert_same_csvs(lean, general)
    pd.testing.assert_frame_equal(read_paths(lean), read_paths(general), check_exact=True)
    for name in ("p_smoothing.npy", "train_log.csv") if extra else ():
        assert (lean / name).read_bytes() == (general / name).read_bytes(), name
