"""``cg-analyze relabel RUN_DIR --detector NAME (--ratio r | --count n) --source truth|model --out FILE``.

Seed 002's data debugging (section 4.3): the samples a detector finds most suspicious get a new label
instead of being dropped. The suspects are chosen as ``--remove-ratio`` chooses them (the ``round(r*N)``
or ``n`` highest scores, ties by the lower index: :func:`cg_train.label_debugging.most_suspicious`), from
``RUN_DIR/noise/scores.parquet`` (computed now when missing) or ``--scores FILE``.

- ``--source truth`` (its CUB protocol): the ground-truth label; suspects whose truth is unknown
  (WebVision, Clothing1M's noisy part) are skipped with a note.
- ``--source model`` (its WebVision protocol): the prediction of a model that never trained on the
  suspect, from ``--predictions PATH``: a run directory with ``heldout_predictions.parquet`` (a
  remove-and-retrain run with ``--predict-heldout`` that left the suspects out), a K-fold launch
  directory or its ``oos_predictions.parquet`` (every sample predicted by the fold model without it), or
  ``cg-train evaluate CKPT DATA --phases train_all --predictions`` output. Predictions of a model that
  trained on a suspect are refused (``trained_on``).

Output: one Parquet label table (``index, old_label, new_label, source, score``; the choice in its
metadata), read by any training run as ``cg-train DATA ... --labels FILE``.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cg_train.errors import CgTrainError
from cg_train.io import atomic_path
from cg_train.label_debugging import LABEL_COLUMNS, most_suspicious

from .kfold import HELDOUT_PREDICTIONS, OOS_TABLE, merge_folds, write_oos_table

META_KEY = b"cg_train.relabel"


@dataclass
class Relabelling:
    table: pd.DataFrame  # LABEL_COLUMNS
    chosen: int  # suspects chosen by the detector
    skipped: int  # suspects without a known truth (--source truth)
    true: np.ndarray  # int64, one per table row: the true label, -1 unknown
    meta: dict


def load_scores(run_dir: Path, scores: Optional[Path], detector: str) -> pd.DataFrame:
    """``scores.parquet`` of the run (computed and written when missing) or ``--scores``, with ``detector``."""
    path = scores or run_dir / "noise" / "scores.parquet"
    if not path.is_file():
        if scores is not None:
            raise CgTrainError(f"--scores {scores} does not exist (write it with `cg-analyze noise RUN_DIR`)")
        from .detectors import load_dynamics, usable_detectors
        from .noise_report import score_run

        dyn = load_dynamics(run_dir)
        names = usable_detectors(dyn)
        if detector not in names:
            raise CgTrainError(f"--detector {detector}: not computable from {run_dir} alone; run `cg-analyze noise "
                               f"{run_dir}` with what it needs (e.g. --oos KFOLD_DIR) first")
        print(f"cg-analyze: {path} missing: scoring {run_dir} with {', '.join(names)}", file=sys.stderr)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            score_run(dyn, names).to_parquet(tmp, index=False)
    table = pd.read_parquet(path)
    if detector not in table:
        known = [c for c in table.columns if c not in ("index", "path", "observed", "true", "is_corrupt")
                 and not c.endswith("_flagged")]
        raise CgTrainError(f"--detector {detector}: {path} has no such scores; choose one of: {', '.join(known)}")
    return table


def read_predictions(path: Path) -> pd.DataFrame:
    """``index, prediction, trained_on[, observed_label]`` from any prediction file or folder (module docstring)."""
    if path.is_dir():
        if (path / HELDOUT_PREDICTIONS).is_file():
            path = path / HELDOUT_PREDICTIONS
        elif (path / OOS_TABLE).is_file():
            path = path / OOS_TABLE
        else:  # a K-fold launch not merged yet (refused with the missing folds named if unfinished)
            path = write_oos_table(merge_folds(path), path / OOS_TABLE)
    elif not path.is_file():
        raise CgTrainError(f"--predictions {path} does not exist")
    table = pd.read_parquet(path, columns=None)
    if "index" not in table or "prediction" not in table:
        raise CgTrainError(f"--predictions {path} has no index/prediction columns: give heldout_predictions.parquet, "
                           f"oos_predictions.parquet or cg-train evaluate's predictions_<phase>.parquet")
    if "trained_on" not in table:
        table["trained_on"] = False  # the out-of-sample table: every row from the fold model without it
    keep = [c for c in ("index", "prediction", "trained_on", "observed_label") if c in table]
    return table[keep].set_index("index")


def relabel(run_dir: Path, detector: str, source: str, ratio: Optional[float] = None, count: Optional[int] = None,
            scores: Optional[Path] = None, predictions: Optional[Path] = None) -> Relabelling:
    table = load_scores(run_dir, scores, detector)
    n = len(table)
    wanted = int(round(ratio * n)) if ratio is not None else int(count or 0)
    if not 0 < wanted <= n:
        raise CgTrainError(f"--ratio/--count chooses {wanted} of {n} samples: choose between 1 and {n}")
    index = table["index"].to_numpy(np.int64)
    chosen = most_suspicious(index, table[detector].to_numpy(np.float64), wanted)
    rows = table.set_index("index").loc[chosen]
    old, true = rows["observed"].to_numpy(np.int64), rows["true"].to_numpy(np.int64)
    skipped = 0
    if source == "truth":
        known = true != -1
        skipped = int((~known).sum())
        if not known.any():
            raise CgTrainError(f"--source truth: none of the {wanted} suspects has a known true label; use --source "
                               f"model with --predictions")
        if skipped:
            print(f"cg-analyze: note: {skipped} of {wanted} suspects have no known true label and keep theirs "
                  f"(--source model relabels them)", file=sys.stderr)
        chosen, old, new, rows, true = chosen[known], old[known], true[known], rows[known], true[known]
    else:
        if predictions is None:
            raise CgTrainError("--source model needs --predictions PATH: the predictions of a model trained without "
                               "the suspects (a --predict-heldout remove-and-retrain run, or a K-fold launch)")
        preds = read_predictions(Path(predictions))
        missing = np.setdiff1d(chosen, preds.index.to_numpy(np.int64))
        if len(missing):
            raise CgTrainError(f"--predictions {predictions} has no prediction for {len(missing)} of the {wanted} "
                               f"suspects (e.g. index {missing[0]}): predict them with a run that left them out "
                               f"(--remove-ratio {ratio if ratio is not None else '...'} --detector {detector} "
                               f"--predict-heldout)")
        mine = preds.loc[chosen]
        seen = mine["trained_on"].to_numpy(bool)
        if seen.any():
            raise CgTrainError(f"--predictions {predictions}: the model trained on {int(seen.sum())} of the suspects "
                               f"(e.g. index {chosen[seen][0]}), so it has learned their given labels: predict with a "
                               f"run that left them out (--remove-ratio/--exclude and --predict-heldout, or cg-launch "
                               f"kfold)")
        if "observed_label" in mine and not np.array_equal(mine["observed_label"].to_numpy(np.int64), old):
            raise CgTrainError(f"--predictions {predictions} was made with other labels than {run_dir}: use a "
                               f"model of the same --seed, --corrupt-fraction and --noise-type")
        new = mine["prediction"].to_numpy(np.int64)
    labels = pd.DataFrame({"index": chosen, "old_label": old, "new_label": new, "source": source,
                           "score": rows[detector].to_numpy(np.float64)}, columns=list(LABEL_COLUMNS))
    meta = {"run": str(run_dir), "detector": detector, "ratio": ratio, "count": wanted, "source": source,
            "predictions": None if predictions is None else str(predictions)}
    return Relabelling(labels, wanted, skipped, true, meta)


def write_relabel(run_dir: Path, detector: str, source: str, out: Path, ratio: Optional[float] = None,
                  count: Optional[int] = None, scores: Optional[Path] = None,
                  predictions: Optional[Path] = None) -> list[Path]:
    result = relabel(Path(run_dir), detector, source, ratio, count, scores, predictions)
    table = pa.Table.from_pandas(result.table, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(result.meta).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    labels = result.table
    changed = int((labels.new_label != labels.old_label).sum())
    true = result.true
    known = true != -1
    correct = f"; {int((labels.new_label.to_numpy()[known] == true[known]).sum())} of {int(known.sum())} new labels " \
              f"are the true ones" if known.any() else ""
    print(f"cg-analyze: {len(labels)} of the {result.chosen} most suspicious samples by {detector} relabelled from "
          f"{source}: {changed} labels change{correct}")
    return [out]


def read_relabel_meta(path: Path) -> dict:
    """The choice a label table was made with (empty for a table from elsewhere)."""
    try:
        return json.loads((pq.read_schema(path).metadata or {}).get(META_KEY, b"{}"))
    except (OSError, ValueError):
        return {}
