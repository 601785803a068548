"""``cg-analyze debug SWEEP_DIR``: noisy, removed and relabelled training side by side (seed 002, 4.3).

Every run under SWEEP_DIR with ``config.yaml`` and ``test.csv`` is one row, in one of four kinds:

- ``noisy``: trained on the corrupted labels as they are (no ``--exclude/--remove-ratio/--labels``);
- ``removed``: remove-and-retrain (``--remove-ratio`` by a detector, or ``--exclude``);
- ``relabelled``: trained on a label table (``--labels``, from ``cg-analyze relabel``);
- ``clean``: no corruption at all (``--corrupt-fraction 0``), the ceiling.

Fold runs of a K-fold launch (``--fold``) are not training settings and are left out. Per run: final
and best test top-1, the corrupt samples it trains on (``is_corrupt`` and not ``removed`` in its
``corruption.parquet``, after debugging), and for a relabelled run how many labels the table changed
and the fraction of its new labels that are the true ones (over the rows whose truth is known). Rows are
grouped by setting (noise type, fraction, seed), each with the difference to that setting's noisy run.
Seeds are an axis: ``debug_seeds.csv`` (and the first table of ``debug.md``) averages the runs of each
(setting, training, variant) over seeds, mean ± std and how many runs, where a setting is the noise type
and fraction and every other config key that differs between the runs except the seed (:mod:`analysis.seeds`).
Writes ``debug.csv`` (per run), ``debug_seeds.csv`` and ``debug.md``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml

from cg_train.errors import CgTrainError
from cg_train.io import atomic_path

from .experiments import find_experiment_dirs
from .relabel import read_relabel_meta
from .retrain import OWN_KEYS, read_point
from .seeds import add_setting_columns, cell, few_runs_note, over_seeds, pm

KINDS = ("clean", "noisy", "removed", "relabelled")
METRICS = ("final_acc1", "best_acc1", "vs_noisy", "corrupt_left", "relabels_correct")


def relabel_stats(run: Path, labels_file: str, record: pd.DataFrame) -> dict:
    """How a run's label table changed its labels, from the table (or, if it is gone, corruption.parquet)."""
    stats: dict = {"labels": labels_file}
    table_path = Path(labels_file)
    if table_path.is_file():
        table = pd.read_parquet(table_path)
        meta = read_relabel_meta(table_path)
        chosen = f"{meta['ratio']:g}" if meta.get("ratio") else f"n={meta.get('count', len(table))}"
        stats["variant"] = f"{meta.get('detector', '?')} {chosen}, {meta.get('source', '?')}"
        index, new = table["index"].to_numpy(np.int64), table["new_label"].to_numpy(np.int64)
    else:  # the table was moved: the changed rows are still recorded
        stats["variant"] = "label table (moved)"
        changed = record["relabelled"].to_numpy(bool) if "relabelled" in record else np.zeros(len(record), bool)
        index, new = np.flatnonzero(changed), record["observed_label"].to_numpy(np.int64)[changed]
    true = record["true_label"].to_numpy(np.int64)[index]
    known = true != -1
    stats["relabelled"] = len(index)
    stats["labels_changed"] = int(record["relabelled"].sum()) if "relabelled" in record else None
    stats["relabel_known"] = int(known.sum())
    stats["relabels_correct"] = float((new[known] == true[known]).mean()) if known.any() else float("nan")
    return stats


def read_run(run: Path) -> Optional[dict]:
    point = read_point(run)
    if point is None:
        return None
    if point["fold"] is not None:
        return None
    cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    noise = cfg.get("noise") or {}
    record_path = run / "corruption.parquet"
    record = pd.read_parquet(record_path) if record_path.is_file() else None
    if noise.get("labels"):
        point["kind"], point["variant"] = "relabelled", "label table"
        if record is not None:
            point.update(relabel_stats(run, noise["labels"], record))
    elif noise.get("remove_ratio") or noise.get("exclude"):
        point["kind"] = "removed"
        point["variant"] = (f"{noise['detector']} {point['remove_ratio']:g}" if noise.get("remove_ratio")
                            else f"exclude {Path(noise['exclude']).name}")
    else:
        point["kind"] = "clean" if not noise.get("corrupt_fraction") else "noisy"
        point["variant"] = ""
    return point


