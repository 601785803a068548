"""Data debugging (seed 002): which samples are the most suspicious, and ``--labels FILE`` label tables.

Shared by the engine (``--remove-ratio``, ``--labels``) and ``cg-analyze relabel``, so both choose the same
samples; light on purpose (NumPy and pandas only): analysis imports it without the data layer.

:func:`most_suspicious` is the one ranking rule: the highest scores first, ties broken by the lower index.

``--labels FILE`` replaces observed labels after the corruption. Seed 002's section 4.3 relabels the
samples a detector finds most suspicious and trains again on the debugged labels. ``cg-analyze relabel``
writes the table, one row per relabelled sample:

    index      int   Manifest index of the training sample
    old_label  int   its label in the run the suspects were found in (after the corruption)
    new_label  int   the label to train on instead
    source     str   where new_label came from: truth (the ground truth) or model (a prediction)
    score      float the detector's score that chose it

``old_label`` must equal this run's label at ``index`` (after ``--corrupt-fraction/--noise-type/--seed``):
a table made for another corruption is refused instead of silently training on a mix of the two. The
run's ``corruption.parquet`` keeps the label before debugging in ``label_before_debugging``; its
``observed_label`` is what the run trains on (and is part of the checkpoint's label digest, so a resume
with another table is refused).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError

if TYPE_CHECKING:
    from .data.manifest import Manifest

#: The columns ``cg-analyze relabel`` writes, in order.
LABEL_COLUMNS = ("index", "old_label", "new_label", "source", "score")
REQUIRED = ("index", "old_label", "new_label")
#: Where a new label came from.
SOURCES = ("truth", "model")


def most_suspicious(index: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` indices with the highest scores (ties: lower index first), sorted."""
    order = np.lexsort((index, -np.asarray(scores, dtype=np.float64)))
    return np.sort(np.asarray(index, dtype=np.int64)[order[:count]])


def read_flag_table(path: str, what: str, required: Sequence[str], make_it: str) -> pd.DataFrame:
    """The Parquet table a flag names (``what``: ``--labels FILE``), or one line on what is wrong with it:
    missing (:class:`ConfigError`, ``make_it`` says how to write one), unreadable, or lacking a column."""
    if not Path(path).is_file():
        raise ConfigError(f"{what} does not exist ({make_it})")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # not Parquet, truncated
        raise DataError(f"{what} is not a readable Parquet table ({str(exc).splitlines()[0]})") from None
    missing = [c for c in required if c not in table]
    if missing:
        raise DataError(f"{what} lacks the column(s) {', '.join(missing)}: it needs {', '.join(required)} (it has "
                        f"{', '.join(map(str, table.columns)) or 'none'}; {make_it})")
    return table


def read_label_table(path: str, manifest: "Manifest") -> tuple[np.ndarray, np.ndarray]:
    """``(indices, new_labels)`` of a label table, checked against ``manifest`` (one-line errors)."""
    what = f"--labels {path}"
    table = read_flag_table(path, what, REQUIRED, "write it with `cg-analyze relabel RUN_DIR ... --out FILE`")
    for column in REQUIRED:
        values = table[column]
        if values.isna().any() or not pd.api.types.is_integer_dtype(values):
            raise DataError(f"{what}: column {column} must hold integers without missing values "
                            f"(it is {values.dtype})")
    index = table["index"].to_numpy(np.int64)
    new, old = table["new_label"].to_numpy(np.int64), table["old_label"].to_numpy(np.int64)
    n, k = len(manifest), manifest.num_classes
    bad = np.flatnonzero((index < 0) | (index >= n))
    if len(bad):
        raise DataError(f"{what}: index {index[bad[0]]} is outside the training set (0..{n - 1}): the table "
                        f"belongs to another dataset")
    dup = pd.Series(index).duplicated()
    if dup.any():
        raise DataError(f"{what}: index {index[dup.to_numpy()][0]} is listed twice: one row per sample")
    for name, labels in (("new_label", new), ("old_label", old)):
        bad = np.flatnonzero((labels < 0) | (labels >= k))
        if len(bad):
            raise DataError(f"{what}: {name} {labels[bad[0]]} of index {index[bad[0]]} is not a class of this "
                            f"dataset (0..{k - 1})")
    if "source" in table:
        unknown = sorted(set(map(str, table["source"])) - set(SOURCES))
        if unknown:
            raise DataError(f"{what}: source {unknown[0]!r} is not one of {', '.join(SOURCES)}")
    differs = np.flatnonzero(manifest.observed_labels[index] != old)
    if len(differs):
        i = differs[0]
        raise DataError(f"{what}: index {index[i]} has old_label {old[i]} but this run's label is "
                        f"{manifest.observed_labels[index[i]]}: the table was made for another corruption (give "
                        f"the --seed, --corrupt-fraction and --noise-type of the run it was made from)")
    return index, new


def apply_label_table(path: str, manifest: "Manifest") -> "Manifest":
    """``manifest`` with the table's new labels as observed labels."""
    index, new = read_label_table(path, manifest)
    observed = manifest.observed_labels.copy()
    observed[index] = new
    return manifest.with_observed(observed)
