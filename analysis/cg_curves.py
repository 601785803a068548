"""Seed 004's four figures: loss and top-1 of train/test and of pristine/corrupt, one colour per experiment.

Each figure draws, for every experiment, the first phase of its pair as a solid line and the second as a
dashed line of the same colour (legend ``experiment [phase]``), as seed 004's
``imagenet_analyze_results`` did; "train" is ``train_sample.csv`` (the training sample evaluated each
epoch). Written as ``<stat>_<phase>_<phase>.pdf`` and ``.png``.

``python -m analysis.cg_curves EXPERIMENTS_DIR`` is the same as ``cg-analyze EXPERIMENTS_DIR``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib import colormaps
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
from matplotlib.ticker import MaxNLocator

from cg_train.io import atomic_path

from .experiments import Experiment

#: (statistic, (solid phase, dashed phase)) per figure, in seed 004's order of file names.
FIGURES = (("loss", ("train", "test")), ("acc1", ("train", "test")),
           ("loss", ("pristine", "corrupt")), ("acc1", ("pristine", "corrupt")))
PHASE_FILES = {"train": "train_sample", "test": "test", "pristine": "pristine", "corrupt": "corrupt"}
AXIS_LABELS = {"loss": "loss", "acc1": "top-1 accuracy (%)"}
FORMATS = ("pdf", "png")


def figure_name(stat: str, pair: Sequence[str]) -> str:
    return f"{stat}_{'_'.join(pair)}"


def plot_figure(experiments: Sequence[Experiment], stat: str, pair: Sequence[str]) -> Figure:
    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    colours = colormaps["tab10" if len(experiments) <= 10 else "tab20"]
    for i, experiment in enumerate(experiments):
        colour = colours(i % colours.N)
        for phase, style in zip(pair, ("-", "--")):
            curve = experiment.curves.get(PHASE_FILES[phase])
            if curve is not None:
                axes.plot(curve.epoch, curve[stat], style, color=colour, marker=".",
                          label=f"{experiment.name} [{phase}]")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(AXIS_LABELS[stat])
    axes.set_title(f"{AXIS_LABELS[stat]}: {' (solid) vs '.join(pair)} (dashed)")
    if stat == "acc1":
        axes.set_ylim(0, 100)
    else:
        axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, out_dir: Path, name: str, formats: Sequence[str], dpi: int) -> list[Path]:
    """``name.<fmt>`` in every format, written atomically; returns the paths."""
    written = []
    for fmt in formats:
        path = Path(out_dir) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            # No creation date in the metadata: the same CSVs give the same bytes.
            metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            figure.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
        written.append(path)
    return written


def write_figures(experiments: Sequence[Experiment], out_dir: Path, formats: Sequence[str] = FORMATS,
                  dpi: int = 110) -> list[Path]:
    """Write the four figures in every format (atomically); return the paths written."""
    written = []
    for stat, pair in FIGURES:
        written += save_figure(plot_figure(experiments, stat, pair), out_dir, figure_name(stat, pair), formats, dpi)
    return written


if __name__ == "__main__":
    from .cli import console_main

    console_main()
