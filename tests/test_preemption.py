"""SIGTERM mid-epoch (what SLURM preemption and `kill -TERM` send): checkpoint at a step boundary, exact resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import FAST, REPO, assert_same_csvs, read_csv, train


def wait_for_train_rows(out: Path, epoch: int, rows: int, proc: subprocess.Popen) -> None:
    """Until train.csv has ``rows`` rows of ``epoch`` (the run must still be going)."""
    while True:
        path = out / "train.csv"
        done = read_csv(path) if path.exists() else pd.DataFrame({"epoch": []})
        if (done.epoch == epoch).sum() >= rows:
            return
        assert proc.poll() is None, f"the run ended before it could be signalled:\n{proc.communicate()[1]}"
        time.sleep(0.02)


def reference_and_stopped_run(data: Path, tmp_path: Path, args: list[str]) -> tuple[Path, Path, int, str]:
    """An uninterrupted run in ``reference``, and the same run in ``stopped`` SIGTERMed a few steps into
    epoch 0 (3 train.csv rows: needs --print-freq 1); (reference, stopped, return code, stderr)."""
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    assert train(data, reference, *args) == 0
    cmd = [sys.executable, "-m", "cg_train", str(data), "--output-dir", str(stopped), *FAST, *args]
    return (reference, stopped, *sigterm_after_rows(cmd, stopped, rows=3))


def sigterm_after_rows(cmd: list[str], out: Path, rows: int) -> tuple[int, str]:
    """Run ``cmd``, SIGTERM it once train.csv has ``rows`` rows of epoch 0; (return code, stderr)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    wait_for_train_rows(out, epoch=0, rows=rows, proc=proc)
    # frozen while the signal is queued, so it lands a few steps into epoch 0, whatever the machine's speed
    os.kill(proc.pid, signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


@pytest.mark.parametrize("optimizer, accum", [("SGD", 2), ("RM3", 1)], ids=["sgd-grad-accum", "rm3"])
def test_sigterm_mid_epoch_saves_a_checkpoint_and_resumes_to_identical_csvs(mnist_small: Path, tmp_path: Path,
                                                                             optimizer: str, accum: int) -> None:
    # 300 samples, batch 10: 30 steps per epoch; with accumulation an optimizer step every 2 (a stop waits for
    # the group's end); RM3's ring of the last 3 gradients must come back as it was, mid-epoch
    args = ["--epochs", "2", "--corrupt-fraction", "0.5", "--sample-size", "50", "--print-freq", "1",
            "--seed", "3", "--batch-size", "10", "--grad-accum-steps", str(accum), "--optimizer", optimizer,
            "--momentum", "0.9" if optimizer == "SGD" else "0"]
    reference, stopped, returncode, err = reference_and_stopped_run(mnist_small, tmp_path, args)

    assert returncode == 128 + signal.SIGTERM, err
    assert "cg-train: stopped by SIGTERM at epoch 0, step" in err and "plus --resume" in err, err
    ckpt = torch.load(stopped / "checkpoint.pth.tar", weights_only=False, map_location="cpu")
    state = ckpt["train_state"]
    assert ckpt["stopped_by"] == ["SIGTERM"]
    assert state["epoch"] == 0 and 3 <= state["step"] < 30 and state["step"] % accum == 0, state  # mid-epoch, whole group
    assert read_csv(stopped / "train.csv").step.tolist() == list(range(state["step"]))  # rows up to the checkpoint
    if optimizer == "RM3":  # the ring is in the checkpoint, with as many entries as steps taken (epoch 0 only)
        counts = {entry["count"] for entry in ckpt["optimizer"]["state"].values()}
        assert counts == {state["step"]}, counts

    assert train(mnist_small, stopped, *args, "--resume") == 0
    assert_same_csvs(reference, stopped)
    assert "resumed from" in (stopped / "log.txt").read_text()
