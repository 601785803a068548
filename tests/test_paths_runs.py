"""Path logs, --store-learned, seed 002's logs and p_smoothing in real training runs on MNIST JPEGs.

Values are checked against an independent recomputation: the saved model is
loaded again and run over the images here, and the expected numbers are
computed with NumPy.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch
from omegaconf import OmegaConf
from PIL import Image

from cg_train.cli import main
from cg_train.data.readers import DATASETS
from cg_train.data.transforms import eval_transform
from cg_train.models import build_model
from conftest import FAST, REPO, kill_when, read_csv, train
from test_distributed import launch

K = 10  # classes of the MNIST fixture
ALL = ["--paths", "--paths-eval", "--paths-topk", str(K), "--store-learned", "--seed002-logs",
       "--p-smoothing", "0.3", "record.paths_rows_per_part=64", "--corrupt-fraction", "0.5", "--sample-size", "20"]


def logits_of(checkpoint: Path, image_paths: list[str]) -> np.ndarray:
    """Run the checkpoint's model over the images (eval transform), as a user would by hand."""
    model = build_model("simple_cnn", K)
    model.load_state_dict(torch.load(checkpoint, weights_only=False)["state_dict"])
    model.eval()
    transform = eval_transform(32, 32)
    images = torch.stack([transform(Image.open(p).convert("RGB")) for p in image_paths])
    with torch.no_grad():
        return model(images).double().numpy()


def expected_rows(logits: np.ndarray, observed: np.ndarray, true: np.ndarray) -> pd.DataFrame:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    rows = np.arange(len(logits))
    others = logits.copy()
    others[rows, observed] = -np.inf
    top = np.argsort(-probs, axis=1)
    frame = pd.DataFrame({"loss": -np.log(probs[rows, observed]), "p_observed": probs[rows, observed],
                          "p_true": probs[rows, true], "margin": logits[rows, observed] - others.max(axis=1),
                          "correct": top[:, 0] == observed})
    for i in range(K):
        frame[f"top{i + 1}_class"] = top[:, i]
        frame[f"top{i + 1}_prob"] = probs[rows, top[:, i]]
    return frame


