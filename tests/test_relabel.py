"""Seed 002's data debugging: ``cg-analyze relabel`` label tables, ``cg-train --labels`` runs, ``cg-analyze debug``.

The suspects are checked against a ranking computed here from scores.parquet, new labels against the
ground truth or the held-out predictions of a run that never trained on them (and those against an
independent ``cg-train evaluate`` of its checkpoint), and a ``--labels`` run against the labels its
training batches carried (its training-step path logs, and the loader's batches with worker processes).
"""
from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as analyze
from cg_train.cli import main as cg_train
from cg_train.label_debugging import LABEL_COLUMNS
from conftest import train
from test_resume import signal_at_step

pytestmark = pytest.mark.xdist_group("relabel")  # one worker trains the runs once for every test here

#: the recipe of every run here (the same corrupted labels); --workers 2: loader worker processes
RECIPE = ["--epochs", "2", "--image-size", "16", "--sample-size", "20", "--corrupt-fraction", "0.3",
          "--noise-type", "symmetric", "--seed", "3", "--workers", "2"]
SUSPECTS = 60  # --ratio 0.2 of 300


@pytest.fixture(scope="module")
def runs(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sweep/noisy (scored), sweep/removed (without the top 20% by aum, predicting them) and
    sweep/relabelled (trained on the ground truth of the same 20%), with their label tables."""
    root = tmp_path_factory.mktemp("relabel")
    sweep = root / "sweep"
    assert train(mnist_small, sweep / "noisy", *RECIPE, "--paths", "--paths-topk", "10") == 0
    # relabel scores the run itself (scores.parquet does not exist yet)
    assert analyze(["relabel", str(sweep / "noisy"), "--detector", "aum", "--ratio", "0.2", "--source", "truth",
                    "--out", str(root / "truth.parquet")]) == 0
    scores = sweep / "noisy" / "noise" / "scores.parquet"
    assert train(mnist_small, sweep / "removed", *RECIPE, "--remove-ratio", "0.2", "--scores", str(scores),
                 "--detector", "aum", "--predict-heldout") == 0
    assert analyze(["relabel", str(sweep / "noisy"), "--detector", "aum", "--ratio", "0.2", "--source", "model",
                    "--predictions", str(sweep / "removed"), "--out", str(root / "model.parquet")]) == 0
    # a method other than plain cross-entropy, and training-step path logs of the labels each batch carried
    assert train(mnist_small, sweep / "relabelled", *RECIPE, "--labels", str(root / "truth.parquet"),
                 "--method", "ls", "--paths") == 0
    return root


def suspects(runs: Path) -> np.ndarray:
    """The top 20% by aum, ranked here: highest score first, ties by the lower index."""
    scores = pd.read_parquet(runs / "sweep" / "noisy" / "noise" / "scores.parquet")
    order = sorted(range(len(scores)), key=lambda i: (-scores["aum"][i], scores["index"][i]))
    return np.sort(scores["index"].to_numpy()[order[:SUSPECTS]])


def test_relabel_from_truth_changes_exactly_the_chosen_samples(runs: Path) -> None:
    table = pd.read_parquet(runs / "truth.parquet")
    record = pd.read_parquet(runs / "sweep" / "noisy" / "corruption.parquet")
    scores = pd.read_parquet(runs / "sweep" / "noisy" / "noise" / "scores.parquet")
    assert list(table.columns) == list(LABEL_COLUMNS) and (table["source"] == "truth").all()
    assert np.array_equal(table["index"], suspects(runs))
    assert np.array_equal(table["old_label"], record["observed_label"][table["index"]])
    assert np.array_equal(table["new_label"], record["true_label"][table["index"]])
    assert np.array_equal(table["score"], scores["aum"][table["index"]])
    assert record["is_corrupt"][table["index"]].sum() > 20  # the detector did find corrupt samples


def expected_labels(runs: Path, table: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels before debugging, labels after): the noisy run's, with the table applied here."""
    before = pd.read_parquet(runs / "sweep" / "noisy" / "corruption.parquet")["observed_label"].to_numpy()
    labels = pd.read_parquet(runs / table)
    after = before.copy()
    after[labels["index"]] = labels["new_label"]
    return before, after


def test_a_run_with_labels_trains_on_them(runs: Path, mnist_small: Path) -> None:
    from cg_train.config import build_config
    from cg_train.data.bundle import build_data

    import torch

    before, after = expected_labels(runs, "truth.parquet")
    table = pd.read_parquet(runs / "truth.parquet")
    run = runs / "sweep" / "relabelled"
    record = pd.read_parquet(run / "corruption.parquet")
    assert np.array_equal(record["observed_label"], after)
    assert np.array_equal(record["label_before_debugging"], before)
    changed = np.sort(table["index"][table["new_label"] != table["old_label"]].to_numpy())
    assert np.array_equal(np.flatnonzero(record["relabelled"]), changed) and len(changed) > 10
    assert np.array_equal(record["is_corrupt"], after != record["true_label"])
    # what the training batches carried, at every step of both epochs (training-step path logs)
    logged = pd.read_parquet(run / "paths", columns=["index", "observed_label"])
    assert len(logged) == 2 * 300
    assert np.array_equal(logged["observed_label"].to_numpy(), after[logged["index"].to_numpy()])
    # ... and what the loader yields, with worker processes
    cfg = build_config(overrides=[f"data.dir={mnist_small}", "data.workers=2", "data.batch_size=64",
                                  "noise.corrupt_fraction=0.3", "noise.noise_type=symmetric", "train.seed=3",
                                  f"noise.labels={runs / 'truth.parquet'}"])
    data = build_data(cfg, 16, 16, 0, 1, torch.device("cpu"))
    data.train_loader.set_epoch(0)
    seen = {int(i): int(y) for batch in data.train_loader for i, y in zip(batch.indices, batch.observed_labels)}
    assert sorted(seen) == list(range(300)) and [seen[i] for i in range(300)] == after.tolist()


def test_relabel_from_a_model_that_left_the_suspects_out(runs: Path, mnist_small: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    removed = runs / "sweep" / "removed"
    table = pd.read_parquet(runs / "model.parquet")
    assert np.array_equal(table["index"], suspects(runs)) and (table["source"] == "model").all()
    assert np.array_equal(np.flatnonzero(pd.read_parquet(removed / "corruption.parquet")["removed"]), table["index"])
    held = pd.read_parquet(removed / "heldout_predictions.parquet").set_index("index")
    assert np.array_equal(table["new_label"], held.loc[table["index"], "prediction"])
    # the same predictions from cg-train evaluate's own pass over that run's checkpoint
    assert cg_train(["evaluate", str(removed / "checkpoint.pth.tar"), str(mnist_small), "--phases", "heldout",
                     "--predictions", "--workers", "0", "--no-progress", "--output-dir", str(tmp_path / "ev")]) == 0
    evaluated = pd.read_parquet(tmp_path / "ev" / "predictions_heldout.parquet")
    assert np.array_equal(evaluated["prediction"], table["new_label"]) and not evaluated["trained_on"].any()

    # a model that trained on the suspects is refused, in one line
    noisy = runs / "sweep" / "noisy"
    assert cg_train(["evaluate", str(noisy / "checkpoint.pth.tar"), str(mnist_small), "--phases", "train_all",
                     "--predictions", "--workers", "0", "--no-progress", "--output-dir", str(tmp_path / "in")]) == 0
    assert pd.read_parquet(tmp_path / "in" / "predictions_train_all.parquet")["trained_on"].all()
    capsys.readouterr()
    base = ["relabel", str(noisy), "--detector", "aum", "--source", "model", "--out", str(tmp_path / "x.parquet")]
    for extra, expected in (
            (["--ratio", "0.2", "--predictions", str(tmp_path / "in" / "predictions_train_all.parquet")],
             f"the model trained on {SUSPECTS} of the suspects"),
            (["--ratio", "0.3", "--predictions", str(removed)], "has no prediction for 30 of the 90 suspects"),
            (["--ratio", "0.2"], "--source model needs --predictions PATH"),
            (["--ratio", "0.2", "--predictions", str(removed), "--detector", "nope"], "has no such scores")):
        assert analyze([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "x.parquet").exists()


def test_relabel_from_truth_skips_unknown_truth_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores = tmp_path / "scores.parquet"
    pd.DataFrame({"index": np.arange(6), "path": [f"train[{i}]" for i in range(6)], "observed": [0, 1, 2, 0, 1, 2],
                  "true": [-1, 1, 0, -1, 1, 1], "is_corrupt": [False, False, True, False, False, True],
                  "aum": [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]}).to_parquet(scores)
    out = tmp_path / "labels.parquet"
    assert analyze(["relabel", str(tmp_path), "--scores", str(scores), "--detector", "aum", "--count", "3",
                    "--source", "truth", "--out", str(out)]) == 0
    assert "1 of 3 suspects have no known true label and keep theirs" in capsys.readouterr().err
    table = pd.read_parquet(out)
    assert table["index"].tolist() == [1, 2] and table["new_label"].tolist() == [1, 0]
    assert analyze(["relabel", str(tmp_path), "--scores", str(scores), "--detector", "aum", "--count", "1",
                    "--source", "truth", "--out", str(out)]) == 2
    assert "none of the 1 suspects has a known true label" in capsys.readouterr().err


def bad_tables(good: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str]]:
    first = good["index"].iloc[0]
    return [
        ("no new_label", good.drop(columns="new_label"), "lacks the column(s) new_label"),
        ("index 300", good.assign(index=good["index"].where(good["index"] != first, 300)),
         "index 300 is outside the training set (0..299)"),
        ("label 10", good.assign(new_label=good["new_label"].where(good["index"] != first, 10)),
         f"new_label 10 of index {first} is not a class of this dataset (0..9)"),
        ("duplicate", pd.concat([good, good.iloc[:1]]), f"index {first} is listed twice"),
        ("float", good.assign(new_label=good["new_label"].astype(float)), "column new_label must hold integers"),
        ("other corruption", good.assign(old_label=(good["old_label"] + 1) % 10),
         f"index {first} has old_label"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_bad_label_tables_are_one_line_errors(runs: Path, mnist_small: Path, tmp_path: Path, case: int,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _, table, expected = bad_tables(pd.read_parquet(runs / "truth.parquet"))[case]
    path = tmp_path / "bad.parquet"
    table.to_parquet(path, index=False)
    assert train(mnist_small, tmp_path / "run", *RECIPE, "--labels", str(path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cg-train: error: --labels") and expected in err[0], err
    assert not (tmp_path / "run").exists()


def test_resume_with_another_label_table_is_refused(runs: Path, mnist_small: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    table = pd.read_parquet(runs / "truth.parquet")
    path = tmp_path / "labels.parquet"
    table.to_parquet(path, index=False)
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_at_step(patch, 2)
        assert train(mnist_small, run, *RECIPE, "--labels", str(path)) == 128 + signal.SIGUSR2
    table.assign(new_label=(table["new_label"] + 1) % 10).to_parquet(path, index=False)  # same file, other labels
    capsys.readouterr()
    assert train(mnist_small, run, *RECIPE, "--labels", str(path), "--resume") == 2
    assert "was trained on other labels" in capsys.readouterr().err


def test_debug_report_equals_the_runs_files(runs: Path) -> None:
    sweep = runs / "sweep"
    assert analyze(["debug", str(sweep)]) == 0
    report = pd.read_csv(sweep / "debug.csv").set_index("kind")
    assert sorted(report.index) == ["noisy", "relabelled", "removed"]
    truth = pd.read_parquet(runs / "truth.parquet")
    for kind, run in (("noisy", "noisy"), ("removed", "removed"), ("relabelled", "relabelled")):
        record = pd.read_parquet(sweep / run / "corruption.parquet")
        final = pd.read_csv(sweep / run / "test.csv")["acc1"].iloc[-1]
        assert report.loc[kind, "final_acc1"] == pytest.approx(final, abs=1e-4)
        assert report.loc[kind, "corrupt_left"] == (record["is_corrupt"] & ~record["removed"]).sum()
        noisy_final = pd.read_csv(sweep / "noisy" / "test.csv")["acc1"].iloc[-1]
        assert report.loc[kind, "vs_noisy"] == pytest.approx(final - noisy_final, abs=1e-3)
    true = pd.read_parquet(sweep / "noisy" / "corruption.parquet")["true_label"].to_numpy()[truth["index"]]
    assert report.loc["relabelled", "relabels_correct"] == pytest.approx((truth["new_label"] == true).mean())
    assert report.loc["relabelled", "labels_changed"] == (truth["new_label"] != truth["old_label"]).sum()
    assert report.loc["removed", "variant"] == "aum 0.2" and report.loc["relabelled", "variant"] == "aum 0.2, truth"
    assert "| relabelled | aum 0.2, truth | 100.0% |" in (sweep / "debug.md").read_text()
    # the remove-and-retrain table keeps to its own runs: no relabelled run posing as a noisy baseline
    assert analyze(["retrain", str(sweep), "-o", str(runs / "retrain")]) == 0
    assert sorted(pd.read_csv(runs / "retrain" / "retrain.csv").remove_ratio) == [0.0, 0.2]
