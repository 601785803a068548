"""``cg-train evaluate``: a checkpoint's metrics equal what its run wrote, on 1 and 2 processes."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cg_train.cli import main
from conftest import accelerate_launch, train


@pytest.fixture(scope="module")
def finished_run(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evaluate") / "run"
    assert train(mnist_small, out, "--epochs", "1", "--corrupt-fraction", "0.4", "--sample-size", "60") == 0
    return out


def test_evaluate_reproduces_the_runs_last_evaluation(finished_run: Path, mnist_small: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "eval"
    soft = np.random.default_rng(0).dirichlet(np.ones(10), size=100)  # e.g. CIFAR-10H: a distribution per test image
    np.save(tmp_path / "soft.npy", soft)
    code = main(["evaluate", str(finished_run / "checkpoint.pth.tar"), str(mnist_small), "--phases",
                 "test,corrupt,train_all", "--predictions", "--topk", "10", "-j", "0", "--no-progress",
                 "--soft-labels", str(tmp_path / "soft.npy"), "--output-dir", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test " in printed and "ECE" in printed
    metrics = pd.read_csv(out / "evaluate.csv").set_index("phase")
    calibration = pd.read_csv(finished_run / "calibration.csv")
    for phase in ("test", "corrupt"):  # the corrupt subset is the run's own: the checkpoint brings noise and seed
        run = pd.read_csv(finished_run / f"{phase}.csv").iloc[-1]
        row = metrics.loc[phase]
        assert row["count"] == run["count"] and row.epoch == run.epoch == 1
        assert math.isclose(row.loss, run.loss, rel_tol=1e-6) and row.acc1 == run.acc1 and row.acc5 == run.acc5
        ece = calibration[(calibration.epoch == 1) & (calibration.phase == phase)].ece.iloc[0]
        assert math.isclose(row.ece, ece, rel_tol=1e-6)
    assert metrics.loc["train_all", "count"] == 300
    # per-sample predictions agree with the summary: accuracy, mean loss, confidence-based ECE inputs
    for phase in ("test", "train_all"):
        table = pd.read_parquet(out / f"predictions_{phase}.parquet")
        assert table["index"].tolist() == list(range(len(table)))
        assert math.isclose(100 * table.correct.mean(), metrics.loc[phase, "acc1"], rel_tol=1e-9)
        assert math.isclose(table.loss.mean(), metrics.loc[phase, "loss"], rel_tol=1e-5)
        top = np.stack(table.top_probs.to_numpy())
        assert top.shape == (len(table), 10) and np.allclose(top[:, 0], table.confidence)
    assert len(pd.read_csv(out / "reliability.csv")) == 3 * 15
    # soft_loss: the mean cross-entropy to the soft labels, from the full predicted distributions
    table = pd.read_parquet(out / "predictions_test.parquet")
    probs = np.zeros((100, 10))
    np.put_along_axis(probs, np.stack(table.top_classes.to_numpy()), np.stack(table.top_probs.to_numpy()), axis=1)
    assert math.isclose(metrics.loc["test", "soft_loss"], -(soft * np.log(probs)).sum(1).mean(), rel_tol=1e-5)
    assert metrics.loc[["corrupt", "train_all"], "soft_loss"].isna().all()


def test_evaluate_under_accelerate_launch_gives_the_same_numbers(finished_run: Path, mnist_small: Path,
                                                                 tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    args = [str(finished_run / "checkpoint.pth.tar"), str(mnist_small), "--phases", "test,pristine", "-j", "0",
            "--batch-size", "24", "--predictions", "--no-progress"]
    assert main(["evaluate", *args, "--output-dir", str(one)]) == 0
    accelerate_launch("-m", "cg_train", "evaluate", *args, "--output-dir", str(two))
    a, b = pd.read_csv(one / "evaluate.csv"), pd.read_csv(two / "evaluate.csv")
    pd.testing.assert_frame_equal(a[["phase", "count", "acc1", "acc5"]], b[["phase", "count", "acc1", "acc5"]])
    np.testing.assert_allclose(a[["loss", "ece"]], b[["loss", "ece"]], rtol=1e-5)
    pa, pb = (pd.read_parquet(d / "predictions_test.parquet") for d in (one, two))
    assert pa["index"].tolist() == pb["index"].tolist() == list(range(100))
    np.testing.assert_allclose(pa.loss, pb.loss, rtol=1e-4)


def test_evaluate_refuses_what_it_cannot_do_in_one_line(finished_run: Path, mnist_small: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    ckpt = str(finished_run / "checkpoint.pth.tar")
    assert main(["evaluate", ckpt, str(mnist_small), "--phases", "val"]) == 2
    assert "--phases: unknown phase val" in capsys.readouterr().err
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(junk), str(mnist_small)]) == 2
    assert "cg-train evaluate: " in (err := capsys.readouterr().err) and "not a readable cg-train checkpoint" in err
