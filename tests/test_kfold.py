"""Out-of-sample confident learning: K stratified folds, K fold runs launched by ``cg-launch kfold``, their
held-out predictions merged by ``cg-analyze kfold`` and scored as ``confident_learning_oos``.

Checked through the runs' own files: every fold run's training-step path logs hold exactly the samples
outside its fold (the model never saw the fold it predicts), the merged table is the per-fold files put
together, the fold model's predictions equal an independent ``cg-train evaluate`` of its checkpoint, and
the detector equals cleanlab called here on the same array. A fold stopped mid-epoch by a real SIGUSR2
is resumed by re-running the launch and ends identical to an uninterrupted fold run.
"""
from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.cli import main as analyze
from cg_train.data.folds import stratified_folds
from conftest import FAST, assert_same_csvs, train
from test_noise_detection import synthetic_run
from test_resume import signal_at_step

pytestmark = pytest.mark.xdist_group("kfold")  # one worker builds the launch once for every test here

K = 3
#: the recipe of the scored run and of every fold (the same labels); --workers 2: loader worker processes
RECIPE = ["--epochs", "2", "--image-size", "16", "--sample-size", "20", "--corrupt-fraction", "0.3",
          "--noise-type", "symmetric", "--seed", "1", "--workers", "2", "--print-freq", "1"]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_partition_the_samples_stratified_and_seeded(k: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(7, size=1003, p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.07, 0.03])  # unequal classes
    folds = stratified_folds(labels, k, seed=4)
    assert folds.shape == labels.shape and set(np.unique(folds)) == set(range(k))  # every sample in one fold
    sizes = np.bincount(folds, minlength=k)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == len(labels)
    counts = pd.crosstab(labels, folds).to_numpy()  # class x fold
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()  # each class spread evenly over the folds
    assert np.array_equal(stratified_folds(labels, k, seed=4), folds)  # the same seed, the same folds
    assert not np.array_equal(stratified_folds(labels, k, seed=5), folds)


