"""``cg-analyze noise RUN_DIR``: score every training sample with every detector and compare them.

Writes to the output folder (default ``RUN_DIR/noise``):

- ``scores.parquet``: ``index, path, observed, true (-1 unknown), is_corrupt``, one score column per
  detector (higher = more likely mislabeled) and ``confident_learning_flagged`` (cleanlab's set;
  ``confident_learning_oos_flagged`` on the out-of-sample probabilities of ``--oos``);
- ``detectors.csv``: AUROC, mAP (average precision) and precision at the true noise rate per detector,
  from scikit-learn, over the samples whose true label is known (only when some are corrupt);
- ``roc_pr``, ``score_hist``, ``suspicious`` and ``paths`` figures (PNG + PDF) and ``noise_report.md``.

With ``lstm`` among the detectors the report names the runs its detector file was trained on, and a run
outside that domain gets one ``cg-analyze: warning:`` line on stderr, repeated in the report.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from cg_train.io import atomic_path

from .common import save_pyplot
from .detectors import DETECTORS, Dynamics
from .detectors.confident_learning import flagged
from .detectors.dynamics import true_noise_rate
from .detectors.lstm import SHIPPED, domain_warning, provenance, score_with

ID_COLUMNS = ("index", "path", "observed", "true", "is_corrupt")
#: confident-learning columns that get cleanlab's flagged set too, and whether theirs are out-of-sample
FLAGGED = (("confident_learning", False), ("confident_learning_oos", True))
FIGURES = ("roc_pr", "score_hist", "suspicious", "paths")


def score_run(dyn: Dynamics, names: Sequence[str], lstm_file: Optional[Path] = None) -> pd.DataFrame:
    """One row per training sample: identity, labels, and every detector's score."""
    table = pd.DataFrame({"index": np.arange(len(dyn), dtype=np.int64), "path": dyn.path,
                          "observed": dyn.observed, "true": dyn.true, "is_corrupt": dyn.is_corrupt})
    for name in names:
        table[name] = score_with(lstm_file, dyn) if name == "lstm" and lstm_file else DETECTORS.get(name)(dyn)
    for name, out_of_sample in FLAGGED:
        if name in names:
            table[f"{name}_flagged"] = flagged(dyn, out_of_sample)
    return table


def detector_metrics(table: pd.DataFrame, names: Sequence[str], removed: Optional[np.ndarray] = None) -> pd.DataFrame:
    """AUROC, mAP and precision at the true noise rate (top-k with k = corrupt count), via scikit-learn."""
    from sklearn.metrics import average_precision_score, precision_score, roc_auc_score

    use = (table["true"] != -1).to_numpy()
    if removed is not None:
        use = use & ~removed
    y = table["is_corrupt"].to_numpy(bool)[use]
    rows = []
    if 0 < y.sum() < len(y):
        k = int(y.sum())
        for name in names:
            s = table[name].to_numpy(np.float64)[use]
            top = np.zeros(len(s), bool)
            top[np.lexsort((np.arange(len(s)), -s))[:k]] = True
            rows.append({"detector": name, "auroc": roc_auc_score(y, s), "map": average_precision_score(y, s),
                         "precision_at_noise_rate": precision_score(y, top), "samples": len(y), "corrupt": k})
    return pd.DataFrame(rows, columns=["detector", "auroc", "map", "precision_at_noise_rate", "samples", "corrupt"])


def plot_curves(table: pd.DataFrame, names: Sequence[str], metrics: pd.DataFrame, out: Path, dpi: int) -> list[Path]:
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    known = (table["true"] != -1).to_numpy()
    y = table["is_corrupt"].to_numpy(bool)[known]
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name in names:
        s = table[name].to_numpy(np.float64)[known]
        row = metrics.set_index("detector").loc[name]
        fpr, tpr, _ = roc_curve(y, s)
        roc.plot(fpr, tpr, label=f"{name} (AUROC {row['auroc']:.3f})")
        precision, recall, _ = precision_recall_curve(y, s)
        pr.plot(recall, precision, label=f"{name} (mAP {row['map']:.3f})")
    roc.plot([0, 1], [0, 1], ":", color="grey")
    pr.axhline(y.mean(), ls=":", color="grey", label=f"noise rate {y.mean():.2f}")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC: corrupt vs clean")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    for ax in (roc, pr):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return save_pyplot(fig, out, "roc_pr", dpi)


def plot_histograms(table: pd.DataFrame, names: Sequence[str], out: Path, dpi: int) -> list[Path]:
    import matplotlib.pyplot as plt

    known = (table["true"] != -1).to_numpy()
    corrupt = table["is_corrupt"].to_numpy(bool)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        s = table[name].to_numpy(np.float64)
        bins = np.histogram_bin_edges(s[np.isfinite(s)], bins=40)
        groups = [("clean", known & ~corrupt, "tab:blue"), ("corrupt", corrupt, "tab:red")]
        if not known.all():
            groups.append(("true label unknown", ~known, "tab:grey"))
        for label, mask, color in groups:
            if mask.any():
                ax.hist(s[mask], bins=bins, alpha=0.55, color=color, label=label, density=True)
        ax.set(title=name, xlabel="score (higher = suspicious)")
        ax.legend(fontsize=7)
    return save_pyplot(fig, out, "score_hist", dpi)


