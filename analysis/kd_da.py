"""``cg-analyze kd-da RUNS_DIR``: seed 001's study, T. stddev vs the student's test loss, per teacher/student pair.

Reads files only. Every run folder under RUNS_DIR (found by its ``config.yaml``)
with ``--method kd`` is either a measurement run (``t_stddev.csv``, from
``--fix-student --check-ce-var``: its last row's T. stddev) or a training run (its
``test.csv``: the last evaluation's loss = S. test loss). Runs are grouped by
pair (teacher arch, read from the teacher checkpoint's run ``config.yaml``, and
student arch) and DA scheme, averaged over seeds; per pair the DA points give
Pearson, Spearman and Kendall coefficients with p-values (scipy.stats), a scatter
plot like the seed's, and one table for all pairs.

Outputs (in ``--output``, default RUNS_DIR): ``kd_da_table.csv`` (pair, da, mean
and std over seeds of both quantities, seed counts), ``kd_da_correlations.csv``
(pair, n, pearson_r, pearson_p, spearman_r, spearman_p, kendall_tau, kendall_p)
and ``kd_da_<teacher>_<student>.png/.pdf``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import yaml

from .commands import COMMANDS
from .common import run_parsed, split_formats

TABLE = "kd_da_table.csv"
CORRELATIONS = "kd_da_correlations.csv"
T_STDDEV_FILE = "t_stddev.csv"  # cg_train.augment.t_stddev.FILE (analysis does not import the engine)


def _get(cfg: dict[str, Any], key: str, default: Any = None) -> Any:
    section, name = key.split(".")
    return (cfg.get(section) or {}).get(name, default)


def teacher_name(path: Optional[str]) -> str:
    """The teacher's arch from its run's config.yaml next to the checkpoint, else the run folder's name."""
    if not path:
        return "?"
    first = Path(str(path).split(":")[0])  # several teachers are ":"-separated; the first names the pair
    config = first.parent / "config.yaml"
    if config.is_file():
        arch = _get(yaml.safe_load(config.read_text()) or {}, "model.arch")
        if arch:
            return str(arch)
    return first.parent.name


