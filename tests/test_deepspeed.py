"""DeepSpeed ZeRO-2 for real on 2 CPU processes (gloo, DeepSpeed's CPU accelerator) through accelerate.

`ACCELERATE_USE_CPU=true` would silently drop DeepSpeed, so these runs use launch/accelerate/cpu.yaml
and `--deepspeed`, and every test checks that the model really trained inside a DeepSpeedEngine.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import (FAST, REPO, accelerate_command, assert_same_csvs, assert_same_up_to_rounding, read_csv,
                      train)
from test_preemption import wait_for_train_rows

pytestmark = pytest.mark.xdist_group("deepspeed")  # one worker: the module fixture runs once
pytest.importorskip("deepspeed", reason="DeepSpeed is the optional extra cg-train[deepspeed] (make test installs it)")

# 150 samples (mnist_150), batch 10: 15 steps per epoch, so a signal lands mid-epoch
ARGS = ["--epochs", "2", "--corrupt-fraction", "0.5", "--sample-size", "50", "--print-freq", "1",
        "--batch-size", "10", "--seed", "5"]
ZERO2 = ["--deepspeed", str(REPO / "launch" / "deepspeed" / "zero2.json")]
ENGINE = "2 process(es) on cpu, DeepSpeedEngine (ZeRO stage 2)"


def start(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = accelerate_command("--config_file", str(REPO / "launch" / "accelerate" / "cpu.yaml"), "-m", "cg_train",
                             str(data), "--output-dir", str(out), *FAST, *ARGS, *ZERO2, *extra)
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def zero2_run(mnist_150: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zero2") / "run"
    finish(start(mnist_150, out))
    assert ENGINE in (out / "log.txt").read_text()
    return out


def test_zero2_on_two_processes_matches_one_process(zero2_run: Path, mnist_150: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    assert train(mnist_150, single, *ARGS) == 0
    assert_same_up_to_rounding(single, zero2_run)
    ckpt = torch.load(zero2_run / "checkpoint.pth.tar", weights_only=False, map_location="cpu")
    assert ckpt["optimizer"] is None and len(ckpt["ranks"]) == 2  # each rank's ZeRO shard, kept per rank
    assert all("base_optimizer_state" in rank["optimizer"] for rank in ckpt["ranks"])


def worker_pids(launcher: subprocess.Popen) -> list[int]:
    """The training processes under `accelerate launch` (its grandchildren through torchrun's agent)."""
    def children(pid: int) -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []
    found = children(launcher.pid)
    while found and not any("cg_train" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                            for p in found):
        found = [c for p in found for c in children(p)]
    return found


def test_zero2_sigterm_mid_epoch_resumes_exactly(zero2_run: Path, mnist_150: Path, tmp_path: Path) -> None:
    out = tmp_path / "stopped"
    proc = start(mnist_150, out)
    wait_for_train_rows(out, epoch=0, rows=3, proc=proc)
    workers = worker_pids(proc)
    assert len(workers) == 2, workers
    for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGCONT):  # as scancel signals every task of a step
        for pid in workers:
            os.kill(pid, sig)
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode != 0 and "stopped by SIGTERM at epoch 0, step" in output, output[-4000:]
    state = torch.load(out / "checkpoint.pth.tar", weights_only=False, map_location="cpu")["train_state"]
    assert state["epoch"] == 0 and 0 < state["step"] < 15, state
    assert read_csv(out / "train.csv").step.tolist() == list(range(state["step"]))

    finish(start(mnist_150, out, "--resume"))
    assert_same_csvs(zero2_run, out)
