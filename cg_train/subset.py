"""``cg-train subset``: the command line of seed 004's easy/hard datasets (logic: data/linked_subset.py).

Kept free of heavy imports: cli.py imports this module to register the subcommand.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import SUBCOMMANDS, Subcommand


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC_DATA", help="the dataset the examples CSV indexes (train/ and val/)")
    p.add_argument("dst", metavar="DST_DATA", help="new dataset root to create (same filesystem as SRC_DATA)")
    p.add_argument("examples_csv", metavar="learned_examples.csv",
                   help="CSV with an 'index' column: positions in SRC_DATA's sorted training listing "
                        "(--store-learned writes it); a 'path' column is checked against SRC_DATA")
    p.add_argument("--hard", action="store_true", help="take the training examples NOT listed in the CSV")
    p.add_argument("--split-test", type=int, default=0, metavar="N",
                   help="move N selected examples into val/ as a held-out test set (seed 004: 100000); "
                        "default: link SRC_DATA's own val/")
    p.add_argument("--seed", type=int, default=0, help="seed of the --split-test choice (default: 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _run(args: argparse.Namespace) -> int:
    from .data.linked_subset import MANIFEST_NAME, make_subset

    record = make_subset(args.src, args.dst, args.examples_csv, args.hard, args.split_test, args.seed,
                         args.progress)
    counts = record["counts"]
    if record["already_done"]:
        print(f"{args.dst} is already this subset ({counts['train']} train, {counts['val']} val): nothing to do")
        return 0
    missing = record["classes_without_examples"]
    if missing:
        print(f"cg-train: warning: {len(missing)} class(es) have no training example in the subset "
              f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): DST's class ids differ from "
              f"SRC's and their val images were left out", file=sys.stderr)
    print(f"{'hard' if args.hard else 'easy'} subset in {args.dst}: {counts['train']} train, {counts['val']} val "
          f"({record['val_source']}) hardlinks; list in {Path(args.dst) / MANIFEST_NAME}")
    return 0


SUBCOMMANDS.register("subset", help="easy/hard dataset of hardlinks from a learned_examples.csv (seed 004)")(
    Subcommand(_configure, _run))
