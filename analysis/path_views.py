"""Seed 000's learning paths: how p(true) and p(given) move over training, for chosen samples.

Two views, clean and corrupted samples side by side: line plots of p(true label)
(solid) and p(given label) (dashed) over epochs, and the path on a probability
simplex whose corners are the true class, the given class and the rest (for a
clean sample, where true = given, the second corner is the most likely other
class). Seed 000's zig-zag shows as a corrupted sample moving towards the given
corner only late in training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .common import save_pyplot
from .detectors import Dynamics

SQRT3 = np.sqrt(3.0)


def choose_samples(scores: np.ndarray, dyn: Dynamics, each: int = 6) -> list[int]:
    """The ``each`` most and ``each`` least suspicious trained samples (by ``scores``)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[~dyn.removed[order]]
    return sorted(set(order[:each].tolist()) | set(order[-each:].tolist()))


def simplex_xy(top: np.ndarray, left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric (top corner, bottom-left corner, bottom-right = rest) -> plane coordinates."""
    rest = np.clip(1.0 - top - left, 0.0, 1.0)
    return top * 0.5 + rest * 1.0, top * SQRT3 / 2


def corners(dyn: Dynamics, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(p of the top corner, p of the bottom-left corner) over epochs for sample ``i``."""
    if dyn.is_corrupt[i]:
        return dyn.column("p_true")[i], dyn.column("p_observed")[i]
    return dyn.column("p_observed")[i], dyn.column("p_other")[i]


def plot_paths(dyn: Dynamics, samples: Sequence[int], out: Path, dpi: int = 110, title: str = "",
               name: str = "paths") -> list[Path]:
    import matplotlib.pyplot as plt


    samples = [int(i) for i in samples if 0 <= int(i) < len(dyn)]
    groups = {"clean (or true label unknown)": [i for i in samples if not dyn.is_corrupt[i]],
              "corrupted": [i for i in samples if dyn.is_corrupt[i]]}
    fig, axes = plt.subplots(2, 2, figsize=(11, 9.5))
    epochs = np.asarray(dyn.epochs) + (1 if dyn.source == "eval" else 0)
    for col, (label, members) in enumerate(groups.items()):
        lines, tri = axes[0, col], axes[1, col]
        colors = plt.cm.tab10(np.linspace(0, 1, 10))
        for j, i in enumerate(members):
            color = colors[j % 10]
            p_true = dyn.column("p_true")[i]
            if np.isfinite(p_true).any():
                lines.plot(epochs, p_true, "-", color=color, label=f"#{i} p(true={dyn.true[i]})")
            lines.plot(epochs, dyn.column("p_observed")[i], "--", color=color, label=f"#{i} p(given={dyn.observed[i]})")
            x, y = simplex_xy(*corners(dyn, i))
            tri.plot(x, y, "-o", color=color, ms=2.5, lw=1, label=f"#{i}")
            tri.plot(x[-1:], y[-1:], "s", color=color, ms=6)
        lines.set(title=f"{label}: {len(members)} sample(s)", xlabel="epoch", ylabel="probability", ylim=(-0.02, 1.02))
        lines.grid(alpha=0.3)
        if members:
            lines.legend(fontsize=6, ncol=2)
        tri.plot([0, 1, 0.5, 0], [0, 0, SQRT3 / 2, 0], color="black", lw=0.8)
        top, left = ("true", "given") if col == 1 else ("true = given", "most likely other class")
        tri.text(0.5, SQRT3 / 2 + 0.03, top, ha="center", fontsize=8)
        tri.text(0.0, -0.06, left, ha="left", fontsize=8)
        tri.text(1.0, -0.06, "rest", ha="right", fontsize=8)
        tri.set(aspect="equal", xlim=(-0.05, 1.05), ylim=(-0.1, 0.95), title="simplex path (square: last epoch)")
        tri.axis("off")
    if title:
        fig.suptitle(title)
    return save_pyplot(fig, out, name, dpi)


def write_path_views(dyn: Dynamics, out: Path, samples: Optional[Sequence[int]], scores: Optional[np.ndarray],
                     dpi: int = 110) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(samples) if samples else choose_samples(scores, dyn)
    return plot_paths(dyn, chosen, out, dpi)
