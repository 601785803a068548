"""Real multi-process runs on CPU through `accelerate launch` (gloo), not mocks.

`accelerate launch --cpu --num_processes 2` starts ONE process and `--multi_gpu` without CPU mode
starts two that each train alone; ACCELERATE_USE_CPU=true with --multi_gpu is what really runs
2-process DDP here, and so do launch/accelerate's configs with cg-train's --cpu (each process then asks
accelerate for gloo). Every test asserts the world size it got.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import (ACCELERATE, FAST, REPO, accelerate_command, accelerate_launch as launch,
                      assert_same_up_to_rounding, free_port, train)


LOADERS = ["torchvision", "dali"]


@pytest.fixture(scope="module")
def probed(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What each rank's loaders yield, for every loader, from one 2-process launch (a launch is the cost)."""
    out = tmp_path_factory.mktemp("probe")
    launch(str(REPO / "tests" / "dist_probe.py"), str(mnist_small), str(out), *LOADERS)
    return out


@pytest.mark.xdist_group("dist_probe")  # both loaders on the worker that ran the launch
@pytest.mark.parametrize("loader", LOADERS)
def test_two_ranks_see_disjoint_data_and_identical_corruption(probed: Path, loader: str) -> None:
    reports = [json.loads((probed / loader / f"rank{r}.json").read_text()) for r in range(2)]
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


#: a fold run (trains on 2 of 3 stratified folds, predicts the third after the last epoch): the held-out
#: predictions are gathered from both processes too
ARGS = ["--epochs", "2", "--corrupt-fraction", "0.5", "--sample-size", "50", "--print-freq", "1",
        "--batch-size", "30", "--cpu", "--folds", "3", "--fold", "0"]
CONFIGS = REPO / "launch" / "accelerate"


@pytest.fixture(scope="module")
def one_process_run(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    assert train(mnist_small, out, *ARGS) == 0
    assert OmegaConf.load(out / "config.yaml").meta.world_size == 1
    return out


def launch_machines(machines: int, train_args: list[str]) -> None:
    """2 processes with launch/accelerate's configs: cpu.yaml on one machine, or one launcher per "machine"
    on loopback with multinode_8gpu.yaml (--num_processes is the total, as on a real cluster)."""
    if machines == 1:
        commands = [accelerate_command("--config_file", str(CONFIGS / "cpu.yaml"), *train_args)]
    else:
        port = str(free_port())
        commands = [[*ACCELERATE, "--config_file", str(CONFIGS / "multinode_8gpu.yaml"), "--num_machines", "2",
                     "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                     "--main_process_port", port, *train_args] for rank in range(machines)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd in commands]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs), "\n".join(o[-3000:] for o in outputs)


@pytest.mark.parametrize("machines", [1, 2], ids=["one-machine", "two-machines-on-loopback"])
def test_two_process_training_matches_one_process(one_process_run: Path, mnist_small: Path, tmp_path: Path,
                                                  machines: int) -> None:
    # simple_cnn has no BatchNorm, so splitting a batch over processes changes nothing but rounding
    double = tmp_path / "two"
    launch_machines(machines, ["-m", "cg_train", str(mnist_small), "--output-dir", str(double), *FAST, *ARGS])
    assert OmegaConf.load(double / "config.yaml").meta.world_size == 2
    assert_same_up_to_rounding(one_process_run, double)
    fold = pd.read_parquet(double / "corruption.parquet")["fold"].to_numpy()
    dense = []
    for run in (one_process_run, double):
        held = pd.read_parquet(run / "heldout_predictions.parquet")
        assert held["index"].tolist() == np.flatnonzero(fold == 0).tolist()  # each held-out sample once
        probs = np.zeros((len(held), 10))
        np.put_along_axis(probs, np.stack(held["top_classes"]), np.stack(held["top_probs"]), axis=1)
        dense.append(probs)
    np.testing.assert_allclose(dense[1], dense[0], atol=1e-4)