def read_runs(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per usable run: pair, teacher, student, da, seed, kind (t_stddev / s_test_loss), value."""
    rows, problems = [], []
    for config in sorted(root.rglob("config.yaml")):
        run = config.parent
        try:
            cfg = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError as exc:
            problems.append(f"{config}: not YAML ({str(exc).splitlines()[0]})")
            continue
        if _get(cfg, "supervision.method") != "kd":
            continue
        teacher, student = teacher_name(_get(cfg, "supervision.teacher")), _get(cfg, "model.arch")
        base = {"pair": f"{teacher}/{student}", "teacher": teacher, "student": student,
                "da": _get(cfg, "augment.da", "identity"), "seed": _get(cfg, "train.seed", 0), "run": str(run)}
        if _get(cfg, "augment.check_ce_var", False):
            path, column, kind = run / T_STDDEV_FILE, "t_stddev", "t_stddev"
        elif not _get(cfg, "augment.fix_student", False):
            path, column, kind = run / "test.csv", "loss", "s_test_loss"
        else:
            continue
        try:
            value = float(pd.read_csv(path)[column].dropna().iloc[-1])
        except (OSError, KeyError, IndexError, ValueError, pd.errors.ParserError) as exc:
            problems.append(f"{path}: no {column} yet ({type(exc).__name__})")
            continue
        rows.append({**base, "kind": kind, "value": value})
    columns = ["pair", "teacher", "student", "da", "seed", "run", "kind", "value"]
    return pd.DataFrame(rows, columns=columns), problems


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per pair and DA: mean, std and count over seeds of T. stddev and S. test loss."""
    stats = runs.groupby(["pair", "da", "kind"])["value"].agg(["mean", "std", "count"]).unstack("kind")
    stats.columns = [f"{kind}_{stat}" for stat, kind in stats.columns]
    for kind in ("t_stddev", "s_test_loss"):
        for stat in ("mean", "std", "count"):
            if f"{kind}_{stat}" not in stats:
                stats[f"{kind}_{stat}"] = np.nan
    order = [f"{k}_{s}" for k in ("t_stddev", "s_test_loss") for s in ("mean", "std", "count")]
    return stats[order].reset_index()


def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson, Spearman and Kendall coefficients with their two-sided p-values (scipy.stats)."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    out: dict[str, float] = {"n": len(x)}
    if len(x) < 3:
        return {**out, **{k: float("nan") for k in ("pearson_r", "pearson_p", "spearman_r", "spearman_p",
                                                   "kendall_tau", "kendall_p")}}
    for name, fn in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
        result = fn(x, y)
        out[f"{name}_{'tau' if name == 'kendall' else 'r'}"] = float(result.statistic)
        out[f"{name}_p"] = float(result.pvalue)
    return out


def pair_correlations(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for pair, part in table.groupby("pair"):
        part = part.dropna(subset=["t_stddev_mean", "s_test_loss_mean"])
        rows.append({"pair": pair, **correlations(part.t_stddev_mean, part.s_test_loss_mean)})
    return pd.DataFrame(rows, columns=["pair", "n", "pearson_r", "pearson_p", "spearman_r", "spearman_p",
                                       "kendall_tau", "kendall_p"])


def plot_pair(part: pd.DataFrame, corr: dict[str, Any], path_stem: Path, formats: Sequence[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    ax.errorbar(part.t_stddev_mean, part.s_test_loss_mean, xerr=part.t_stddev_std.fillna(0),
                yerr=part.s_test_loss_std.fillna(0), fmt="o", capsize=2)
    for row in part.itertuples():
        ax.annotate(row.da, (row.t_stddev_mean, row.s_test_loss_mean), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("T. stddev")
    ax.set_ylabel("S. test loss")
    ax.set_title(f"{part.pair.iloc[0]}\nPearson {corr['pearson_r']:.3f} (p={corr['pearson_p']:.3g}), "
                 f"Spearman {corr['spearman_r']:.3f} (p={corr['spearman_p']:.3g})\n"
                 f"Kendall {corr['kendall_tau']:.3f} (p={corr['kendall_p']:.3g})", fontsize=8)
    fig.tight_layout()
    written = []
    for fmt in formats:
        path = path_stem.with_suffix(f".{fmt}")
        fig.savefig(path)
        written.append(path)
    plt.close(fig)
    return written


def analyze(root: Path, output: Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    from cg_train.errors import CgTrainError
    from cg_train.io import atomic_write_text

    if not root.is_dir():
        raise CgTrainError(f"{root} is not a directory: pass the folder holding the kd-da runs")
    runs, problems = read_runs(root)
    for problem in problems:
        print(f"cg-analyze: warning: {problem}", file=sys.stderr)
    if runs.empty:
        raise CgTrainError(f"no --method kd run with t_stddev.csv or test.csv under {root}")
    table = summarize(runs)
    corr = pair_correlations(table)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / TABLE, table.to_csv(index=False))
    atomic_write_text(output / CORRELATIONS, corr.to_csv(index=False))
    written = [output / TABLE, output / CORRELATIONS]
    for row in corr.itertuples():
        part = table[table.pair == row.pair].dropna(subset=["t_stddev_mean", "s_test_loss_mean"])
        if len(part) >= 1:
            stem = output / f"kd_da_{row.pair.replace('/', '_')}"
            written += plot_pair(part, row._asdict(), stem, formats)
    print(corr.to_string(index=False))
    return written


@COMMANDS.register("kd-da", help="seed 001's T. stddev vs student test loss study")
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="cg-analyze kd-da", description=__doc__.split("\n")[0])
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="folder searched recursively for kd runs")
    parser.add_argument("-o", "--output", metavar="DIR", help="where to write (default: RUNS_DIR)")
    parser.add_argument("--format", dest="formats", default="png,pdf", metavar="png,pdf")
    return run_parsed(parser, list(argv or []), lambda args: analyze(
        Path(args.runs_dir), Path(args.output or args.runs_dir), split_formats(args.formats)))
