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

from conftest import CPU_ENV, FAST, REPO, accelerate_command, accelerate_launch, assert_same_csvs, read_csv, train


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


def sigterm_after_rows(cmd: list[str], out: Path, rows: int, epoch: int = 0) -> tuple[int, str]:
    """Run ``cmd``, SIGTERM it once train.csv has ``rows`` rows of ``epoch``; (return code, stderr)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    wait_for_train_rows(out, epoch=epoch, rows=rows, proc=proc)
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


def descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return children + [d for c in children for d in descendants(c)]


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """What SLURM does on preemption: ``sig`` to every process of the job step, DataLoader workers included.

    The run was started with ``start_new_session=True`` (its own process group); process groups below it
    (torch's elastic agent starts each rank in a new session) are signalled too, as SLURM signals every
    process of the step. Everything is frozen while the signal is queued, so it lands a few steps into
    the epoch whatever the machine's speed.
    """
    groups = [os.getpgid(proc.pid)] + [pid for pid in descendants(proc.pid) if os.getpgid(pid) == pid]
    for each in (signal.SIGSTOP, sig, signal.SIGCONT):
        for group in groups:
            os.killpg(group, each)


def read_paths(out: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out / "paths")
    return frame.sort_values(["epoch", "step", "rank", "index"]).reset_index(drop=True)


@pytest.mark.parametrize("loader", ["torchvision", pytest.param("dali", marks=pytest.mark.slow)])
def test_sigterm_to_the_process_group_with_workers_stops_at_a_step_and_resumes_exactly(
        mnist_small: Path, tmp_path: Path, loader: str) -> None:
    """`kill -TERM -PGID` of a run with --workers 2: the workers must not die of it, the main process decides."""
    args = ["--epochs", "1", "--corrupt-fraction", "0.5", "--sample-size", "20", "--print-freq", "1", "--seed", "4",
            "--batch-size", "10", "--loader", loader, "--paths", "--paths-topk", "3"]
    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *args) == 0  # --workers 0: the plan does not depend on the workers

    stopped = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "cg_train", str(mnist_small), "--output-dir", str(stopped), *FAST, *args,
           "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for_train_rows(stopped, epoch=0, rows=3, proc=proc)
    signal_group(proc, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)

    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "cg-train: stopped by SIGTERM at epoch 0, step" in err and "Traceback" not in err, err
    state = torch.load(stopped / "checkpoint.pth.tar", weights_only=False, map_location="cpu")["train_state"]
    assert state["epoch"] == 0 and 3 <= state["step"] < 30, state
    assert train(mnist_small, stopped, *args, "--workers", "2", "--resume") == 0
    assert_same_csvs(reference, stopped)
    pd.testing.assert_frame_equal(read_paths(stopped), read_paths(reference))


@pytest.mark.slow
def test_sigterm_to_the_process_group_of_accelerate_launch_checkpoints_and_resumes_exactly(
        mnist_150: Path, tmp_path: Path) -> None:
    """Launcher, ranks and their DataLoader workers all get SIGTERM (the agent forwards it once more): the ranks
    still checkpoint within the agent's grace period, and no worker dies of it."""
    args = [str(mnist_150), *FAST, "--epochs", "1", "--corrupt-fraction", "0.5", "--sample-size", "20",
            "--print-freq", "1", "--seed", "6", "--batch-size", "10", "--workers", "1", "--paths", "--paths-topk", "3"]
    reference = tmp_path / "reference"
    accelerate_launch("-m", "cg_train", *args, "--output-dir", str(reference))

    stopped = tmp_path / "stopped"
    cmd = accelerate_command("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
                             "no", "--dynamo_backend", "no", "-m", "cg_train", *args, "--output-dir", str(stopped))
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **CPU_ENV}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_train_rows(stopped, epoch=0, rows=3, proc=proc)
    signal_group(proc, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)

    # the launcher re-raises the signal as torch's SignalException (exit status 1) once its ranks have ended
    assert proc.returncode != 0 and "cg-train: stopped by SIGTERM at epoch 0, step" in err, err
    assert "forcefully exiting" not in err, err  # no rank outlived the grace period
    ckpt = torch.load(stopped / "checkpoint.pth.tar", weights_only=False, map_location="cpu")
    assert len(ckpt["ranks"]) == 2 and ckpt["stopped_by"] == ["SIGTERM"], ckpt["stopped_by"]
    assert ckpt["train_state"]["epoch"] == 0 and 3 <= ckpt["train_state"]["step"] < 15, ckpt["train_state"]
    accelerate_launch("-m", "cg_train", *args, "--output-dir", str(stopped), "--resume")
    assert_same_csvs(reference, stopped)
    pd.testing.assert_frame_equal(read_paths(stopped), read_paths(reference))
