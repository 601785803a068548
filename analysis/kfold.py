"""``cg-analyze kfold KFOLD_DIR``: merge K fold runs' out-of-sample predictions into one per-sample table.

A K-fold launch (``cg-launch kfold ... --folds K``, or ``cg-launch sweep`` of a sweep with axis
``noise.fold``) holds one run per fold, ``KFOLD_DIR/fold=I/``, trained without fold I; each wrote the
final model's prediction of its held-out fold (``heldout_predictions.parquet``, every class's
probability). The merge checks, from the runs' files only, that

- every fold 0..K-1 has finished (otherwise one line names the missing folds);
- every fold run saw the same labels and the same folds (``corruption.parquet``'s ``true_label``,
  ``observed_label`` and ``fold`` equal across runs: same ``--seed``, ``--corrupt-fraction``,
  ``--noise-type``, ``--labels``), and left out exactly its own fold;
- the held-out predictions cover exactly that fold, each from a model that never trained on it;

and writes ``KFOLD_DIR/oos_predictions.parquet``: one row per training sample (``index, fold,
observed_label, true_label, prediction, confidence, loss, probs`` with ``probs`` the K-class
distribution), what ``cg-analyze noise RUN_DIR --oos KFOLD_DIR`` scores as ``confident_learning_oos``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from cg_train.errors import CgTrainError
from cg_train.io import atomic_path

#: what a fold run writes (cg_train/recorders/heldout.py) and what the merge writes; files are the contract
HELDOUT_PREDICTIONS = "heldout_predictions.parquet"
OOS_TABLE = "oos_predictions.parquet"
META_KEY = b"cg_train.kfold"


@dataclass
class OutOfSample:
    table: pd.DataFrame  # one row per training sample, by index: fold, labels, prediction, confidence, loss
    probs: np.ndarray  # float32 [N, K]: each sample's predicted distribution, from the model without its fold
    meta: dict  # folds, runs, label_digest


def label_digest(true: np.ndarray, observed: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (true, observed):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()


def fold_runs(kfold_dir: Path) -> tuple[int, dict[int, Path]]:
    """(K, fold -> run directory): from the launch's record of its points, else from the runs' config.yaml."""
    configs: dict[Path, dict] = {}
    points = kfold_dir / ".launch" / "points.yaml"
    if points.is_file():
        for name, cfg in (yaml.safe_load(points.read_text()) or {}).items():
            configs[kfold_dir / name] = cfg
    for path in sorted(kfold_dir.glob("*/config.yaml")):
        configs.setdefault(path.parent, yaml.safe_load(path.read_text()) or {})
    runs: dict[int, Path] = {}
    ks = set()
    for run, cfg in configs.items():
        noise = cfg.get("noise") or {}
        if noise.get("fold") is None:
            continue
        ks.add(int(noise.get("folds") or 0))
        fold = int(noise["fold"])
        if fold in runs and runs[fold] != run:
            raise CgTrainError(f"{kfold_dir}: fold {fold} is trained by two runs, {runs[fold].name} and {run.name}: "
                               f"keep one K-fold launch per directory")
        runs[fold] = run
    if not runs:
        raise CgTrainError(f"{kfold_dir} holds no fold run (a run with --folds K --fold I): launch them with "
                           f"`cg-launch kfold [launch options] -- DATA --folds K ... --output-dir {kfold_dir}`")
    if len(ks) != 1:
        raise CgTrainError(f"{kfold_dir}: the fold runs split into different numbers of folds ({sorted(ks)}): "
                           f"keep one K-fold launch per directory")
    return ks.pop(), runs


def read_fold(run: Path, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(corruption record, held-out predictions) of one fold run, checked against each other."""
    record = pd.read_parquet(run / "corruption.parquet",
                             columns=["index", "true_label", "observed_label", "removed", "fold"])
    predictions = pd.read_parquet(run / HELDOUT_PREDICTIONS)
    members = np.flatnonzero(record["fold"].to_numpy() == fold)
    if not np.array_equal(np.flatnonzero(record["removed"].to_numpy(bool)), members):
        raise CgTrainError(f"{run}: the run left out other samples than its fold {fold}: merge only fold runs")
    index = predictions["index"].to_numpy(np.int64)
    if not np.array_equal(np.sort(index), members):
        raise CgTrainError(f"{run}/{HELDOUT_PREDICTIONS} does not predict exactly fold {fold}'s {len(members)} "
                           f"samples ({len(index)} rows): the file belongs to another run")
    if predictions["trained_on"].to_numpy(bool).any():
        raise CgTrainError(f"{run}/{HELDOUT_PREDICTIONS}: some predictions come from a model that trained on them")
    return record, predictions


