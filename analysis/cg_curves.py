"""Seed 004's four figures: loss and top-1 of train/test and of pristine/corrupt, one colour per experiment.

Each figure draws, for every experiment, the first phase of its pair as a solid line and the second as a
dashed line of the same colour (legend ``experiment [phase]``), as seed 004's
``imagenet_analyze_results`` did; "train" is ``train_sample.csv`` (the training sample evaluated each
epoch). Written as ``<stat>_<phase>_<phase>.pdf`` and ``.png``.

``python -m analysis.cg_curves EXPERIMENTS_DIR`` is the same as ``cg-analyze EXPERIMENTS_DIR``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from matplotlib import colormaps
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
from matplotlib.ticker import MaxNLocator

from cg_train.errors import CgTrainError

from .commands import COMMANDS
from .common import run_parsed, save_figure, split_formats
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


def write_figures(experiments: Sequence[Experiment], out_dir: Path, formats: Sequence[str] = FORMATS,
                  dpi: int = 110) -> list[Path]:
    """Write the four figures in every format (atomically); return the paths written."""
    written = []
    for stat, pair in FIGURES:
        written += save_figure(plot_figure(experiments, stat, pair), out_dir, figure_name(stat, pair), formats, dpi)
    return written


# ------------------------------------------------------------------ the command (cg-analyze EXPERIMENTS_DIR)
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cg-analyze", description="Plot seed 004's loss / top-1 curves (train vs test, pristine vs corrupt) "
        "of every experiment folder under EXPERIMENTS_DIR, and a summary table of final and best values. "
        "Other commands: `cg-analyze COMMAND --help`; " +
        "; ".join(f"{name}: {text}" for name, text in COMMANDS.items()) + ".")
    parser.add_argument("experiments_dir", metavar="EXPERIMENTS_DIR",
                        help="folder holding experiment folders (each with pristine/corrupt/train_sample/test.csv), "
                             "searched recursively; it may itself be one experiment")
    parser.add_argument("-o", "--output", "--outdir", dest="output", metavar="DIR",
                        help="where to write the figures and summary (default: EXPERIMENTS_DIR, as seed 004)")
    parser.add_argument("--format", dest="formats", default="pdf,png", metavar="pdf,png",
                        help="comma-separated figure formats (default: pdf,png)")
    parser.add_argument("--dpi", type=int, default=110, help="resolution of raster formats (default: 110)")
    return parser


def analyze(experiments_dir: Path, output: Path, formats: Sequence[str], dpi: int = 110) -> list[Path]:
    """Load, report problems, write figures + summary; return the files written."""
    from .experiments import load_experiments
    from .reliability import write_reliability
    from .summary import summarize, write_summary

    if not experiments_dir.is_dir():
        raise CgTrainError(f"{experiments_dir} is not a directory: pass the folder that holds the experiment folders")
    experiments, problems = load_experiments(experiments_dir)
    for problem in problems:
        print(f"cg-analyze: warning: {problem}", file=sys.stderr)
    if not experiments:
        raise CgTrainError(f"no experiment with readable pristine/corrupt/train_sample/test.csv under "
                           f"{experiments_dir}: point cg-analyze at the folder that holds the runs' --output-dir")
    written = write_figures(experiments, output, formats, dpi)
    diagrams, problems = write_reliability(experiments, output, formats, dpi)
    for problem in problems:
        print(f"cg-analyze: warning: {problem}", file=sys.stderr)
    written += diagrams + write_summary(summarize(experiments), output)
    print(f"cg-analyze: {len(experiments)} experiment(s): {', '.join(e.name for e in experiments)}")
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``cg-analyze EXPERIMENTS_DIR [--output DIR]`` (also ``python -m analysis.cg_curves``)."""
    return run_parsed(build_parser(), list(sys.argv[1:] if argv is None else argv), lambda args: analyze(
        Path(args.experiments_dir), Path(args.output or args.experiments_dir), split_formats(args.formats), args.dpi))


if __name__ == "__main__":
    sys.exit(main())