def assert_rows_match(logged: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(logged) == len(expected) > 0
    for column in ("loss", "p_observed", "p_true", "margin"):
        np.testing.assert_allclose(logged[column].to_numpy(np.float64), expected[column], rtol=1e-4, atol=1e-5,
                                   err_msg=column)
    assert (logged["correct"].to_numpy() == expected["correct"].to_numpy()).all()
    for i in (1, 2, 3):  # ranks further down can swap on near-ties in float32
        assert (logged[f"top{i}_class"].to_numpy() == expected[f"top{i}_class"].to_numpy()).all()
    np.testing.assert_allclose(logged[[f"top{i}_prob" for i in range(1, K + 1)]].to_numpy(np.float64),
                               expected[[f"top{i}_prob" for i in range(1, K + 1)]], atol=1e-3)


def read_paths(out: Path, name: str = "paths") -> pd.DataFrame:
    frame = ds.dataset(out / name, partitioning="hive").to_table().to_pandas()
    return frame.sort_values(["epoch", "step", "rank", "index"]).reset_index(drop=True)


def ema_table(paths: pd.DataFrame, alpha: float) -> np.ndarray:
    """Seed 000's store_table, replayed from the logged full probability vectors in training order."""
    table = np.zeros((300, K))
    seen = np.zeros(300, bool)
    probs = np.zeros((len(paths), K))
    for i in range(1, K + 1):
        probs[np.arange(len(paths)), paths[f"top{i}_class"]] = paths[f"top{i}_prob"]
    for row, index in enumerate(paths["index"].to_numpy()):
        table[index] = (1 - alpha) * table[index] + alpha * probs[row] if seen[index] else probs[row]
        seen[index] = True
    return table


def test_path_logs_match_an_independent_recomputation(mnist_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(mnist_small, out, "--epochs", "2", *ALL) == 0
    record = pd.read_parquet(out / "corruption.parquet")
    files, observed, true = record["path"].tolist(), record["observed_label"].to_numpy(), record["true_label"].to_numpy()

    # every training sample exactly once per epoch, in training steps and in eval passes (epochs 0..2)
    paths, evals = read_paths(out), read_paths(out, "paths_eval")
    for frame, epochs in ((paths, [0, 1]), (evals, [0, 1, 2])):
        assert sorted(frame["epoch"].astype(int).unique()) == epochs
        for _, rows in frame.groupby("epoch", observed=True):
            assert sorted(rows["index"]) == list(range(300))
    assert (paths["observed_label"] == observed[paths["index"]]).all()
    assert (paths["true_label"] == true[paths["index"]]).all()

    # eval passes before training and after the last epoch, and the very first training step, from the models
    initial = logits_of(out / "initial_state.pth.tar", files)
    final = logits_of(out / "checkpoint.pth.tar", files)
    for epoch, logits in ((0, initial), (2, final)):
        rows = evals[evals["epoch"].astype(int) == epoch].sort_values("index")
        assert_rows_match(rows.reset_index(drop=True), expected_rows(logits, observed, true))
    first_step = paths[(paths["epoch"].astype(int) == 0) & (paths["step"] == 0)]
    idx = first_step["index"].to_numpy()
    assert_rows_match(first_step.reset_index(drop=True), expected_rows(initial[idx], observed[idx], true[idx]))

    # --store-learned: a partition of the training set that agrees with the final model
    learned, not_learned = read_csv(out / "learned_examples.csv"), read_csv(out / "not_learned_examples.csv")
    assert list(learned.columns) == list(not_learned.columns) == ["index", "path", "label"]
    assert sorted([*learned["index"], *not_learned["index"]]) == list(range(300))
    assert learned["index"].tolist() == sorted(np.flatnonzero(final.argmax(axis=1) == observed).tolist())
    assert (learned["path"] == record["path"][learned["index"]].to_numpy()).all()
    assert (learned["label"] == observed[learned["index"]]).all()
    assert main(["subset", str(mnist_small), str(tmp_path / "easy"), str(out / "learned_examples.csv")]) == 0
    assert len(list((tmp_path / "easy" / "train").rglob("*.jpg"))) == len(learned)  # what `cg-train subset` reads

    # seed 002: train_log.csv from the logged training rows, results_valid.csv from the final model
    log = read_csv(out / "train_log.csv")
    assert list(log.columns) == ["epoch", "train_error", "train_loss", "valid_error", "valid_top5_error", "valid_loss"]
    assert log["epoch"].tolist() == [1, 2]
    by_epoch = paths.groupby("epoch", observed=True)
    np.testing.assert_allclose(log["train_loss"], by_epoch["loss"].mean(), rtol=1e-5)
    np.testing.assert_allclose(log["train_error"], 1 - by_epoch["correct"].mean(), rtol=1e-6)
    test = read_csv(out / "test.csv")
    np.testing.assert_allclose(log["valid_error"], 1 - test["acc1"][1:] / 100, atol=1e-9)
    val = DATASETS.get("imagefolder")(str(mnist_small), "val", classes=[str(d) for d in range(K)])
    results = read_csv(out / "results_valid.csv")
    assert list(results.columns) == ["index", "Loss", "Prediction", "Confidence", "Label"]
    expected = expected_rows(logits_of(out / "checkpoint.pth.tar", list(val.files)), val.observed_labels,
                             val.true_labels)
    assert results["index"].tolist() == list(range(100)) and (results["Label"] == val.observed_labels).all()
    np.testing.assert_allclose(results["Loss"], expected["loss"], rtol=1e-4)
    assert (results["Prediction"] == expected["top1_class"]).all()
    np.testing.assert_allclose(results["Confidence"], expected["top1_prob"], rtol=1e-4)

    # p_smoothing: seed 000's running average, replayed from the logged probability vectors
    np.testing.assert_allclose(np.load(out / "p_smoothing.npy"), ema_table(paths, 0.3), atol=2e-3)
    assert (out / "p_smoothing_best.npy").is_file()

    # merge: one file that pandas, pyarrow and duckdb read as the same table
    assert main(["paths", "merge", str(out)]) == 0
    merged = pd.read_parquet(out / "paths.parquet")
    assert list(merged.columns[:3]) == ["epoch", "step", "rank"]
    as_logged = paths.assign(epoch=paths["epoch"].astype(np.int16), rank=paths["rank"].astype(np.int16))
    pd.testing.assert_frame_equal(merged.sort_values(["epoch", "step", "index"]).reset_index(drop=True),
                                  as_logged[merged.columns].reset_index(drop=True))
    assert pq.read_table(out / "paths.parquet").num_rows == 600
    assert duckdb.sql(f"select count(*), count(distinct index) from '{out / 'paths.parquet'}' where epoch = 1"
                      ).fetchall() == [(300, 300)]

    # export-td: seed 002's arrays, exactly the logged eval passes after each training epoch
    assert main(["paths", "export-td", str(out), "--top-n", "3"]) == 0
    saved = np.load(out / "training_dynamics.npz")
    td, labels = saved["td"], saved["labels"]
    assert td.shape == (300, 2, 3) and labels.shape == (300, 3) and (labels[:, 0] == observed).all()
    for t, epoch in enumerate((1, 2)):
        rows = evals[evals["epoch"].astype(int) == epoch].sort_values("index")
        probs = np.zeros((300, K))
        for i in range(1, K + 1):
            probs[np.arange(300), rows[f"top{i}_class"]] = rows[f"top{i}_prob"]
        np.testing.assert_allclose(td[:, t, :], np.take_along_axis(probs, labels.astype(int), 1), atol=1e-3)
    meta = torch.load(out / "metadata.pth")
    assert meta["true_targets"].tolist() == true.tolist()
    assert meta["label_flipped"].tolist() == record["is_corrupt"].tolist()


def test_killed_run_resumes_to_the_same_path_logs(mnist_small: Path, tmp_path: Path) -> None:
    args = ["--epochs", "2", "--seed", "3", *ALL]
    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *args) == 0

    killed = tmp_path / "killed"
    epoch_1 = killed / "paths" / "epoch=1" / "rank=0"
    # kill it in the middle of epoch 1's training, after some of its parts were written
    kill_when([sys.executable, "-m", "cg_train", str(mnist_small), "--output-dir", str(killed), *FAST, *args],
              lambda: epoch_1.is_dir() and any(epoch_1.glob("part-*.parquet")))
    assert not (killed / "learned_examples.csv").exists()  # it really was cut short
    # what a dead run leaves is readable as it is
    partial = read_paths(killed)
    assert 300 < len(partial) < 600 and not partial.duplicated(["epoch", "index"]).any()
    assert duckdb.sql(f"select count(*) from read_parquet('{killed}/paths/**/*.parquet', hive_partitioning=true)"
                      ).fetchall() == [(len(partial),)]

    assert train(mnist_small, killed, *args, "--resume") == 0
    for name in ("paths", "paths_eval"):
        pd.testing.assert_frame_equal(read_paths(killed, name), read_paths(reference, name), obj=name)
    for name in ("train_log.csv", "learned_examples.csv", "not_learned_examples.csv", "results_valid.csv"):
        assert (killed / name).read_bytes() == (reference / name).read_bytes(), name
    for name in ("p_smoothing.npy", "p_smoothing_updates.npy"):  # the rows and how many updates each had
        np.testing.assert_array_equal(np.load(killed / name), np.load(reference / name), err_msg=name)
    assert (killed / "p_smoothing.json").read_bytes() == (reference / "p_smoothing.json").read_bytes()


def test_two_ranks_log_each_sample_once_per_epoch(mnist_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    launch("-m", "cg_train", str(mnist_small), "--output-dir", str(out), *FAST, "--epochs", "2", *ALL)
    assert OmegaConf.load(out / "config.yaml").meta.world_size == 2
    paths, evals = read_paths(out), read_paths(out, "paths_eval")
    for frame in (paths, evals):
        assert set(frame["rank"].astype(int)) == {0, 1}
        for _, rows in frame.groupby("epoch", observed=True):
            assert sorted(rows["index"]) == list(range(300))  # no sample lost, none twice across ranks
    shares = paths.groupby(["epoch", "step", "rank"], observed=True).size().unstack("rank")
    assert (abs(shares[0] - shares[1]) <= 1).all()  # every global batch split evenly over the ranks
    record = pd.read_parquet(out / "corruption.parquet")
    learned, not_learned = read_csv(out / "learned_examples.csv"), read_csv(out / "not_learned_examples.csv")
    assert sorted([*learned["index"], *not_learned["index"]]) == list(range(300))
    final = logits_of(out / "checkpoint.pth.tar", record["path"].tolist())
    assert learned["index"].tolist() == np.flatnonzero(final.argmax(axis=1) == record["observed_label"]).tolist()
    # each process updated the rows of its own samples; the merged table is the one-process average
    np.testing.assert_allclose(np.load(out / "p_smoothing.npy"), ema_table(paths, 0.3), atol=2e-3)
    assert np.load(out / "p_smoothing_updates.npy").tolist() == [2] * 300  # one update per sample and epoch
    assert main(["paths", "merge", str(out), str(tmp_path / "merged.parquet")]) == 0
    merged = pd.read_parquet(tmp_path / "merged.parquet")
    assert len(merged) == 600 and set(merged["rank"]) == {0, 1}


def test_sigterm_mid_epoch_checkpoint_keeps_the_path_logs_exact(mnist_small: Path, tmp_path: Path) -> None:
    """A preemption checkpoint in the middle of an epoch: the logs reach exactly its step, and resume from it."""
    args = ["--epochs", "1", "--seed", "5", "--batch-size", "10", *ALL]
    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *args) == 0

    stopped = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "cg_train", str(mnist_small), "--output-dir", str(stopped), *FAST, *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    epoch_0 = stopped / "paths" / "epoch=0" / "rank=0"  # parts of 64 rows: the first one is out after 7 steps
    while not (epoch_0.is_dir() and any(epoch_0.glob("part-*.parquet"))):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    step = torch.load(stopped / "checkpoint.pth.tar", weights_only=False)["train_state"]["step"]
    assert 0 < step < 30
    logged = read_paths(stopped)  # flushed by the checkpoint: every step before it, nothing after
    assert sorted(logged["step"].unique()) == list(range(step)) and len(logged) == 10 * step

    assert train(mnist_small, stopped, *args, "--resume") == 0
    for name in ("paths", "paths_eval"):
        pd.testing.assert_frame_equal(read_paths(stopped, name), read_paths(reference, name), obj=name)
    for name in ("train_log.csv", "learned_examples.csv", "not_learned_examples.csv"):
        assert (stopped / name).read_bytes() == (reference / name).read_bytes(), name
    for name in ("p_smoothing.npy", "p_smoothing_updates.npy"):
        np.testing.assert_array_equal(np.load(stopped / name), np.load(reference / name), err_msg=name)
