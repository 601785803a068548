"""Remove-and-retrain (seed 002, step 3): which training samples a run leaves out.

Two ways to choose them, for any dataset (file lists and in-memory arrays alike):

- ``--exclude FILE``: one sample per line, as a Manifest index (``123``) or as its
  path / ``split[index]`` name (what ``corruption.parquet`` and ``scores.parquet``
  call ``path``); a ``.parquet`` / ``.csv`` file with an ``index`` column also works.
- ``--remove-ratio r --scores SCORES.parquet --detector NAME``: the
  ``round(r * N)`` samples with the highest ``NAME`` score in the ``scores.parquet``
  that ``cg-analyze noise`` wrote (ties broken by index, so the choice is exact;
  ``cg-analyze relabel --ratio r`` chooses the same samples through :func:`most_suspicious`).
- ``--folds K --fold I``: the samples of fold I (``cg_train.data.folds``).

Removed samples keep their index (loaders only skip them), so logs of the
retrained run line up with the run the scores came from; ``corruption.parquet``
records them in its ``removed`` column.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..label_debugging import most_suspicious
from .manifest import Manifest

if TYPE_CHECKING:
    from ..config import NoiseConfig


def sample_names(manifest: Manifest) -> np.ndarray:
    return np.asarray([manifest.source(i) for i in range(len(manifest))], dtype=object)


def tails(paths) -> list[tuple[str, ...]]:
    """Class folder + file name of every path: a dataset copied to another root still matches its scores."""
    return [Path(str(p)).parts[-2:] for p in paths]


def indices_from_entries(entries: list[str], manifest: Manifest, source: str) -> np.ndarray:
    """Manifest indices of ``entries`` (ints, or paths / ``split[i]`` names); unknown ones are an error."""
    lookup = {name: i for i, name in enumerate(sample_names(manifest))}
    out = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if entry.lstrip("-").isdigit():
            index = int(entry)
            if not 0 <= index < len(manifest):
                raise DataError(f"{source}: index {index} is outside the training set (0..{len(manifest) - 1})")
        elif entry in lookup:
            index = lookup[entry]
        else:
            raise DataError(f"{source}: {entry!r} is neither an index nor a training sample of this dataset")
        out.append(index)
    return np.unique(np.asarray(out, dtype=np.int64))


def read_exclude(path: str, manifest: Manifest) -> np.ndarray:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--exclude (noise.exclude): {path} does not exist")
    if file.suffix in (".parquet", ".csv"):
        table = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
        column = "index" if "index" in table else "path" if "path" in table else None
        if column is None:
            raise ConfigError(f"--exclude (noise.exclude): {path} needs an 'index' or 'path' column")
        entries = [str(v) for v in table[column]]
    else:
        entries = file.read_text().splitlines()
    return indices_from_entries(entries, manifest, f"--exclude {path}")


def top_scored(scores_path: str, detector: str, ratio: float, manifest: Manifest) -> np.ndarray:
    """Indices of the ``round(ratio * N)`` highest ``detector`` scores (ties: lower index first)."""
    file = Path(scores_path)
    if not file.is_file():
        raise ConfigError(f"--scores (noise.scores): {scores_path} does not exist (write it with cg-analyze noise)")
    table = pd.read_parquet(file)
    if detector not in table:
        known = [c for c in table.columns if c not in ("index", "path", "observed", "true", "is_corrupt")]
        raise ConfigError(f"--detector (noise.detector): {scores_path} has no {detector!r} scores; "
                          f"choose one of: {', '.join(known)}")
    if len(table) != len(manifest) or "path" in table and tails(table["path"]) != tails(sample_names(manifest)):
        raise DataError(f"--scores {scores_path} scores another training set ({len(table)} samples, this one has "
                        f"{len(manifest)}): score a run of the same dataset")
    return most_suspicious(table["index"].to_numpy(np.int64), table[detector].to_numpy(np.float64),
                           int(round(ratio * len(table))))


def removed_mask(cfg: "NoiseConfig", manifest: Manifest, folds: Optional[np.ndarray] = None) -> np.ndarray:
    """bool [N]: the samples this run leaves out of training (``folds``: each sample's fold of ``--folds``)."""
    removed = np.zeros(len(manifest), dtype=bool)
    if folds is not None and cfg.fold is not None:
        removed[folds == cfg.fold] = True
    if cfg.exclude:
        removed[read_exclude(cfg.exclude, manifest)] = True
    if cfg.remove_ratio > 0:
        if not cfg.scores or not cfg.detector:
            raise ConfigError("--remove-ratio (noise.remove_ratio) needs --scores SCORES.parquet and "
                              "--detector NAME (written by `cg-analyze noise RUN_DIR`)")
        removed[top_scored(cfg.scores, cfg.detector, cfg.remove_ratio, manifest)] = True
    if removed.all():
        raise DataError("every training sample is removed: lower --remove-ratio or shorten --exclude")
    return removed