def dense_probs(predictions: pd.DataFrame, num_classes: int) -> np.ndarray:
    """float32 [R, K] from the top-k columns (k = K for held-out predictions: exact)."""
    classes = np.stack(predictions["top_classes"].to_numpy()).astype(np.int64)
    probs = np.stack(predictions["top_probs"].to_numpy()).astype(np.float32)
    residual = np.clip(1.0 - probs.sum(axis=1), 0.0, None) / max(num_classes - classes.shape[1], 1)
    dense = np.repeat(residual[:, None], num_classes, axis=1).astype(np.float32)
    np.put_along_axis(dense, classes, probs, axis=1)
    return dense


def merge_folds(kfold_dir: Path) -> OutOfSample:
    """The out-of-sample table of a finished K-fold launch (see the module docstring)."""
    kfold_dir = Path(kfold_dir)
    if not kfold_dir.is_dir():
        raise CgTrainError(f"{kfold_dir} is not a directory: pass the folder of a K-fold launch")
    k, runs = fold_runs(kfold_dir)
    missing = [i for i in range(k) if i not in runs or not (runs[i] / HELDOUT_PREDICTIONS).is_file()]
    if missing:
        raise CgTrainError(f"{kfold_dir}: fold(s) {', '.join(map(str, missing))} of {k} have not finished (no "
                           f"{HELDOUT_PREDICTIONS}): run them first (running `cg-launch kfold` again resumes them)")
    first: Optional[pd.DataFrame] = None
    parts = []
    for fold in range(k):
        record, predictions = read_fold(runs[fold], fold)
        if first is None:
            first = record
        else:
            for column, what in (("true_label", "labels"), ("observed_label", "labels"), ("fold", "folds")):
                if not np.array_equal(record[column].to_numpy(), first[column].to_numpy()):
                    raise CgTrainError(
                        f"{runs[fold]} was trained on other {what} than {runs[0]} ({column} differs): all folds "
                        f"need the same dataset, --seed, --corrupt-fraction, --noise-type and --labels")
        parts.append(predictions.assign(fold=fold))
    assert first is not None
    table = pd.concat(parts, ignore_index=True).sort_values("index", kind="stable").reset_index(drop=True)
    num_classes = len(table["top_probs"].iloc[0])
    if not np.array_equal(table["observed_label"].to_numpy(np.int64), first["observed_label"].to_numpy(np.int64)):
        raise CgTrainError(f"{kfold_dir}: held-out predictions carry other labels than the runs' corruption.parquet")
    merged = pd.DataFrame({
        "index": table["index"].to_numpy(np.int64), "fold": table["fold"].to_numpy(np.int64),
        "observed_label": first["observed_label"].to_numpy(np.int64),
        "true_label": first["true_label"].to_numpy(np.int64),
        "prediction": table["prediction"].to_numpy(np.int64), "confidence": table["confidence"].to_numpy(np.float32),
        "loss": table["loss"].to_numpy(np.float32)})
    meta = {"folds": k, "runs": [str(runs[i]) for i in range(k)],
            "label_digest": label_digest(merged["true_label"], merged["observed_label"])}
    return OutOfSample(merged, dense_probs(table, num_classes), meta)


