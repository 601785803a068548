"""Real multi-process runs on CPU through `accelerate launch` (gloo), not mocks.

`accelerate launch --cpu --num_processes 2` starts ONE process and `--multi_gpu` without CPU mode
starts two that each train alone; ACCELERATE_USE_CPU=true with --multi_gpu is what really runs
2-process DDP here, so every test asserts the world size it got.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import FAST, REPO, read_csv, train

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    cmd = [*ACCELERATE, "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
           "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.parametrize("loader", ["torchvision", "dali"])
def test_two_ranks_see_disjoint_data_and_identical_corruption(mnist_small: Path, tmp_path: Path,
                                                              loader: str) -> None:
    launch(str(REPO / "tests" / "dist_probe.py"), str(mnist_small), str(tmp_path), loader)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in reports] == [2, 2] and [r["rank"] for r in reports] == [0, 1]
    assert all("MULTI_CPU" in r["distributed_type"] for r in reports)
    assert reports[0]["observed"] == reports[1]["observed"]  # corruption computed alike on every rank
    for phase in reports[0]["phases"]:
        per_rank = [set(i for batch in r["phases"][phase] for i in batch) for r in reports]
        assert per_rank[0] and per_rank[1] and not per_rank[0] & per_rank[1], phase
        if phase.startswith("train@"):
            assert per_rank[0] | per_rank[1] == set(range(300)), phase
            # both ranks run the same number of steps with near-equal shares of each global batch
            steps = [r["phases"][phase] for r in reports]
            assert len(steps[0]) == len(steps[1])
            assert all(abs(len(a) - len(b)) <= 1 for a, b in zip(*steps))
    assert reports[0]["phases"]["train@0"] != reports[0]["phases"]["train@1"]  # reshuffled per epoch


def test_two_process_training_matches_one_process(mnist_small: Path, tmp_path: Path) -> None:
    # simple_cnn has no BatchNorm, so splitting a batch over processes changes nothing but rounding
    args = ["--epochs", "2", "--corrupt-fraction", "0.5", "--sample-size", "50", "--print-freq", "1",
            "--batch-size", "30"]
    single, double = tmp_path / "one", tmp_path / "two"
    assert train(mnist_small, single, *args) == 0
    launch("-m", "cg_train", str(mnist_small), "--output-dir", str(double), *FAST, *args)

    assert OmegaConf.load(double / "config.yaml").meta.world_size == 2
    assert OmegaConf.load(single / "config.yaml").meta.world_size == 1
    a, b = pd.read_parquet(single / "corruption.parquet"), pd.read_parquet(double / "corruption.parquet")
    pd.testing.assert_frame_equal(a, b)
    for name in ("train", "pristine", "corrupt", "train_sample", "test"):
        one, two = read_csv(single / f"{name}.csv"), read_csv(double / f"{name}.csv")
        keys = [c for c in ("epoch", "step", "count") if c in one]
        pd.testing.assert_frame_equal(one[keys], two[keys], obj=name)
        np.testing.assert_allclose(one.loss, two.loss, rtol=1e-3, err_msg=name)
        if "acc1" in one:
            # at most one sample may flip on a tie in rounding
            assert (abs(one.acc1 - two.acc1) <= 100 / one["count"] + 1e-9).all(), name
