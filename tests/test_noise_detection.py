"""Seed 002's noise detectors, report, LSTM and remove-and-retrain; seed 000's path views.

Detectors are checked on synthetic path logs written in the real on-disk format
(planted mislabeled samples whose probabilities are computed here with NumPy),
metrics against scikit-learn / scipy, confident learning against cleanlab, and
remove-and-retrain through real cg-train runs and the real data bundle.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from analysis.cli import main as analyze
from analysis.detectors import DETECTORS, load_dynamics
from analysis.noise_report import detector_metrics, score_run
from cg_train.paths.layout import part_dir, part_name, path_schema
from conftest import train
from image_files import write_cifar

K = 4


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def synthetic_run(root: Path, n: int = 240, corrupt_fraction: float = 0.25, epochs: int = 6,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """A run folder whose path logs hold planted training dynamics: a clean sample's logit of its label grows
    over epochs, a mislabeled one's stays below its true class's (with noise, so the two overlap early)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, K, n)
    corrupt = np.zeros(n, bool)
    corrupt[rng.permutation(n)[:int(corrupt_fraction * n)]] = True
    observed = np.where(corrupt, (true + rng.integers(1, K, n)) % K, true)
    logits = rng.normal(0, 1.0, (n, epochs, K))
    growth = np.linspace(0.2, 3.0, epochs)
    logits[np.arange(n), :, true] += growth * rng.uniform(0.5, 1.5, (n, 1))
    logits[corrupt, :, observed[corrupt]] += growth * 0.3  # memorised a little, late
    probs = softmax(logits)
    schema = path_schema(K, K)
    labels = schema.field("observed_label").type.to_pandas_dtype()
    for t in range(epochs):
        p, z = probs[:, t], logits[:, t]
        order = np.argsort(-p, axis=1, kind="stable")
        others = np.where(np.arange(K) == observed[:, None], -np.inf, z)
        cols = {"step": np.full(n, t, np.int32), "index": np.arange(n, dtype=np.int32),
                "observed_label": observed.astype(labels), "true_label": true.astype(labels),
                "loss": -np.log(p[np.arange(n), observed]).astype(np.float32),
                "p_observed": p[np.arange(n), observed].astype(np.float32),
                "p_true": p[np.arange(n), true].astype(np.float32),
                "margin": (z[np.arange(n), observed] - others.max(axis=1)).astype(np.float32),
                "correct": order[:, 0] == observed}
        for j in range(K):
            cols[f"top{j + 1}_class"] = order[:, j].astype(labels)
            cols[f"top{j + 1}_prob"] = np.take_along_axis(p, order[:, j:j + 1], 1)[:, 0].astype(np.float16)
        folder = part_dir(root / "paths", t, 0)
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pydict(cols, schema=schema), folder / part_name(t * n))
    pd.DataFrame({"index": np.arange(n), "path": [f"train[{i}]" for i in range(n)], "true_label": true,
                  "observed_label": observed, "is_corrupt": corrupt, "resampled": corrupt,
                  "removed": np.zeros(n, bool)}).to_parquet(root / "corruption.parquet")
    return {"corrupt": corrupt, "observed": observed, "probs": probs.astype(np.float16).astype(np.float64)}


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path / "run", synthetic_run(tmp_path / "run")


@pytest.mark.parametrize("name", ["mean_loss", "aum", "forgetting", "confident_learning"])
def test_each_detector_ranks_planted_mislabeled_samples_above_clean_ones(planted, name: str) -> None:
    from sklearn.metrics import roc_auc_score

    run, truth = planted
    scores = DETECTORS.get(name)(load_dynamics(run))
    assert scores.shape == (240,) and np.isfinite(scores).all()
    assert roc_auc_score(truth["corrupt"], scores) > 0.9
    assert scores[truth["corrupt"]].mean() > scores[~truth["corrupt"]].mean()


def test_metrics_equal_independent_computations(planted) -> None:
    from scipy.stats import mannwhitneyu
    from sklearn.metrics import average_precision_score

    run, truth = planted
    dyn = load_dynamics(run)
    table = score_run(dyn, ["mean_loss", "aum"])
    metrics = detector_metrics(table, ["mean_loss", "aum"]).set_index("detector")
    y = truth["corrupt"]
    for name in ("mean_loss", "aum"):
        s = table[name].to_numpy()
        u = mannwhitneyu(s[y], s[~y]).statistic  # AUROC = U / (n1 n0)
        assert metrics.loc[name, "auroc"] == pytest.approx(u / (y.sum() * (~y).sum()))
        assert metrics.loc[name, "map"] == pytest.approx(average_precision_score(y, s))
        top = np.argsort(-s, kind="stable")[:y.sum()]
        assert metrics.loc[name, "precision_at_noise_rate"] == pytest.approx(y[top].mean())