def write_oos_table(oos: OutOfSample, path: Path) -> Path:
    columns = {name: pa.array(oos.table[name].to_numpy()) for name in oos.table.columns}
    columns["probs"] = pa.FixedSizeListArray.from_arrays(oos.probs.reshape(-1), oos.probs.shape[1])
    table = pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(oos.meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_oos_table(path: Path) -> OutOfSample:
    """An ``oos_predictions.parquet`` as written by :func:`write_oos_table`."""
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise CgTrainError(f"{path} is not a readable Parquet table ({str(exc).splitlines()[0]})") from None
    if "probs" not in table.column_names or "observed_label" not in table.column_names:
        raise CgTrainError(f"{path} is not an out-of-sample table (no probs/observed_label columns): write it "
                           f"with `cg-analyze kfold KFOLD_DIR`")
    probs = np.stack(table.column("probs").to_numpy(zero_copy_only=False)).astype(np.float32)
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    return OutOfSample(table.drop(["probs"]).to_pandas(), probs, meta)


def oos_probabilities(source: Path, observed: np.ndarray) -> np.ndarray:
    """float64 [N, K] out-of-sample probabilities for a run whose observed labels are ``observed``.

    ``source``: a K-fold launch directory (merged now, and written to its ``oos_predictions.parquet``)
    or such a table. Refused unless the folds were trained on the very labels of the scored run."""
    source = Path(source)
    if source.is_dir():
        path = write_oos_table(merge_folds(source), source / OOS_TABLE)
    elif source.is_file():
        path = source
    else:
        raise CgTrainError(f"--oos {source} does not exist: give a K-fold launch directory or its {OOS_TABLE}")
    oos = read_oos_table(path)
    labels = oos.table["observed_label"].to_numpy(np.int64)
    if len(labels) != len(observed) or not np.array_equal(labels, observed):
        differ = len(labels) if len(labels) != len(observed) else int((labels != observed).sum())
        raise CgTrainError(f"--oos {source}: the K-fold runs trained on other labels than this run ({differ} "
                           f"differ): run the folds with this run's dataset, --seed, --corrupt-fraction and "
                           f"--noise-type")
    return oos.probs.astype(np.float64)


def write_kfold(kfold_dir: Path, out: Optional[Path] = None) -> list[Path]:
    """``cg-analyze kfold``: the merged table and a one-table summary (out-of-sample top-1 per fold)."""
    oos = merge_folds(kfold_dir)
    path = write_oos_table(oos, Path(out) if out else Path(kfold_dir) / OOS_TABLE)
    merged = oos.table
    known = merged["true_label"] != -1
    lines = [f"# Out-of-sample predictions: {kfold_dir}", "",
             f"{len(merged)} training samples in {oos.meta['folds']} stratified folds; each fold "
             f"predicted by a model trained on the others.", "",
             "| fold | samples | top-1 on the given labels | top-1 on the true labels |", "|---|---|---|---|"]
    for fold, part in merged.groupby("fold"):
        given = (part.prediction == part.observed_label).mean() * 100
        true = part[part.true_label != -1]
        true_acc = f"{(true.prediction == true.true_label).mean() * 100:.2f}" if len(true) else "-"
        lines.append(f"| {fold} | {len(part)} | {given:.2f} | {true_acc} |")
    lines += ["", f"Score a run of the same labels with `cg-analyze noise RUN_DIR --oos {kfold_dir}` "
              f"(column confident_learning_oos).", ""]
    summary = path.with_name("kfold.md")
    with atomic_path(summary) as tmp:
        Path(tmp).write_text("\n".join(lines))
    print(f"cg-analyze: merged {len(merged)} out-of-sample predictions of {oos.meta['folds']} folds "
          f"({int(known.sum())} with a known true label)")
    return [path, summary]