@pytest.fixture(scope="module")
def launch(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scored noisy run, and a 3-fold launch of its recipe whose fold 1 was stopped mid-epoch and resumed."""
    from accelerate.state import AcceleratorState, GradientState

    from launch.cli import main as launch_main

    root = tmp_path_factory.mktemp("kfold")
    assert train(mnist_small, root / "noisy", *RECIPE, "--paths", "--paths-topk", "10") == 0
    folds = [*RECIPE, "--paths", "--folds", str(K)]
    with pytest.MonkeyPatch.context() as patch:  # fold 1 cut off by the cluster's signal, mid-epoch
        signal_at_step(patch, 3)
        assert train(mnist_small, root / "kfold" / "fold=1", *folds, "--fold", "1") == 128 + signal.SIGUSR2
    assert not (root / "kfold" / "fold=1" / "heldout_predictions.parquet").exists()
    assert train(mnist_small, root / "fold1_uninterrupted", *folds, "--fold", "1") == 0
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    assert launch_main(["kfold", "--executor", "debug", "--", str(mnist_small), *FAST, *folds,
                        "--output-dir", str(root / "kfold")]) == 0
    return root


def test_each_fold_is_predicted_by_a_model_that_never_saw_it(launch: Path) -> None:
    records = [pd.read_parquet(launch / "kfold" / f"fold={i}" / "corruption.parquet") for i in range(K)]
    noisy = pd.read_parquet(launch / "noisy" / "corruption.parquet")
    fold = records[0]["fold"].to_numpy()
    for i, record in enumerate(records):
        # the same corruption in every fold run, and the scored run's
        for column in ("true_label", "observed_label", "is_corrupt", "fold"):
            assert np.array_equal(record[column], records[0][column]), column
        for column in ("true_label", "observed_label"):
            assert np.array_equal(record[column], noisy[column]), column
        assert np.array_equal(record["removed"], fold == i)
        run = launch / "kfold" / f"fold={i}"
        trained = np.unique(pd.read_parquet(run / "paths", columns=["index"])["index"])  # every training step
        assert np.array_equal(trained, np.flatnonzero(fold != i))  # the other folds, all of them, never fold i
        held = pd.read_parquet(run / "heldout_predictions.parquet")
        assert np.array_equal(held["index"], np.flatnonzero(fold == i)) and not held["trained_on"].any()
    # stratified by the observed label, each class spread evenly over the folds
    counts = pd.crosstab(records[0]["observed_label"], fold).to_numpy()
    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()


def test_a_fold_stopped_mid_epoch_resumes_to_the_uninterrupted_result(launch: Path) -> None:
    resumed, reference = launch / "kfold" / "fold=1", launch / "fold1_uninterrupted"
    assert "resumed from" in (resumed / "log.txt").read_text()  # by the launch, not trained again from scratch
    assert_same_csvs(reference, resumed)
    pd.testing.assert_frame_equal(pd.read_parquet(resumed / "heldout_predictions.parquet"),
                                  pd.read_parquet(reference / "heldout_predictions.parquet"), check_exact=True)


def test_merged_table_is_the_per_fold_predictions(launch: Path, mnist_small: Path) -> None:
    from cg_train.cli import main as cg_train

    merged = pd.read_parquet(launch / "kfold" / "oos_predictions.parquet")
    assert merged["index"].tolist() == list(range(300))
    probs = np.stack(merged["probs"].to_numpy())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(probs.argmax(axis=1), merged["prediction"])
    for i in range(K):
        held = pd.read_parquet(launch / "kfold" / f"fold={i}" / "heldout_predictions.parquet")
        rows = merged.set_index("index").loc[held["index"]]
        assert (rows["fold"] == i).all()
        for column in ("observed_label", "true_label", "prediction", "confidence", "loss"):
            assert np.array_equal(rows[column].to_numpy(), held[column].to_numpy()), column
        dense = np.zeros((len(held), 10), np.float32)
        np.put_along_axis(dense, np.stack(held["top_classes"]), np.stack(held["top_probs"]), axis=1)
        assert np.array_equal(np.stack(rows["probs"].to_numpy()), dense)
    # the fold model's predictions, again through cg-train evaluate's own pass over its checkpoint
    run = launch / "kfold" / "fold=2"
    assert cg_train(["evaluate", str(run / "checkpoint.pth.tar"), str(mnist_small), "--phases", "heldout",
                     "--predictions", "--topk", "10", "--workers", "0", "--no-progress",
                     "--output-dir", str(launch / "evaluate")]) == 0
    evaluated = pd.read_parquet(launch / "evaluate" / "predictions_heldout.parquet")
    held = pd.read_parquet(run / "heldout_predictions.parquet")
    assert np.array_equal(evaluated["index"], held["index"]) and np.array_equal(evaluated["prediction"],
                                                                                 held["prediction"])
    np.testing.assert_allclose(np.stack(evaluated["top_probs"]), np.stack(held["top_probs"]), rtol=1e-5, atol=1e-7)
    assert not evaluated["trained_on"].any()


def test_confident_learning_oos_is_cleanlab_on_the_out_of_sample_array(launch: Path) -> None:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    out = launch / "scored"
    assert analyze(["noise", str(launch / "noisy"), "--oos", str(launch / "kfold"), "-o", str(out),
                    "--detectors", "confident_learning,confident_learning_oos"]) == 0
    scores = pd.read_parquet(out / "scores.parquet")
    table = pq.read_table(launch / "kfold" / "oos_predictions.parquet")
    probs = np.stack(table.column("probs").to_numpy(zero_copy_only=False)).astype(np.float64)
    observed = table.column("observed_label").to_numpy()
    np.testing.assert_array_equal(scores["confident_learning_oos"], 1.0 - get_label_quality_scores(observed, probs))
    np.testing.assert_array_equal(scores["confident_learning_oos_flagged"], find_label_issues(observed, probs))
    assert {"confident_learning", "confident_learning_flagged"} <= set(scores.columns)  # in-sample stays
    assert not np.allclose(scores["confident_learning"], scores["confident_learning_oos"])
    assert "confident_learning_oos" in set(pd.read_csv(out / "detectors.csv").detector)
    assert "K-fold out-of-sample probabilities" in (out / "noise_report.md").read_text()


def test_a_folder_of_runs_reads_each_runs_own_folds_relative_to_it(launch: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A seed sweep with one K-fold launch per seed: ``--oos ../kfold.parquet`` is each run's sibling."""
    import shutil

    for seed in (0, 1):  # the same run twice, as two seeds' points
        shutil.copytree(launch / "noisy", tmp_path / "sweep" / f"seed={seed}" / "noisy", symlinks=True)
        shutil.copyfile(launch / "kfold" / "oos_predictions.parquet", tmp_path / "sweep" / f"seed={seed}" / "kfold.parquet")
    shutil.copytree(launch / "noisy", tmp_path / "sweep" / "lonely" / "noisy", symlinks=True)  # no folds beside it
    detectors = ["--detectors", "confident_learning,confident_learning_oos", "--no-figures"]
    assert analyze(["noise", str(launch / "noisy"), "--oos", str(launch / "kfold"), "-o", str(tmp_path / "one"),
                    *detectors]) == 0
    single = pd.read_csv(tmp_path / "one" / "detectors.csv").set_index("detector")
    capsys.readouterr()
    assert analyze(["noise", str(tmp_path / "sweep"), "--oos", "../kfold.parquet", *detectors]) == 0
    err = capsys.readouterr().err
    assert "lonely/noisy" in err and "left out" in err  # its missing folds: one warning, the rest scored
    runs = pd.read_csv(tmp_path / "sweep" / "noise_runs.csv")
    assert sorted(runs.run.unique()) == ["seed=0/noisy", "seed=1/noisy"]
    for row in runs.itertuples():
        assert row.auroc == pytest.approx(single.loc[row.detector, "auroc"], abs=1e-4)


def test_incomplete_or_foreign_folds_are_refused_in_one_line(launch: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    copy = tmp_path / "kfold"
    shutil.copytree(launch / "kfold", copy, symlinks=True)
    (copy / "oos_predictions.parquet").unlink()
    (copy / "fold=1" / "heldout_predictions.parquet").unlink()  # cut off before its end
    shutil.rmtree(copy / "fold=2")  # never started (the launch's record still lists it)
    capsys.readouterr()
    assert analyze(["kfold", str(copy)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "fold(s) 1, 2 of 3 have not finished" in lines[0], lines
    assert analyze(["noise", str(launch / "noisy"), "--oos", str(copy), "-o", str(tmp_path / "s")]) == 2
    assert "fold(s) 1, 2 of 3" in capsys.readouterr().err
    # out-of-sample predictions of other labels than the scored run's
    synthetic_run(tmp_path / "other", n=300)
    assert analyze(["noise", str(tmp_path / "other"), "--oos", str(launch / "kfold"), "-o", str(tmp_path / "o")]) == 2
    assert "the K-fold runs trained on other labels than this run" in capsys.readouterr().err
    # the detector without --oos: one line naming the flag
    assert analyze(["noise", str(launch / "noisy"), "--detectors", "confident_learning_oos",
                    "-o", str(tmp_path / "n")]) == 2
    assert "needs K-fold out-of-sample predictions: cg-analyze noise RUN_DIR --oos" in capsys.readouterr().err


@pytest.mark.parametrize("flags, expected", [
    (["--fold", "1"], "--fold (noise.fold)=1 needs --folds K"),
    (["--folds", "3", "--fold", "3"], "--fold (noise.fold)=3 must be in 0..2"),
    (["--folds", "1"], "--folds (noise.folds)=1 must be 0 (no folds) or >= 2"),
    (["--folds", "3", "--fold", "0", "--exclude", "x.txt"], "cannot be combined with --exclude"),
])
def test_bad_fold_flags_are_one_line_errors(mnist_small: Path, tmp_path: Path, flags: list[str], expected: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert train(mnist_small, tmp_path / "run", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "run").exists()


def test_kfold_launch_needs_folds_and_no_fold(mnist_small: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from launch.cli import main as launch_main

    for extra, expected in (([], "needs --folds K"), (["--folds", "3", "--fold", "0"], "leave out --fold")):
        assert launch_main(["kfold", "--executor", "local", "--", str(mnist_small), *extra,
                            "--output-dir", str(tmp_path / "k")]) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "k").exists()
