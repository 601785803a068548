"""``cg-analyze retrain SWEEP_DIR``: test accuracy against remove ratio (seed 002 step 3).

Every run under SWEEP_DIR with a ``config.yaml`` and a ``test.csv`` is one point:
its ``noise.remove_ratio`` / ``noise.exclude`` / ``noise.detector`` and noise
setting from the config, its final and best test top-1 from ``test.csv``, and
how many of the removed samples were corrupt (from ``corruption.parquet``).
Seeds are an axis: the runs of one setting (noise type and fraction, every other config key that differs
between the runs except the seed, :mod:`analysis.seeds`), detector and remove ratio are one cell, with
test top-1 mean ± std over them and how many runs it has (``retrain_seeds.csv``, and in ``retrain.md``
and the figure; the runs of ratio 0 are the shared noisy baseline).
Fold runs of a K-fold launch and runs on a ``--labels`` table are left out
(``cg-analyze debug`` puts relabelled training next to removal). Writes ``retrain.csv`` (per run),
``retrain_seeds.csv`` (per cell), ``retrain.md`` and a ``retrain`` figure (PNG + PDF).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cg_train.errors import CgTrainError
from cg_train.io import atomic_path

from .common import save_pyplot
from .experiments import find_experiment_dirs, read_curve
from .seeds import add_setting_columns, cell, few_runs_note, over_seeds, pm


def read_point(run: Path) -> dict | None:
    config, (test, _) = run / "config.yaml", read_curve(run / "test.csv")
    if not config.is_file() or test is None or test.empty:
        return None
    cfg = yaml.safe_load(config.read_text()) or {}
    noise = cfg.get("noise") or {}
    point = {"run": str(run), "seed": (cfg.get("train") or {}).get("seed"), "noise_type": noise.get("noise_type"),
             "corrupt_fraction": noise.get("corrupt_fraction"),
             "detector": noise.get("detector") or ("exclude file" if noise.get("exclude") else "none"),
             "remove_ratio": float(noise.get("remove_ratio") or 0.0),
             "final_acc1": float(test.acc1.iloc[-1]), "best_acc1": float(test.acc1.max()), "epochs": len(test),
             "labels": noise.get("labels"), "fold": noise.get("fold")}
    record = run / "corruption.parquet"
    if record.is_file():
        table = pd.read_parquet(record)
        removed = table["removed"].to_numpy(bool) if "removed" in table else np.zeros(len(table), bool)
        point["removed"] = int(removed.sum())
        point["removed_corrupt"] = int((removed & table["is_corrupt"].to_numpy(bool)).sum())
        point["corrupt_left"] = int((~removed & table["is_corrupt"].to_numpy(bool)).sum())
    return point


#: config keys that are columns of the table (or not compared, see analysis.seeds): not extra setting keys
OWN_KEYS = ("noise.noise_type", "noise.corrupt_fraction", "noise.remove_ratio", "noise.detector", "noise.fold")
SETTING = ["noise_type", "corrupt_fraction"]
METRICS = ("final_acc1", "best_acc1", "removed", "removed_corrupt")


def retrain_over_seeds(table: pd.DataFrame, extras: list[str]) -> pd.DataFrame:
    """Mean ± std over seeds per (setting, detector, remove ratio). Nothing is removed at ratio 0, whatever
    detector the run names, so the runs of ratio 0 (without an exclude file) are one baseline cell,
    detector ``none``."""
    cells = table.copy()
    baseline = (cells.remove_ratio == 0) & (cells.detector != "exclude file")
    cells.loc[baseline, "detector"] = "none"
    metrics = [m for m in METRICS if m in cells]
    cells["removing"] = cells.detector != "none"  # the baseline first, then each detector by ratio
    cells = cells.sort_values([*SETTING, *extras, "removing", "detector", "remove_ratio"], kind="stable",
                              na_position="last")
    return over_seeds(cells, [*SETTING, *extras, "detector", "remove_ratio"], metrics)


def plot_retrain(cells: pd.DataFrame, extras: list[str], out: Path, dpi: int) -> list[Path]:
    """Final test top-1 against remove ratio, one line per setting and detector (from the ratio-0 baseline),
    mean ± std over seeds as error bars."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for setting_values, setting in cells.groupby([*SETTING, *extras], dropna=False, sort=False):
        label = " ".join(cell(v) for v in setting_values)
        baseline = setting[setting.detector == "none"]
        detectors = [d for d in setting.detector.unique() if d != "none"] or ["none"]
        for detector in detectors:
            line = pd.concat([baseline, setting[setting.detector == detector]]).drop_duplicates()
            line = line.sort_values("remove_ratio")
            low, high = int(line.runs.min()), int(line.runs.max())
            runs = f" (n={low})" if low == high else f" (n={low}-{high})"
            ax.errorbar(line.remove_ratio, line.final_acc1_mean, yerr=line.final_acc1_std, fmt="-o", capsize=3,
                        label=f"{label}, {detector}{runs}")
    ax.set(xlabel="remove ratio", ylabel="final test top-1 (%)", title="remove and retrain (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_pyplot(fig, out, "retrain", dpi)


def write_retrain(sweep_dir: Path, out: Path, dpi: int = 110) -> list[Path]:
    if not sweep_dir.is_dir():
        raise CgTrainError(f"{sweep_dir} is not a directory: pass the folder that holds the retrained runs")
    # K-fold fold runs and relabelled runs are not points of remove-and-retrain (cg-analyze debug shows the latter)
    points = [p for run in find_experiment_dirs(sweep_dir)
              if (p := read_point(run)) and p["fold"] is None and not p["labels"]]
    if not points:
        raise CgTrainError(f"no run with config.yaml and test.csv under {sweep_dir}")
    extras = add_setting_columns(points, exclude=OWN_KEYS)
    table = pd.DataFrame(points).sort_values([*SETTING, *extras, "detector", "remove_ratio", "seed"],
                                             na_position="last")
    cells = retrain_over_seeds(table, extras)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "retrain.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(out / "retrain_seeds.csv") as tmp:
        cells.to_csv(tmp, index=False)
    written = [out / "retrain.csv", out / "retrain_seeds.csv"] + plot_retrain(cells, extras, out, dpi)
    head = "| noise | " + "".join(f"{key} | " for key in extras)
    rule = "|---|" + "---|" * len(extras)
    lines = ["# Remove and retrain", "", "Over seeds: mean ± std (sample std) over the runs of each cell; removed "
             "(corrupt): mean counts.", "", head + "detector | remove ratio | runs | removed (corrupt) | final top-1 | "
             "best top-1 |", rule + "---|---|---|---|---|---|"]
    for row in cells.to_dict("records"):
        removed = (f"{row['removed_mean']:.0f} ({row['removed_corrupt_mean']:.1f})" if "removed_mean" in row
                   and not pd.isna(row["removed_mean"]) else "-")
        lines.append(f"| {cell(row['noise_type'])} {cell(row['corrupt_fraction'])} | "
                     + "".join(f"{cell(row[key])} | " for key in extras)
                     + f"{row['detector']} | {row['remove_ratio']:.2f} | {row['runs']} | {removed} | "
                     f"{pm(row['final_acc1_mean'], row['final_acc1_std'], 2)} | "
                     f"{pm(row['best_acc1_mean'], row['best_acc1_std'], 2)} |")
    note = few_runs_note(cells)
    lines += ["", note] if note else []
    lines += ["", "![test accuracy against remove ratio](retrain.png)", "", "Per run:", "",
              head + "seed | detector | remove ratio | removed (corrupt) | final top-1 | best top-1 |",
              rule + "---|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        removed = f"{row.get('removed', 0):.0f} ({row.get('removed_corrupt', 0):.0f})" \
            if not pd.isna(row.get("removed", 0)) else "-"
        lines.append(f"| {cell(row['noise_type'])} {cell(row['corrupt_fraction'])} | "
                     + "".join(f"{cell(row[key])} | " for key in extras)
                     + f"{cell(row['seed'])} | {row['detector']} | {row['remove_ratio']:.2f} | {removed} | "
                     f"{row['final_acc1']:.2f} | {row['best_acc1']:.2f} |")
    lines.append("")
    with atomic_path(out / "retrain.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return written + [out / "retrain.md"]
