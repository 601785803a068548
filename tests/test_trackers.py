"""--log-with: experiment trackers through accelerate hold the CSVs' numbers, one value per step, across kill + resume.

Read back with each library's own reader: TensorBoard's EventAccumulator, MLflow's client, and the protobuf records
of wandb's offline ``.wandb`` files (a LevelDB-style log of ``wandb_internal_pb2.Record``, what ``wandb sync``
uploads).
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import FAST, REPO, read_csv, train
from test_preemption import signal_group, wait_for_train_rows

pytest.importorskip("tensorboard")

#: 300 samples, batch 10: 30 steps per epoch; every step logged; a DataLoader worker, as users run it
ARGS = ["--epochs", "3", "--print-freq", "1", "--batch-size", "10", "--corrupt-fraction", "0.5",
        "--sample-size", "50", "--seed", "3", "--workers", "1"]
STEPS = 30
EVAL = ("pristine", "corrupt", "train_sample", "test")


def expected(out: Path) -> dict[str, pd.Series]:
    """tag -> values by global step, from the run's CSVs (the source of truth)."""
    tags = {}
    rows = read_csv(out / "train.csv")
    tags["train/loss"] = pd.Series(rows.loss.to_numpy(), index=rows.epoch * STEPS + rows.step + 1)
    for phase in EVAL:
        table = read_csv(out / f"{phase}.csv")
        for metric in ("loss", "acc1", "acc5"):
            tags[f"{phase}/{metric}"] = pd.Series(table[metric].to_numpy(), index=table.epoch * STEPS)
    ece = read_csv(out / "calibration.csv")
    for phase, table in ece.groupby("phase"):
        tags[f"{phase}/ece"] = pd.Series(table.ece.to_numpy(), index=table.epoch.to_numpy() * STEPS)
    return tags


def assert_matches_csvs(logged: dict[str, list[tuple[int, float]]], out: Path) -> None:
    """Every CSV value at its step, each step once (no gap, no duplicate), nothing else."""
    for tag, want in expected(out).items():
        steps = [s for s, _ in logged[tag]]
        assert steps == sorted(set(steps)), f"{tag}: a step logged twice or out of order: {steps}"
        assert steps == want.index.tolist(), tag
        np.testing.assert_allclose([v for _, v in logged[tag]], want.to_numpy(), rtol=1e-6, err_msg=tag)


