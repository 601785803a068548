"""Seed 002's LSTM detector travels: a fixed-length input over training progress, a record of the runs it was
trained on, and a warning when it scores a run outside them.

Resampling is checked against NumPy's ``np.interp``; the domain against run folders in the real on-disk format
(synthetic path logs from tests/test_noise_detection.py plus the ``config.yaml`` cg-train writes) and one real
tiny cg-train run; the shipped detector is loaded from the package.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from analysis.cli import main as analyze
from analysis.detectors import DETECTORS, load_dynamics
from analysis.detectors.domain import profile
from analysis.detectors.lstm import FEATURES, LENGTH, SHIPPED, build_model, domain_warning, load_detector, \
    resample, sequences
from conftest import train
from test_noise_detection import planted, synthetic_run  # noqa: F401 (planted: a fixture)


def write_config(run: Path, dataset: str = "cifar10", scheduler: str = "cosine", noise_type: str = "symmetric",
                 fraction: float = 0.2, arch: str = "simple_cnn", epochs: int = 6) -> None:
    """The keys of cg-train's ``config.yaml`` a run profile reads, nested as cg-train writes them."""
    cfg = {"data": {"dir": f"/data/{dataset}", "dataset": dataset}, "model": {"arch": arch},
           "noise": {"corrupt_fraction": fraction, "noise_type": noise_type},
           "sched": {"scheduler": scheduler, "milestones": []}, "train": {"epochs": epochs}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def interp_rows(values: np.ndarray, at: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``np.interp`` of every sample and channel of ``values`` ([N, T, C], known at ``where``) at ``at``."""
    n, _, c = values.shape
    return np.stack([np.stack([np.interp(at, where, values[i, :, j]) for j in range(c)], -1) for i in range(n)])


def test_resampling_is_length_invariant_and_equals_numpy_interp() -> None:
    rng = np.random.default_rng(0)
    run = rng.uniform(0, 1, (7, 10, 2)).astype(np.float32)
    doubled = interp_rows(run, np.linspace(0, 1, 19), np.linspace(0, 1, 10)).astype(np.float32)  # 2x epochs
    once, twice = resample(run, LENGTH), resample(doubled, LENGTH)
    assert once.shape == twice.shape == (7, LENGTH, 2)
    np.testing.assert_allclose(once, twice, atol=1e-6)
    np.testing.assert_allclose(once, interp_rows(run, np.linspace(0, 1, LENGTH), np.linspace(0, 1, 10)), atol=1e-6)
    # epochs with a gap sit at their place in training (an eval log of epochs 1, 2, 4, 5)
    gap = run[:, :4]
    np.testing.assert_allclose(resample(gap, 9, [1, 2, 4, 5]),
                               interp_rows(gap, np.linspace(0, 1, 9), np.array([0, 1, 3, 4]) / 4), atol=1e-6)
    assert np.array_equal(resample(run[:, :1], 5), np.repeat(run[:, :1], 5, axis=1))


def test_runs_of_different_lengths_give_the_detector_the_same_shape(tmp_path: Path) -> None:
    synthetic_run(tmp_path / "short", epochs=4, seed=1)
    synthetic_run(tmp_path / "long", epochs=13, seed=2)
    for name in ("short", "long"):
        dyn = load_dynamics(tmp_path / name)
        x = sequences(dyn)
        assert x.shape == (len(dyn), LENGTH, len(FEATURES))
        np.testing.assert_allclose(x[:, 0, 0], dyn.column("p_observed")[:, 0])  # first and last epoch kept
        np.testing.assert_allclose(x[:, -1, 1], dyn.column("p_other")[:, -1])


@pytest.fixture
def detector(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    """A detector trained on two cifar10 runs: 6 epochs / 20% and 9 epochs / 40% symmetric noise, cosine."""
    truths = {}
    for name, epochs, fraction, seed in (("a", 6, 0.2, 1), ("b", 9, 0.4, 2)):
        truths[name] = synthetic_run(tmp_path / name, corrupt_fraction=fraction, epochs=epochs, seed=seed)
        write_config(tmp_path / name, fraction=fraction, epochs=epochs)
    out = tmp_path / "lstm.pt"
    assert analyze(["train-detector", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out),
                    "--epochs", "8"]) == 0
    return out, truths


def test_the_saved_detector_names_its_runs_and_their_settings(detector, tmp_path: Path) -> None:
    out, truths = detector
    saved = torch.load(out, weights_only=True)
    assert saved["length"] == LENGTH and saved["features"] == list(FEATURES)
    runs = saved["trained_on"]
    assert [r["run"] for r in runs] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert [r["epochs"] for r in runs] == [6, 9]
    assert [r["noise_rate"] for r in runs] == [pytest.approx(truths[n]["corrupt"].mean(), abs=1e-4) for n in "ab"]
    assert {(r["dataset"], r["schedule"], r["noise_type"], r["arch"], r["source"], r["num_classes"])
            for r in runs} == {("cifar10", "cosine", "symmetric", "simple_cnn", "train", 4)}
    assert [r["samples"] for r in runs] == [240, 240]


def test_no_warning_inside_the_trained_domain(detector, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, _ = detector
    synthetic_run(tmp_path / "inside", corrupt_fraction=0.3, epochs=8, seed=3)
    write_config(tmp_path / "inside", fraction=0.3, epochs=8)
    assert domain_warning(out, load_dynamics(tmp_path / "inside")) is None
    capsys.readouterr()
    assert analyze(["noise", str(tmp_path / "inside"), "--detectors", "lstm,aum", "--detector", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    report = (tmp_path / "inside" / "noise" / "noise_report.md").read_text()
    assert "trained on 2 run(s)" in report and "Warning" not in report
    assert f"- {tmp_path / 'a'} (cifar10, simple_cnn, 4 classes, 6 epochs of train passes, cosine lr, " \
           f"symmetric noise 0.20)" in report


def test_warning_outside_the_trained_domain(detector, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, _ = detector
    run = tmp_path / "outside"
    synthetic_run(run, corrupt_fraction=0.7, epochs=14, seed=4)
    write_config(run, dataset="imagefolder", scheduler="auto", noise_type="flip", fraction=0.7, arch="resnet18")
    capsys.readouterr()
    assert analyze(["noise", str(run), "--detectors", "lstm,aum", "--detector", str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cg-analyze: warning:")]
    assert len(warnings) == 1
    for phrase in ("14 epochs (trained on 6-9)", "dataset imagefolder:imagefolder (trained on cifar10)",
                   "architecture resnet18 (trained on simple_cnn)", "step lr schedule (trained on cosine)",
                   "flip noise (trained on symmetric)", "noise rate 0.70 (trained on 0.20-0.40)"):
        assert phrase in warnings[0]  # auto with resnet18 is the step schedule, as the trainer resolves it
    report = (run / "noise" / "noise_report.md").read_text()
    assert "**Warning:** " + warnings[0].removeprefix("cg-analyze: warning: ") in report
    assert str(tmp_path / "a") in report and str(tmp_path / "b") in report
    # each limit on its own: one epoch more than trained, a rate just past the margin
    synthetic_run(tmp_path / "longer", corrupt_fraction=0.2, epochs=10, seed=5)
    write_config(tmp_path / "longer")
    warning = domain_warning(out, load_dynamics(tmp_path / "longer"))
    assert "10 epochs (trained on 6-9)" in warning and "noise rate" not in warning and "dataset" not in warning
    synthetic_run(tmp_path / "noisier", corrupt_fraction=0.55, epochs=7, seed=6)
    write_config(tmp_path / "noisier", fraction=0.55)
    warning = domain_warning(out, load_dynamics(tmp_path / "noisier"))
    assert "noise rate 0.55 (trained on 0.20-0.40)" in warning and "epochs" not in warning


def first_format_file(path: Path) -> Path:
    """A detector file as cg-analyze wrote them before the input was resampled: raw p(observed), run dirs."""
    torch.manual_seed(0)
    torch.save({"state_dict": build_model(32).state_dict(), "hidden": 32, "feature": "p_observed",
                "trained_on": ["/old/runs/symmetric_0.2"]}, path)
    return path


def test_first_format_files_still_score_with_a_warning_and_bad_files_are_one_line(
        planted, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, _ = planted
    old = first_format_file(tmp_path / "old.pt")
    loaded = load_detector(old)
    assert loaded.length is None and loaded.features == ("p_observed",) and not loaded.has_domain
    with torch.no_grad():  # the raw per-epoch sequence, as before
        x = torch.from_numpy(np.nan_to_num(load_dynamics(run).column("p_observed")))[:, :, None]
        expected = loaded.model(x).double().numpy()
    np.testing.assert_allclose(DETECTORS.get("lstm")(load_dynamics(run), old), expected, rtol=1e-6)
    capsys.readouterr()
    assert analyze(["noise", str(run), "--detectors", "lstm", "--detector", str(old)]) == 0
    err = capsys.readouterr().err
    assert "first-format file that records no training domain" in err and "/old/runs/symmetric_0.2" in \
        (run / "noise" / "noise_report.md").read_text()
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a detector")
    assert analyze(["noise", str(run), "--detectors", "lstm", "--detector", str(garbage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cg-analyze: error: --detector") and "train-detector" in err[0]
    assert analyze(["train-detector", str(run), "--init", str(old), "--out", str(tmp_path / "x.pt")]) == 2
    assert "first-format" in capsys.readouterr().err


def test_shipped_detector_was_trained_on_varied_runs_and_scores_a_real_run(
        mnist_small: Path, tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    shipped = load_detector(SHIPPED)
    assert shipped.has_domain and shipped.length == LENGTH and shipped.features == FEATURES
    runs = shipped.trained_on
    assert len({r["epochs"] for r in runs}) >= 4 and len({r["schedule"] for r in runs}) >= 3
    assert {r["noise_type"] for r in runs} >= {"symmetric", "flip"}
    assert min(r["noise_rate"] for r in runs) <= 0.1 + 1e-3 and max(r["noise_rate"] for r in runs) >= 0.5 - 1e-3
    # a real tiny run: its profile comes from its own files, the shipped detector scores it and flags it
    run = tmp_path / "real"
    assert train(mnist_small, run, "--epochs", "3", "--corrupt-fraction", "0.3", "--noise-type", "symmetric",
                 "--paths", "--paths-topk", "10", "--sample-size", "0") == 0
    dyn = load_dynamics(run)
    got = profile(dyn)
    assert (got.dataset, got.arch, got.schedule, got.noise_type, got.epochs, got.samples, got.num_classes) == \
        (f"imagefolder:{mnist_small.name}", "simple_cnn", "cosine", "symmetric", 3, 300, 10)  # auto: cosine
    assert got.noise_rate == pytest.approx(pd.read_parquet(run / "corruption.parquet").is_corrupt.mean())
    scores = DETECTORS.get("lstm")(dyn)
    assert scores.shape == (300,) and np.isfinite(scores).all()
    assert roc_auc_score(dyn.is_corrupt, scores) > 0.5
    warning = domain_warning(None, dyn)
    assert warning is not None and f"3 epochs (trained on {min(r['epochs'] for r in runs)}-" in warning
