"""Seed 002's data-debugging commands of ``cg-analyze`` (section 4.3, and cleanlab's cross-validation):

- ``cg-analyze kfold KFOLD_DIR``: merge a K-fold launch's out-of-sample predictions (``analysis/kfold.py``);
- ``cg-analyze relabel RUN_DIR --detector NAME (--ratio r | --count n) --source truth|model --out FILE``:
  a label table for ``cg-train --labels`` (``analysis/relabel.py``);
- ``cg-analyze debug SWEEP_DIR``: noisy / removed / relabelled training side by side (``analysis/debug.py``).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .commands import COMMANDS
from .common import run_parsed


def ratio_arg(value: str) -> float:
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if not 0.0 < ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"--ratio {value!r}: give a fraction in (0, 1], e.g. 0.2")
    return ratio


def count_arg(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"--count {value!r}: give a number of samples >= 1")
    return int(value)


@COMMANDS.register("kfold", help="merge a K-fold launch's out-of-sample predictions (cg-launch kfold) into one table")
def kfold(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="cg-analyze kfold", description="Merge the held-out predictions of "
                                     "the K fold runs of a `cg-launch kfold` launch into one out-of-sample table "
                                     "(refused while a fold is missing); `cg-analyze noise RUN_DIR --oos KFOLD_DIR` "
                                     "scores it as confident_learning_oos.")
    parser.add_argument("kfold_dir", metavar="KFOLD_DIR", help="the --output-dir of `cg-launch kfold` (fold=I/ runs)")
    parser.add_argument("-o", "--output", metavar="FILE", help="where to write the table (default: "
                        "KFOLD_DIR/oos_predictions.parquet; kfold.md next to it)")

    def run(args: argparse.Namespace) -> list[Path]:
        from .kfold import write_kfold

        return write_kfold(Path(args.kfold_dir), Path(args.output) if args.output else None)

    return run_parsed(parser, argv, run)


@COMMANDS.register("relabel", help="new labels for a detector's most suspicious samples (truth or a model's "
                   "prediction): a label table for cg-train --labels")
def relabel(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="cg-analyze relabel", description="Seed 002's data debugging: give the "
                                     "most suspicious samples of RUN_DIR by --detector a new label, from the ground "
                                     "truth (its CUB protocol) or from a model trained without them (its WebVision "
                                     "protocol); write a label table that `cg-train DATA ... --labels FILE` trains on.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the scored run (its noise/scores.parquet, computed now "
                        "when missing)")
    parser.add_argument("--detector", required=True, metavar="NAME", help="a score column of scores.parquet, e.g. "
                        "aum, mean_loss, confident_learning_oos")
    choose = parser.add_mutually_exclusive_group(required=True)
    choose.add_argument("--ratio", type=ratio_arg, metavar="R", help="relabel the round(R*N) most suspicious "
                        "samples (the samples --remove-ratio R removes)")
    choose.add_argument("--count", type=count_arg, metavar="N", help="relabel the N most suspicious samples")
    parser.add_argument("--source", required=True, choices=("truth", "model"), help="truth: the ground-truth label "
                        "(suspects without one are skipped, with a note); model: the prediction in --predictions")
    parser.add_argument("--predictions", type=Path, metavar="PATH", help="--source model: a run that left the "
                        "suspects out and predicted them (--remove-ratio R --detector NAME --predict-heldout), a "
                        "K-fold launch directory or its oos_predictions.parquet, or `cg-train evaluate "
                        "--predictions` output; predictions of a model that trained on a suspect are refused")
    parser.add_argument("--scores", type=Path, metavar="FILE", help="scores.parquet to rank by (default: "
                        "RUN_DIR/noise/scores.parquet)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="the label table to write (.parquet)")

    def run(args: argparse.Namespace) -> list[Path]:
        from .relabel import write_relabel

        return write_relabel(Path(args.run_dir), args.detector, args.source, args.out, args.ratio, args.count,
                             args.scores, args.predictions)

    return run_parsed(parser, argv, run)


@COMMANDS.register("debug", help="test top-1 of noisy / removed / relabelled training, relabel accuracy, corrupt "
                   "samples left, per setting")
def debug(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="cg-analyze debug", description="Seed 002's data debugging report: for "
                                     "every run under SWEEP_DIR (noisy, remove-and-retrain, relabelled, clean), "
                                     "final/best test top-1, the corrupt samples it trains on, and how many of a "
                                     "label table's new labels are the true ones.")
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="folder holding the runs (searched recursively)")
    parser.add_argument("-o", "--output", metavar="DIR", help="where to write debug.csv and debug.md (default: "
                        "SWEEP_DIR)")

    def run(args: argparse.Namespace) -> list[Path]:
        from .debug import write_debug

        return write_debug(Path(args.sweep_dir), Path(args.output or args.sweep_dir))

    return run_parsed(parser, argv, run)