def tensorboard_scalars(root: Path, purge: bool = True) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(root), purge_orphaned_data=purge)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def kill_after_rows(cmd: list[str], out: Path, epoch: int, rows: int) -> None:
    """SIGKILL (no checkpoint, no handler) once train.csv has ``rows`` rows of ``epoch``."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        while not ((out / "train.csv").exists() and (read_csv(out / "train.csv").epoch == epoch).sum() >= rows):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGSTOP)  # frozen where it is: the kill lands mid-epoch whatever the speed
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def sigterm_then_sigkill(data: Path, out: Path, args: list[str]) -> None:
    """SIGTERM to the whole process group (DataLoader worker and wandb's service too, as SLURM preemption sends it)
    a few steps into epoch 0: a checkpoint at that step; resume, SIGKILL a few steps into epoch 1: the steps logged
    since the checkpoint after evaluation 1 are in the trackers but not in the checkpoint."""
    cmd = [sys.executable, "-m", "cg_train", str(data), "--output-dir", str(out), *FAST, *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wait_for_train_rows(out, epoch=0, rows=3, proc=proc)
    signal_group(proc, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    kill_after_rows([*cmd, "--resume"], out, epoch=1, rows=3)
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False)
    assert (ckpt["train_state"]["epoch"], ckpt["train_state"]["step"]) == (1, 0)  # the checkpoint after eval 1


@pytest.mark.slow
def test_tensorboard_holds_the_csv_values_once_per_step_across_sigterm_sigkill_and_resume(
        mnist_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    sigterm_then_sigkill(mnist_small, out, [*ARGS, "--log-with", "tensorboard"])
    root = out / "tensorboard" / "cg-train"
    stale = tensorboard_scalars(root, purge=False)["train/loss"]
    assert max(s for s, _ in stale) > 1 * STEPS  # steps logged after that checkpoint, by the killed process
    assert train(mnist_small, out, *ARGS, "--log-with", "tensorboard", "--resume") == 0

    assert len(list(root.glob("events.out.tfevents.*"))) == 3  # three starts, one writer each
    scalars = tensorboard_scalars(root)
    assert_matches_csvs(scalars, out)
    lr = dict(scalars["train/lr"])
    assert lr[1] == pytest.approx(0.05) and len(lr) == len(scalars["train/loss"])
    speed = [v for s, v in scalars["train/images_per_s"]]
    assert len(speed) > 50 and all(v > 0 for v in speed)
    # the config, once (at the fresh start), as TensorBoard hyperparameters and accelerate's hparams.yml
    hparams = list(root.glob("*/hparams.yml"))
    assert len(hparams) == 1 and "train.seed: 3" in hparams[0].read_text()


def wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file: 7-byte header, then 32 KiB blocks of (crc, length, type) chunks."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", path
    pos, pending = 7, b""
    while pos + 7 <= len(data):  # a killed writer may leave a last chunk cut short: it is not read
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if len(chunk) < length:
            return
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_history(run_dirs: list[Path]) -> dict[str, list[tuple[int, float]]]:
    logged: dict[str, list[tuple[int, float]]] = {}
    for run_dir in run_dirs:
        for record in wandb_records(next(run_dir.glob("run-*.wandb"))):
            if record.WhichOneof("record_type") == "history":
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if not key.startswith("_"):
                        logged.setdefault(key, []).append((record.history.step.num, json.loads(item.value_json)))
    return logged


@pytest.mark.slow
def test_wandb_offline_and_mlflow_continue_the_same_run_across_sigterm_sigkill_and_resume(
        mnist_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    mlflow = pytest.importorskip("mlflow")
    for key in ("WANDB_DIR", "MLFLOW_TRACKING_URI", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network, no account
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    args = [*ARGS, "--epochs", "2", "--log-with", "wandb,mlflow"]
    sigterm_then_sigkill(mnist_small, out, args)
    ids = json.loads((out / "trackers.json").read_text())["run_ids"]
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    held = [m.step for m in client.get_metric_history(ids["mlflow"], "train/loss")]
    assert max(held) > STEPS  # MLflow holds steps the checkpoint does not know of: skipped on resume
    assert train(mnist_small, out, *args, "--resume") == 0
    assert json.loads((out / "trackers.json").read_text())["run_ids"] == ids

    # MLflow: one run, every CSV value once
    run = client.get_run(ids["mlflow"])
    assert run.data.params["train.seed"] == "3" and run.info.run_name == "run"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    logged = {tag: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, tag),
                                                     key=lambda m: (m.step, m.timestamp))]
              for tag in expected(out)}
    assert_matches_csvs(logged, out)

    # wandb: one run id in three offline segments (what `wandb sync` uploads as one run). Its service process dies
    # of a SIGTERM sent to every process (wandb#9963) and of its parent's SIGKILL, losing the records it had not
    # written yet, so the first two segments may hold fewer steps; the last one holds every step from the checkpoint
    # after evaluation 1 on, and every value any segment holds is the CSVs' value at that step
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 3 and all(r.name.endswith("-" + ids["wandb"]) for r in runs)
    want = expected(out)
    last = wandb_history(runs[-1:])
    for tag, values in want.items():
        after = values[values.index > STEPS]
        assert [s for s, _ in last[tag]] == after.index.tolist(), tag
        np.testing.assert_allclose([v for _, v in last[tag]], after.to_numpy(), rtol=1e-12, err_msg=tag)
        for step, value in wandb_history(runs).get(tag, []):
            assert value == pytest.approx(values.loc[step], rel=1e-12), (tag, step)


def test_unknown_or_missing_tracker_is_one_line(mnist_small: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert train(mnist_small, tmp_path / "a", "--log-with", "tensorboard,neptune") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--log-with" in err[0] and "neptune" in err[0], err
    assert not (tmp_path / "a").exists()
