"""``cg-train datasets [NAME [ROOT]]``: the dataset readers and the on-disk layout each expects.

With ROOT, the named reader reads ROOT's train and val splits the way a run does
and prints their sizes, so a layout problem shows up before a job is queued.
Imported by ``cg-train`` at start-up (SUBCOMMAND_MODULES), so it imports the data
layer (torch) only when the command runs.
"""
from __future__ import annotations

import argparse
import inspect

from .cli import SUBCOMMANDS, Subcommand


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="one dataset (default: all of them)")
    parser.add_argument("root", nargs="?", metavar="ROOT",
                        help="read ROOT's train and val splits with this reader and print their sizes")


def _describe(name: str) -> str:
    from .data import DATASETS

    doc = inspect.getdoc(DATASETS.get(name)) or ""
    body = "\n".join("    " + line if line else "" for line in doc.splitlines())
    return f"{name}: {DATASETS.describe(name)}\n{body}\n"


def _check(name: str, root: str) -> None:
    from .data import DATASETS, UNKNOWN_LABEL

    reader = DATASETS.get(name)
    train = reader(root, "train")
    val = reader(root, "val", classes=train.classes)
    for manifest in (train, val):
        known = int((manifest.true_labels != UNKNOWN_LABEL).sum())
        where = "in memory" if manifest.files is None else f"files under {manifest.root}"
        print(f"{manifest.split}: {len(manifest)} samples of {manifest.num_classes} classes ({where}); "
              f"{known} with a known true label")


def _run(args: argparse.Namespace) -> int:
    from .data import DATASETS

    if args.name is None:
        print("datasets (cg-train DATA_DIR --dataset NAME; check a tree with cg-train datasets NAME ROOT):\n")
        print("\n".join(_describe(name) for name in DATASETS.names()), end="")
        return 0
    DATASETS.get(args.name)  # an unknown name fails with the list of choices
    print(_describe(args.name), end="")
    if args.root is not None:
        _check(args.name, args.root)
    return 0


SUBCOMMANDS.register("datasets", help="list the dataset readers with the layout each expects; check a tree")(
    Subcommand(_configure, _run))
