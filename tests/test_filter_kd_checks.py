"""Issue 25: a Filter-KD run checks its --targets table, a KD/SL run its teachers, before training.

Real 1-epoch teachers on MNIST JPEGs (40% symmetric noise, some samples excluded so that rows stay
unwritten): the table's starting value per --p-smoothing-init against a replay of the logged
predictions, the summary against NumPy/scipy on the same files, the refusal and its override, and the
teachers' start-up accuracy against `cg-train evaluate`; the teacher pass leaves the trajectory alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
import yaml

from cg_train.cli import main
from cg_train.engine import supervision_checks

from conftest import FAST, accelerate_launch, assert_same_csvs, make_subset, train
from test_paths_runs import read_paths

K = 10
ALPHA = 0.3
EXCLUDED = [3, 17, 42, 64, 99]
NOISE = ["--corrupt-fraction", "0.4", "--noise-type", "symmetric", "--seed", "3", "--sample-size", "20"]


@pytest.fixture(scope="module")
def mnist_tiny(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 train / 50 val JPEGs (10 / 5 per class)."""
    return make_subset(mnist_small, tmp_path_factory.mktemp("tiny") / "mnist", 10, 5)


@pytest.fixture(scope="module")
def teachers(mnist_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 1-epoch simple_cnn teacher per --p-smoothing-init, with full path logs, without EXCLUDED."""
    root = tmp_path_factory.mktemp("teachers")
    exclude = root / "exclude.txt"
    exclude.write_text("".join(f"{i}\n" for i in EXCLUDED))
    runs = {}
    for init in ("first", "onehot", "uniform"):
        runs[init] = root / init
        assert train(mnist_tiny, runs[init], "--epochs", "1", "--p-smoothing", str(ALPHA), "--p-smoothing-init",
                     init, "--exclude", str(exclude), "--paths", "--paths-topk", str(K), *NOISE) == 0
    return runs


def logged_probs(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(sample index, full probability vector) of every training visit, in training order."""
    paths = read_paths(run)
    probs = np.zeros((len(paths), K))
    for i in range(1, K + 1):
        probs[np.arange(len(paths)), paths[f"top{i}_class"]] = paths[f"top{i}_prob"]
    return paths["index"].to_numpy(), probs


@pytest.mark.parametrize("init", ["first", "onehot", "uniform"])
def test_each_starting_value_gives_the_documented_first_row(teachers: dict[str, Path], init: str) -> None:
    """After one visit a row is p (first), (1-a) onehot(y) + a p (onehot) or (1-a)/K + a p (uniform);
    never-visited rows are written as zeros, whatever they started at."""
    run = teachers[init]
    observed = pd.read_parquet(run / "corruption.parquet").sort_values("index")["observed_label"].to_numpy()
    index, probs = logged_probs(run)
    assert sorted(index) == sorted(set(range(100)) - set(EXCLUDED))  # each trained sample once
    start = {"first": np.zeros((100, K)), "onehot": np.eye(K)[observed], "uniform": np.full((100, K), 1 / K)}[init]
    expected = np.zeros((100, K))
    for i, p in zip(index, probs):
        expected[i] = p if init == "first" else (1 - ALPHA) * start[i] + ALPHA * p
    table = np.load(run / "p_smoothing.npy")
    np.testing.assert_allclose(table, expected, atol=2e-3)  # the logged probabilities are float16
    assert not table[EXCLUDED].any()
    updates = np.load(run / "p_smoothing_updates.npy")
    assert updates.dtype == np.int32 and updates.tolist() == [0 if i in EXCLUDED else 1 for i in range(100)]
    record = json.loads((run / "p_smoothing.json").read_text())
    assert record == {"alpha": ALPHA, "tau": 1.0, "init": init, "epochs": 1, "updates": "p_smoothing_updates.npy"}


def numpy_summary(table_path: Path, run: Path, alpha: float, init: str) -> dict:
    """The summary's definition (docs/supervision.md) on the files, with scipy's entropy."""
    q = np.load(table_path).astype(np.float64)
    updates = np.load(table_path.with_name(table_path.stem + "_updates.npy"))
    labels = pd.read_parquet(run / "corruption.parquet").sort_values("index")
    observed, true = labels["observed_label"].to_numpy(), labels["true_label"].to_numpy()
    written = np.abs(q).sum(1) > 0
    top = q[written].argmax(1)
    steps = updates[written] - (1 if init == "first" else 0)
    return {"rows": len(q), "never_written": int((~written).sum()), "mean_max_prob": q[written].max(1).mean(),
            "mean_entropy": scipy.stats.entropy(q[written], axis=1).mean(),
            "agree_observed": 100 * (top == observed[written]).mean(),
            "agree_true": 100 * (top == true[written]).mean(), "mean_updates": updates[written].mean(),
            "start_weight": ((1 - alpha) ** steps).mean()}


def assert_summary(got: dict, expected: dict) -> None:
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=key)