def test_confident_learning_flags_what_cleanlab_flags_on_the_same_probabilities(planted) -> None:
    from cleanlab.filter import find_label_issues

    run, truth = planted
    table = score_run(load_dynamics(run), ["confident_learning"])
    probs = truth["probs"].mean(axis=1)  # the logged (float16) softmax, averaged over epochs, computed here
    expected = find_label_issues(truth["observed"], probs / probs.sum(axis=1, keepdims=True))
    assert expected.sum() > 20
    assert np.array_equal(table["confident_learning_flagged"].to_numpy(), expected)


def test_lstm_trains_saves_loads_and_scores_another_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sklearn.metrics import roc_auc_score

    synthetic_run(tmp_path / "a", corrupt_fraction=0.2, epochs=6, seed=1)
    other = synthetic_run(tmp_path / "b", n=160, corrupt_fraction=0.4, epochs=9, seed=2)  # other rate, length
    detector = tmp_path / "lstm.pt"
    assert analyze(["train-detector", str(tmp_path / "a"), "--out", str(detector), "--epochs", "15"]) == 0
    assert analyze(["noise", str(tmp_path / "b"), "--detectors", "lstm", "--detector", str(detector)]) == 0
    scores = pd.read_parquet(tmp_path / "b" / "noise" / "scores.parquet")
    assert roc_auc_score(other["corrupt"], scores["lstm"]) > 0.9
    # fine-tuning starts from the saved weights
    tuned = tmp_path / "tuned.pt"
    assert analyze(["train-detector", str(tmp_path / "b"), "--init", str(detector), "--out", str(tuned),
                    "--epochs", "1"]) == 0
    assert torch.load(tuned, weights_only=True)["hidden"] == torch.load(detector, weights_only=True)["hidden"]
    # a run without corruption cannot train a detector: one error line
    capsys.readouterr()
    clean = tmp_path / "clean"
    synthetic_run(clean, corrupt_fraction=0.0)
    assert analyze(["train-detector", str(clean), "--out", str(tmp_path / "x.pt")]) == 2
    assert capsys.readouterr().err.startswith("cg-analyze: error:")


def test_shipped_lstm_is_package_data_and_scores_a_run(planted) -> None:
    import tomllib

    from analysis.detectors.lstm import SHIPPED

    data = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert SHIPPED.name in data["package-data"]["analysis.detectors"]
    run, truth = planted
    scores = DETECTORS.get("lstm")(load_dynamics(run))
    assert scores.shape == (240,) and np.isfinite(scores).all()


def bundle(overrides: list[str]):
    from cg_train.config import build_config
    from cg_train.data.bundle import build_data

    cfg = build_config(overrides=["data.workers=0", "data.batch_size=4", *overrides])
    return build_data(cfg, 32, 32, 0, 1, torch.device("cpu"))


def trained_indices(data) -> list[int]:
    data.train_loader.set_epoch(0)
    return sorted(int(i) for batch in data.train_loader for i in batch.indices)


