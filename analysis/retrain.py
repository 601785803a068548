"""``cg-analyze retrain SWEEP_DIR``: test accuracy against remove ratio (seed 002 step 3).

Every run under SWEEP_DIR with a ``config.yaml`` and a ``test.csv`` is one point:
its ``noise.remove_ratio`` / ``noise.exclude`` / ``noise.detector`` and noise
setting from the config, its final and best test top-1 from ``test.csv``, and
how many of the removed samples were corrupt (from ``corruption.parquet``).
Fold runs of a K-fold launch and runs on a ``--labels`` table are left out
(``cg-analyze debug`` puts relabelled training next to removal). Writes ``retrain.csv``, ``retrain.md`` and a ``retrain`` figure (PNG + PDF).
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


def read_point(run: Path) -> dict | None:
    config, (test, _) = run / "config.yaml", read_curve(run / "test.csv")
    if not config.is_file() or test is None or test.empty:
        return None
    noise = (yaml.safe_load(config.read_text()) or {}).get("noise", {})
    point = {"run": str(run), "noise_type": noise.get("noise_type"), "corrupt_fraction": noise.get("corrupt_fraction"),
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


def write_retrain(sweep_dir: Path, out: Path, dpi: int = 110) -> list[Path]:
    import matplotlib.pyplot as plt


    if not sweep_dir.is_dir():
        raise CgTrainError(f"{sweep_dir} is not a directory: pass the folder that holds the retrained runs")
    # K-fold fold runs and relabelled runs are not points of remove-and-retrain (cg-analyze debug shows the latter)
    points = [p for run in find_experiment_dirs(sweep_dir)
              if (p := read_point(run)) and p["fold"] is None and not p["labels"]]
    if not points:
        raise CgTrainError(f"no run with config.yaml and test.csv under {sweep_dir}")
    table = pd.DataFrame(points).sort_values(["noise_type", "corrupt_fraction", "detector", "remove_ratio"])
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "retrain.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    fig, ax = plt.subplots(figsize=(6, 4))
    for (noise_type, fraction), setting in table.groupby(["noise_type", "corrupt_fraction"], dropna=False):
        baseline = setting[setting.remove_ratio == 0]  # nothing removed: the start of every detector's line
        detectors = [d for d in setting.detector.unique() if d != "none"] or ["none"]
        for detector in detectors:
            line = pd.concat([baseline, setting[setting.detector == detector]]).drop_duplicates("run")
            line = line.sort_values("remove_ratio")
            ax.plot(line.remove_ratio, line.final_acc1, "-o", label=f"{noise_type} {fraction}, {detector}")
    ax.set(xlabel="remove ratio", ylabel="final test top-1 (%)", title="remove and retrain")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written = [out / "retrain.csv"] + save_pyplot(fig, out, "retrain", dpi)
    lines = ["# Remove and retrain", "", "| noise | detector | remove ratio | removed (corrupt) | final top-1 | "
             "best top-1 |", "|---|---|---|---|---|---|"]
    for row in table.itertuples():
        removed = f"{getattr(row, 'removed', 0)} ({getattr(row, 'removed_corrupt', 0)})"
        lines.append(f"| {row.noise_type} {row.corrupt_fraction} | {row.detector} | {row.remove_ratio:.2f} | "
                     f"{removed} | {row.final_acc1:.2f} | {row.best_acc1:.2f} |")
    lines += ["", "![test accuracy against remove ratio](retrain.png)", ""]
    with atomic_path(out / "retrain.md") as tmp:
        Path(tmp).write_text("\n".join(lines))
    return written + [out / "retrain.md"]