def test_a_one_epoch_teachers_table_is_refused_in_one_line_and_accepted_with_the_flag(
        teachers: dict[str, Path], mnist_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = teachers["first"] / "p_smoothing.npy"
    student = [*NOISE, "--epochs", "1", "--method", "filter_kd", "--targets", str(table)]
    refused = tmp_path / "refused"
    capsys.readouterr()
    assert train(mnist_tiny, refused, *student) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dominated by its starting values, the first, barely trained predictions" in err
    assert "keep 100% of a row" in err and "at least 3 epochs at --p-smoothing 0.3" in err  # 0.7^2 <= 0.5
    assert "--accept-weak-targets" in err and not refused.exists()  # nothing written

    accepted = tmp_path / "accepted"
    assert train(mnist_tiny, accepted, *student, "--accept-weak-targets") == 0
    summary = json.loads((accepted / "supervision_checks.json").read_text())["targets"]
    assert summary["accepted"] and summary["judged_by"] == "update counts" and summary["init"] == "first"
    assert summary["never_written"] == len(EXCLUDED)
    assert_summary(summary, numpy_summary(table, accepted, ALPHA, "first"))
    meta = yaml.safe_load((accepted / "config.yaml").read_text())["meta"]["supervision_checks"]
    assert meta["targets"] == summary and meta["teachers"] == []
    assert "accepted with --accept-weak-targets although" in (accepted / "log.txt").read_text()

    # the same table without its counts (an older version's): judged by its content, and the log says so
    bare = tmp_path / "old" / "p_smoothing_best.npy"
    bare.parent.mkdir()
    bare.write_bytes(table.read_bytes())
    capsys.readouterr()
    assert train(mnist_tiny, tmp_path / "old_refused", *student[:-1], str(bare)) == 2
    out = capsys.readouterr()
    assert "judged by its content alone" in out.out + out.err and out.err.strip().count("\n") == 0
    assert "no more than chance" in out.err or "nearly flat" in out.err


@pytest.mark.parametrize("init", ["onehot", "uniform"])
def test_the_summary_of_other_starting_values_counts_every_update(teachers: dict[str, Path], mnist_tiny: Path,
                                                                   tmp_path: Path, init: str) -> None:
    """One update leaves (1 - a) of the start: refused when that is uniform; a table that is mostly the observed
    labels trains like cross-entropy on them, so it is accepted with a warning."""
    table = teachers[init] / "p_smoothing.npy"
    run = tmp_path / "student"
    student = [*NOISE, "--epochs", "1", "--method", "filter_kd", "--targets", str(table)]
    if init == "uniform":
        assert train(mnist_tiny, run, *student) == 2 and not run.exists()
        student.append("--accept-weak-targets")
    assert train(mnist_tiny, run, *student) == 0
    summary = json.loads((run / "supervision_checks.json").read_text())["targets"]
    assert summary["start_weight"] == pytest.approx(1 - ALPHA)  # one update: (1 - a)^1
    assert_summary(summary, numpy_summary(table, run, ALPHA, init))
    assert (summary["weak"] is None) == (init == "onehot") and summary["accepted"] == (init == "uniform")
    if init == "onehot":
        assert "trains close to cross-entropy" in summary["note"] and summary["note"] in (run / "log.txt").read_text()


def evaluate_csv(checkpoint: Path, data: Path, out: Path) -> pd.Series:
    assert main(["evaluate", str(checkpoint), str(data), "--output-dir", str(out), "--no-progress"]) == 0
    return pd.read_csv(out / "evaluate.csv").iloc[-1]


def test_the_teachers_start_up_accuracy_equals_cg_train_evaluate_on_one_and_two_processes(
        teachers: dict[str, Path], mnist_tiny: Path, tmp_path: Path) -> None:
    first = teachers["first"]
    pair = f"{first / 'model_best.pth.tar'}:{first / 'initial_state.pth.tar'}"
    one = tmp_path / "one"
    assert train(mnist_tiny, one, *NOISE, "--epochs", "1", "--method", "kd", "--teacher", pair,
                 "--workers", "2") == 0
    checks = json.loads((one / "supervision_checks.json").read_text())
    log = (one / "log.txt").read_text()
    for name, recorded in zip(("model_best.pth.tar", "initial_state.pth.tar"), checks["teachers"]):
        reference = evaluate_csv(first / name, mnist_tiny, tmp_path / f"eval_{name}")
        assert recorded["checkpoint"] == str(first / name) and recorded["test_count"] == reference["count"] == 50
        assert recorded["test_acc1"] == reference["acc1"] and recorded["test_acc5"] == reference["acc5"]
        assert recorded["test_loss"] == pytest.approx(reference["loss"], rel=1e-6)
        assert recorded["chance_acc1"] == 100 / K
        below = f"--teacher {first / name}: test top-1 {recorded['test_acc1']:.2f} is at or below chance"
        assert (below in log) == (recorded["test_acc1"] <= 100 / K)
    meta = yaml.safe_load((one / "config.yaml").read_text())["meta"]["supervision_checks"]
    assert meta["teachers"] == checks["teachers"] and meta["targets"] is None

    # 2 processes: each evaluates its share, the sums are reduced; the table's summary over two shards
    table = first / "p_smoothing.npy"  # (the probe's default, p_smoothing_best.npy, may be epoch 0's empty table)
    accelerate_launch("tests/supervision_probe.py", str(mnist_tiny), str(first), str(tmp_path / "two"),
                      "kd", "filter_kd", "--", *FAST, *NOISE, "--epochs", "1", "--targets", str(table))
    two = json.loads((tmp_path / "two" / "kd" / "supervision_checks.json").read_text())["teachers"]
    assert [t["test_acc1"] for t in two] == [checks["teachers"][0]["test_acc1"]]
    summary = json.loads((tmp_path / "two" / "filter_kd" / "supervision_checks.json").read_text())["targets"]
    assert_summary(summary, numpy_summary(table, tmp_path / "two" / "filter_kd", ALPHA, "first"))


def test_the_teacher_pass_keeps_the_rng_and_the_trajectory_and_is_not_repeated_on_resume(
        teachers: dict[str, Path], mnist_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = [*NOISE, "--method", "kd", "--teacher", str(teachers["first"] / "model_best.pth.tar"), "--workers", "2",
            "--lr-scheduler", "step", "--print-freq", "1"]
    real = supervision_checks.evaluate_teachers
    states = []

    def watched(ctx, supervision, progress):
        before = torch.get_rng_state()
        results = real(ctx, supervision, progress)
        states.append(torch.equal(before, torch.get_rng_state()))
        # without the restore it would differ: a DataLoader draws its workers' base seed from torch's RNG
        supervision_checks.evaluate(supervision.teachers[0], ctx.data.eval_loaders["test"], ctx.accelerator, 0,
                                    progress=False)
        states.append(torch.equal(before, torch.get_rng_state()))
        torch.set_rng_state(before)
        return results

    monkeypatch.setattr(supervision_checks, "evaluate_teachers", watched)
    assert train(mnist_tiny, tmp_path / "checked", *args, "--epochs", "2") == 0
    assert states == [True, False]

    monkeypatch.setattr(supervision_checks, "evaluate_teachers", lambda *a: [])  # a run without the pass
    assert train(mnist_tiny, tmp_path / "unchecked", *args, "--epochs", "2") == 0
    assert_same_csvs(tmp_path / "checked", tmp_path / "unchecked")

    monkeypatch.setattr(supervision_checks, "evaluate_teachers", real)
    resumed = tmp_path / "resumed"
    assert train(mnist_tiny, resumed, *args, "--epochs", "1") == 0
    recorded = json.loads((resumed / "supervision_checks.json").read_text())

    def fail(*a):
        raise AssertionError("a resumed run evaluated its teachers again")

    monkeypatch.setattr(supervision_checks, "evaluate_teachers", fail)
    assert train(mnist_tiny, resumed, *args, "--epochs", "2", "--resume") == 0
    assert json.loads((resumed / "supervision_checks.json").read_text()) == recorded
    assert yaml.safe_load((resumed / "config.yaml").read_text())["meta"]["supervision_checks"] == recorded
    assert_same_csvs(tmp_path / "checked", resumed)


def test_the_shard_sums_do_not_depend_on_the_chunk_size() -> None:
    """The sums are taken a chunk of rows at a time (no float64 copy of an ImageNet shard)."""
    from cg_train.smoothing_record import TableRecord
    from cg_train.supervision.target_checks import shard_sums

    gen = torch.Generator().manual_seed(0)
    rows = torch.softmax(torch.randn(50, K, generator=gen) * 3, 1)
    seen = torch.rand(50, generator=gen) > 0.2
    rows[~seen] = 0
    observed, true = torch.randint(K, (50,), generator=gen), torch.randint(-1, K, (50,), generator=gen)
    updates = torch.randint(1, 9, (50,), generator=gen) * seen
    record = TableRecord(0.05, 1.0, "first", 8, "x_updates.npy")
    whole = shard_sums(rows, seen, observed, true, updates, record)
    torch.testing.assert_close(shard_sums(rows, seen, observed, true, updates, record, chunk=7), whole)
    assert whole[:3].tolist() == [50, (~seen).sum(), seen.sum()]
    assert shard_sums(rows[:0], seen[:0], observed[:0], true[:0], updates[:0], record).tolist() == [0.0] * 10