def test_exclude_leaves_out_exactly_the_listed_samples_of_an_in_memory_dataset(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")
    listing = tmp_path / "exclude.txt"
    listing.write_text("1\ntrain[3]\n")  # an index and a name, as scores.parquet's path column spells it
    data = bundle([f"data.dir={tmp_path}", "data.dataset=cifar10", f"noise.exclude={listing}"])
    assert data.train.images is not None and data.removed.tolist() == [False, True, False, True, False]
    assert trained_indices(data) == [0, 2, 4]


def test_remove_and_retrain_on_a_file_dataset_end_to_end(mnist_small: Path, tmp_path: Path) -> None:
    noisy = tmp_path / "noisy"
    assert train(mnist_small, noisy, "--epochs", "2", "--corrupt-fraction", "0.3", "--noise-type", "symmetric",
                 "--paths", "--paths-topk", "10", "--sample-size", "20") == 0
    assert analyze(["noise", str(noisy)]) == 0
    report = noisy / "noise"
    for name in ("scores.parquet", "detectors.csv", "noise_report.md", *(f"{fig}.{ext}" for fig in
                 ("roc_pr", "score_hist", "suspicious", "paths") for ext in ("png", "pdf"))):
        assert (report / name).stat().st_size > 0, name
    scores = pd.read_parquet(report / "scores.parquet")
    assert list(scores.columns[:5]) == ["index", "path", "observed", "true", "is_corrupt"]
    in_sample = set(DETECTORS.names()) - {"confident_learning_oos"}  # that one needs --oos (tests/test_kfold.py)
    assert in_sample <= set(scores.columns) and "confident_learning_oos" not in scores
    assert set(pd.read_csv(report / "detectors.csv").detector) == in_sample

    # retrain without the 10% the AUM detector finds most suspicious
    expected = np.lexsort((scores["index"], -scores["aum"]))[:30]
    data = bundle([f"data.dir={mnist_small}", f"noise.remove_ratio=0.1", f"noise.scores={report / 'scores.parquet'}",
                   "noise.detector=aum", "noise.corrupt_fraction=0.3", "noise.noise_type=symmetric"])
    assert sorted(np.flatnonzero(data.removed)) == sorted(expected)
    assert trained_indices(data) == sorted(set(range(300)) - set(expected.tolist()))
    retrained = tmp_path / "retrained"
    assert train(mnist_small, retrained, "--epochs", "1", "--corrupt-fraction", "0.3", "--noise-type", "symmetric",
                 "--sample-size", "20", "--remove-ratio", "0.1", "--scores", str(report / "scores.parquet"),
                 "--detector", "aum", "--paths", "--paths-topk", "10") == 0
    record = pd.read_parquet(retrained / "corruption.parquet")
    assert np.flatnonzero(record["removed"]).tolist() == sorted(expected.tolist())
    logged = pd.read_parquet(retrained / "paths")["index"].unique()
    assert sorted(logged) == sorted(set(range(300)) - set(expected.tolist()))  # never trained on
    assert analyze(["noise", str(retrained), "--detectors", "aum,mean_loss"]) == 0  # scored over the rest
    assert analyze(["retrain", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "retrain.csv").sort_values("remove_ratio")
    assert table.remove_ratio.tolist() == [0.0, 0.1] and table.removed.tolist() == [0, 30]
    assert (tmp_path / "retrain.png").is_file()


def test_path_views_of_chosen_samples(planted, capsys: pytest.CaptureFixture) -> None:
    run, _ = planted
    assert analyze(["paths", str(run), "--samples", "3,5,8", "-o", str(run / "views")]) == 0
    assert (run / "views" / "paths.png").stat().st_size > 0 and (run / "views" / "paths.pdf").is_file()
    assert analyze(["paths", str(run), "--samples", "3,x"]) == 2  # argparse's usage error, as a code


def test_remove_ratio_without_scores_is_one_line_naming_the_fix(mnist_small: Path) -> None:
    from cg_train.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--remove-ratio .* needs --scores"):
        bundle([f"data.dir={mnist_small}", "noise.remove_ratio=0.1"])


def test_retrain_sweep_points_read_the_scores_from_any_directory(tmp_path: Path) -> None:
    from launch.sweep import load_sweep

    points = load_sweep(Path(__file__).parent.parent / "configs" / "sweeps" / "noise_retrain.yaml", tmp_path).points
    assert [p.cfg.noise.remove_ratio for p in points] == [0.0, 0.1, 0.2, 0.3]
    assert all(Path(p.cfg.noise.scores).is_absolute() and p.cfg.noise.detector == "aum" for p in points)


def test_scores_of_another_training_set_are_refused(mnist_small: Path, tmp_path: Path) -> None:
    from cg_train.errors import DataError

    scores = tmp_path / "scores.parquet"
    pd.DataFrame({"index": np.arange(5), "path": [f"train[{i}]" for i in range(5)], "aum": np.arange(5.0)}
                 ).to_parquet(scores)
    base = [f"data.dir={mnist_small}", "noise.remove_ratio=0.1", f"noise.scores={scores}"]
    with pytest.raises(DataError, match="scores another training set"):
        bundle([*base, "noise.detector=aum"])
    with pytest.raises(Exception, match=r"no 'lstm' scores; choose one of: aum"):
        bundle([*base, "noise.detector=lstm"])


def test_noise_analysis_never_imports_the_trainer() -> None:
    import subprocess
    import sys

    code = ("import sys, analysis.noise_cli, analysis.noise_report, analysis.detectors, analysis.retrain, "
            "analysis.path_views; bad = [m for m in sys.modules if m.startswith('cg_train.engine')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stdout + result.stderr