def plot_suspicious(dyn: Dynamics, table: pd.DataFrame, by: str, out: Path, dpi: int, count: int = 24) -> list[Path]:
    """Image grid of the ``count`` highest-scored samples: given label, predicted label, true label if known."""
    import matplotlib.pyplot as plt
    from PIL import Image

    order = np.lexsort((table["index"].to_numpy(), -table[by].to_numpy(np.float64)))[:count]
    cols = 8
    fig, axes = plt.subplots(-(-len(order) // cols), cols, figsize=(1.6 * cols, 1.9 * -(-len(order) // cols)),
                             squeeze=False)
    predicted = dyn.probs.argmax(axis=1)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), order):
        path = Path(str(dyn.path[i]))
        if path.is_file():
            with Image.open(path) as img:
                ax.imshow(np.asarray(img.convert("RGB")))
        else:
            ax.text(0.5, 0.5, "no image file\n(in-memory data)", ha="center", va="center", fontsize=6)
        true = f" true {dyn.true[i]}" if dyn.true[i] != -1 else ""
        color = "red" if dyn.is_corrupt[i] else "black"
        ax.set_title(f"#{i} given {dyn.observed[i]}\npred {predicted[i]}{true}", fontsize=7, color=color)
    fig.suptitle(f"top {len(order)} suspicious samples by {by} (red: label known to be corrupt)", fontsize=9)
    return save_pyplot(fig, out, "suspicious", dpi)


def write_report(dyn: Dynamics, out: Path, names: Sequence[str], lstm_file: Optional[Path] = None,
                 dpi: int = 110, samples: Optional[Sequence[int]] = None, figures: bool = True) -> list[Path]:
    """Scores, metrics, figures (``figures=False``: none) and ``noise_report.md`` of one run in ``out``."""
    from .path_views import choose_samples, plot_paths

    out.mkdir(parents=True, exist_ok=True)
    notes = lstm_lines(dyn, lstm_file) if "lstm" in names else []  # the domain warning before the work
    table = score_run(dyn, names, lstm_file)
    written = [out / "scores.parquet"]
    with atomic_path(written[0]) as tmp:
        table.to_parquet(tmp, index=False)
    metrics = detector_metrics(table, names, dyn.removed)
    with atomic_path(out / "detectors.csv") as tmp:
        metrics.to_csv(tmp, index=False, float_format="%.4f")
    written.append(out / "detectors.csv")
    best = metrics.sort_values("auroc").detector.iloc[-1] if len(metrics) else names[0]
    trained = table[~dyn.removed]  # samples a remove-and-retrain run left out have no dynamics
    if figures and len(metrics):
        written += plot_curves(trained, names, metrics, out, dpi)
    if figures:
        written += plot_histograms(trained, names, out, dpi)
        written += plot_suspicious(dyn, table, best, out, dpi)
        chosen = list(samples) if samples else choose_samples(table[best].to_numpy(np.float64), dyn)
        written += plot_paths(dyn, chosen, out, dpi, title=f"samples ranked by {best}" if not samples else "")
    written.append(write_markdown(dyn, table, metrics, best, out, figures, notes))
    return written


def lstm_lines(dyn: Dynamics, lstm_file: Optional[Path]) -> list[str]:
    """The report's paragraph on the LSTM detector: its file, the runs it came from, and the domain warning
    (also printed on stderr) when ``dyn`` lies outside them."""
    warning = domain_warning(lstm_file, dyn)
    runs = provenance(lstm_file)
    lines = [f"`lstm` is the detector `{lstm_file or SHIPPED}`, trained on {len(runs)} run(s):", ""]
    lines += [f"- {run}" for run in runs] + [""]
    if warning:
        print(f"cg-analyze: warning: {warning}", file=sys.stderr)
        lines += [f"**Warning:** {warning}.", ""]
    return lines


def write_markdown(dyn: Dynamics, table: pd.DataFrame, metrics: pd.DataFrame, best: str, out: Path,
                   figures: bool = True, detector_lines: Sequence[str] = ()) -> Path:
    rate = true_noise_rate(dyn)
    lines = [f"# Label-noise detection: {dyn.run_dir}", "",
             f"{len(dyn)} training samples, {len(dyn.epochs)} epochs of `{dyn.source}` path logs; "
             + (f"true noise rate {rate:.3f} over samples with a known true label." if rate is not None
                else "no true labels known: scores only, no metrics."), "", *detector_lines]
    if len(metrics):
        lines += ["| detector | AUROC | mAP | precision at noise rate |", "|---|---|---|---|"]
        for row in metrics.sort_values("auroc", ascending=False).itertuples():
            lines.append(f"| {row.detector} | {row.auroc:.4f} | {row.map:.4f} | {row.precision_at_noise_rate:.4f} |")
        lines += ["", "![ROC and precision-recall](roc_pr.png)", ""] if figures else [""]
    for name, out_of_sample in FLAGGED:
        if f"{name}_flagged" not in table:
            continue
        flags = table[f"{name}_flagged"].to_numpy(bool)
        probs = "K-fold out-of-sample" if out_of_sample else "epoch-averaged in-sample"
        line = f"cleanlab flags {int(flags.sum())} samples as label issues on the {probs} probabilities"
        if len(metrics):
            from sklearn.metrics import precision_score, recall_score

            known = (table["true"] != -1).to_numpy() & ~dyn.removed
            y = table.is_corrupt.to_numpy(bool)[known]
            line += (f" (precision {precision_score(y, flags[known], zero_division=0):.4f}, "
                     f"recall {recall_score(y, flags[known], zero_division=0):.4f})")
        lines += [line + ".", ""]
    if figures:
        lines += ["![score histograms](score_hist.png)", "", f"Most suspicious by `{best}`:", "",
                  "![suspicious samples](suspicious.png)", "", "Learning paths (seed 000):", "", "![paths](paths.png)",
                  ""]
    lines += ["Scores of every sample: `scores.parquet`; retrain without the top r with "
              f"`cg-train ... --remove-ratio r --scores {out / 'scores.parquet'} --detector {best}`.", ""]
    path = out / "noise_report.md"
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return path
