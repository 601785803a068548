"""Seeds as an axis: what a run's setting is, and mean ± std over the seeds of each setting.

Shared by the tables that average runs (``cg-analyze kd``, ``noise``, ``retrain``, ``debug``); this
module imports no command. A run's *setting* is its ``config.yaml`` without the seed and without what
does not change what it trains: where it writes and how it logs (``output.*``, ``record.*``, ``meta``),
speed switches (``speed.*``, ``data.workers``, ``train.cpu``, ``train.progress``, ``train.print_freq``)
and input files (score tables, label tables, teachers), whose path is per seed in a seed sweep; the
tables say what such a file is in their own columns (detector, teacher arch, label table). Runs whose
settings are equal are the seeds of one cell: mean, sample std (ddof=1; 0 for a cell of one run, as
``cg-analyze kd`` has always written) and the number of runs and of distinct seeds behind it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

#: Seed 001 averages at least this many runs per cell; tables flag the cells with fewer.
MIN_RUNS = 3
SEED_KEY = "train.seed"
#: config keys that are never part of a run's setting (see the module docstring)
NOT_SETTING = frozenset({SEED_KEY, "data.workers", "train.cpu", "train.progress", "train.print_freq",
                         "train.deepspeed", "noise.scores", "noise.exclude", "noise.labels", "supervision.teacher",
                         "supervision.targets"})
NOT_SETTING_PREFIXES = ("output.", "record.", "speed.", "meta.")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"noise": {"corrupt_fraction": 0.2}}`` -> ``{"noise.corrupt_fraction": 0.2}``; lists become strings
    (hashable, so they can be grouped on)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(list(value)) if isinstance(value, (list, tuple)) else value
    return flat


def read_config(run: Path) -> dict[str, Any]:
    """A run's ``config.yaml``, flattened; empty when it has none (or an unreadable one)."""
    try:
        loaded = yaml.safe_load((Path(run) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return flatten(loaded) if isinstance(loaded, Mapping) else {}


def is_setting_key(key: str) -> bool:
    return key not in NOT_SETTING and not key.startswith(NOT_SETTING_PREFIXES)


def varying_keys(configs: Sequence[Mapping[str, Any]], exclude: Iterable[str] = ()) -> list[str]:
    """The setting keys whose value is not the same in every config (a key a config lacks counts as a
    value), in schema order: what distinguishes the runs' settings besides the columns a table has."""
    skip = set(exclude)
    keys = list(dict.fromkeys(key for config in configs for key in config))
    missing = object()
    return [key for key in keys if is_setting_key(key) and key not in skip
            and len({repr(config.get(key, missing)) for config in configs}) > 1]


def add_setting_columns(rows: Sequence[dict[str, Any]], exclude: Iterable[str] = ()) -> list[str]:
    """Give every row (one run, ``row["run"]`` its folder) the setting keys that tell the runs apart besides
    ``exclude`` (the table's own columns), read from each run's ``config.yaml``; returns those keys."""
    configs = [read_config(Path(row["run"])) for row in rows]
    extras = varying_keys(configs, exclude=exclude)
    for row, config in zip(rows, configs):
        row.update({key: config.get(key) for key in extras})
    return extras


def over_seeds(runs: pd.DataFrame, keys: Sequence[str], metrics: Sequence[str], seed: str = "seed") -> pd.DataFrame:
    """One row per distinct ``keys`` (in order of first appearance; missing values are a value too):
    the keys, ``runs`` (rows), ``seeds`` (distinct ``seed`` values), and ``<metric>_mean`` / ``<metric>_std``
    over the rows (sample std, ddof=1; 0 for a cell of one run; NaN values are left out)."""
    grouped = runs.groupby(list(keys), sort=False, dropna=False)
    spec = {"runs": (seed, "size"), "seeds": (seed, "nunique")}
    for metric in metrics:
        spec[f"{metric}_mean"] = (metric, "mean")
        spec[f"{metric}_std"] = (metric, "std")
    table = grouped.agg(**spec).reset_index()
    stds = [f"{metric}_std" for metric in metrics]
    table[stds] = table[stds].where(table.runs > 1, 0.0)
    return table


def pm(mean: float, std: float, digits: int, sign: bool = False) -> str:
    """``71.33 ± 1.53`` (``+2.63 ± 0.50`` with ``sign``), or ``-`` for a missing mean."""
    return "-" if pd.isna(mean) else f"{mean:{'+' if sign else ''}.{digits}f} ± {std:.{digits}f}"


def few_runs_note(table: pd.DataFrame) -> str:
    """A Markdown line on the cells averaging fewer than :data:`MIN_RUNS` runs (empty when there are none)."""
    few = int((table.runs < MIN_RUNS).sum())
    if not few:
        return ""
    return (f"{few} of {len(table)} cells average fewer than {MIN_RUNS} runs (seed 001 averages at least "
            f"{MIN_RUNS}): add seeds with a `train.seed` axis in the sweep file.")


def cell(value: Any) -> str:
    """A setting value in a Markdown cell (``-`` for missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)
