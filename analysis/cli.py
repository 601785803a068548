"""``cg-analyze EXPERIMENTS_DIR [--output DIR]``: seed 004's figures, a summary table for every experiment,
and reliability diagrams (``reliability_test``) of the runs that wrote ``reliability.csv``.

``cg-analyze kd-da RUNS_DIR``: seed 001's T. stddev vs student test loss study (analysis/kd_da.py).

``main(argv) -> int`` is the entry other tools call (``cg-launch collect``): it never raises or exits on
bad experiment files or arguments, reports each problem as one ``cg-analyze: warning:`` line on stderr,
and returns 0 when it wrote the figures, 2 (with one ``cg-analyze: error:`` line, or argparse's usage
error) when there was nothing to plot or the arguments were wrong.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from cg_train.errors import CgTrainError


#: subcommands of seed 002 / 000 (analysis/noise_cli.py); anything else is seed 004's EXPERIMENTS_DIR
NOISE_COMMANDS = ("noise", "train-detector", "paths", "retrain")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cg-analyze", description="Plot seed 004's loss / top-1 curves (train vs test, pristine vs corrupt) "
        "of every experiment folder under EXPERIMENTS_DIR, and a summary table of final and best values. "
        "Seed 002/000: `cg-analyze noise RUN_DIR` (detector leaderboard), `cg-analyze train-detector RUN_DIR... "
        "--out FILE`, `cg-analyze paths RUN_DIR`, `cg-analyze retrain SWEEP_DIR` (each has --help).")
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
    from .cg_curves import write_figures
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in NOISE_COMMANDS:  # seed 002/000 commands: cg-analyze noise|train-detector|paths|retrain
        from .noise_cli import main as noise_main

        return noise_main(argv)
    if argv[:1] == ["kd"]:  # cg-analyze kd RUNS_DIR: the distillation table (analysis/kd.py)
        from .kd import main as kd_main

        return kd_main(argv[1:])
    if argv[:1] == ["kd-da"]:  # seed 001's T. stddev vs S. test loss study (analysis/kd_da.py)
        from .kd_da import main as kd_da_main

        return kd_da_main(argv[1:])
    return run_parsed(build_parser(), argv, lambda args: analyze(
        Path(args.experiments_dir), Path(args.output or args.experiments_dir), split_formats(args.formats), args.dpi))


def split_formats(text: str) -> list[str]:
    return [f.strip().lower() for f in text.split(",") if f.strip()]


def run_parsed(parser: argparse.ArgumentParser, argv: Sequence[str],
               action: Callable[[argparse.Namespace], list[Path]]) -> int:
    """Parse ``argv``, run ``action`` and print the files it wrote; usage and CgTrainError become return
    codes (0, 2), never exits or tracebacks, so other tools can call ``main``."""
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help, or a usage error already printed: a code, not an exit, for callers
        return int(exc.code or 0)
    return run_and_list(lambda: action(args))


def run_and_list(produce: Callable[[], list[Path]]) -> int:
    """Run a command, print the files it wrote (0), or one ``cg-analyze: error:`` line (2)."""
    try:
        written = produce()
    except CgTrainError as exc:
        print(f"cg-analyze: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def console_main() -> None:
    sys.exit(main())