def debug_table(sweep_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per run, and the config keys besides noise type and fraction that tell settings apart."""
    if not sweep_dir.is_dir():
        raise CgTrainError(f"{sweep_dir} is not a directory: pass the folder that holds the runs")
    rows = [p for run in find_experiment_dirs(sweep_dir) if (p := read_run(run))]
    if not rows:
        raise CgTrainError(f"no run with config.yaml and test.csv under {sweep_dir}")
    extras = add_setting_columns(rows, exclude=OWN_KEYS)
    table = pd.DataFrame(rows)
    for column in ("relabelled", "labels_changed", "relabel_known", "relabels_correct", "corrupt_left"):
        if column not in table:
            table[column] = np.nan
    table["kind_order"] = table["kind"].map(KINDS.index)
    table = table.sort_values(["noise_type", "corrupt_fraction", "seed", "kind_order", "variant", "run"])
    noisy = table[table.kind == "noisy"].groupby(["noise_type", "corrupt_fraction", "seed"], dropna=False).final_acc1
    baseline = noisy.first()
    keys = list(zip(table.noise_type, table.corrupt_fraction, table.seed))
    table["vs_noisy"] = [row - baseline.get(key, np.nan) for row, key in zip(table.final_acc1, keys)]
    return table.drop(columns="kind_order").reset_index(drop=True), extras


def debug_over_seeds(table: pd.DataFrame, extras: list[str]) -> pd.DataFrame:
    """Mean ± std over seeds of every run metric per (setting, training kind, variant)."""
    return over_seeds(table, ["noise_type", "corrupt_fraction", *extras, "kind", "variant"], METRICS)


def fmt(value, spec: str = "") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return format(value, spec)


def write_debug(sweep_dir: Path, out: Path) -> list[Path]:
    table, extras = debug_table(sweep_dir)
    cells = debug_over_seeds(table, extras)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "debug.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(out / "debug_seeds.csv") as tmp:
        cells.to_csv(tmp, index=False)
    head = "| noise | " + "".join(f"{key} | " for key in extras)
    rule = "|---|" + "---|" * len(extras)
    lines = ["# Data debugging: noisy, removed and relabelled training", "",
             "Corrupt left: corrupt samples the run trains on. Relabels correct: fraction of the label table's new "
             "labels that are the true ones (rows with a known truth). Vs noisy: final top-1 minus that of the "
             "noisy run of the same seed.", "", "Over seeds (mean ± std over the runs of each row):", "",
             head + "training | detector, count/ratio, source | runs | relabels correct | corrupt left | final top-1 | "
             "best top-1 | vs noisy |", rule + "---|---|---|---|---|---|---|---|"]
    for row in cells.to_dict("records"):
        noise = f"{cell(row['noise_type'])} {cell(row['corrupt_fraction'])}" if row["kind"] != "clean" else "none"
        correct = ("-" if pd.isna(row["relabels_correct_mean"]) else
                   f"{row['relabels_correct_mean']:.1%} ± {row['relabels_correct_std']:.1%}")
        lines.append(f"| {noise} | " + "".join(f"{cell(row[key])} | " for key in extras)
                     + f"{row['kind']} | {row['variant'] or '-'} | {row['runs']} | {correct} | "
                     f"{pm(row['corrupt_left_mean'], row['corrupt_left_std'], 1)} | "
                     f"{pm(row['final_acc1_mean'], row['final_acc1_std'], 2)} | "
                     f"{pm(row['best_acc1_mean'], row['best_acc1_std'], 2)} | "
                     f"{pm(row['vs_noisy_mean'], row['vs_noisy_std'], 2, sign=True)} |")
    note = few_runs_note(cells)
    lines += ["", note] if note else []
    lines += ["", "Per run:", "",
              head + "seed | training | detector, count/ratio, source | relabels correct | labels changed | "
              "corrupt left | final top-1 | best top-1 | vs noisy |", rule + "---|---|---|---|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        noise = f"{row['noise_type']} {row['corrupt_fraction']}" if row["kind"] != "clean" else "none"
        lines.append(f"| {noise} | " + "".join(f"{cell(row[key])} | " for key in extras)
                     + f"{fmt(row['seed'])} | {row['kind']} | {row['variant'] or '-'} | "
                     f"{fmt(row['relabels_correct'], '.1%')} | {fmt(row['labels_changed'], '.0f')} | "
                     f"{fmt(row['corrupt_left'], '.0f')} | {row['final_acc1']:.2f} | {row['best_acc1']:.2f} | "
                     f"{fmt(row['vs_noisy'], '+.2f')} |")
    lines.append("")
    with atomic_path(out / "debug.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return [out / "debug.csv", out / "debug_seeds.csv", out / "debug.md"]
