"""``cg-analyze``: a thin entry point over the subcommands registered in :data:`analysis.commands.COMMANDS`.

``cg-analyze EXPERIMENTS_DIR [--output DIR]``: seed 004's figures, a summary table for every experiment,
and reliability diagrams (``analysis/cg_curves.py``); ``cg-analyze COMMAND ...`` runs a registered command
(``noise``, ``train-detector``, ``paths``, ``retrain``, ``kfold``, ``relabel``, ``debug``, ``explore``,
``kd``, ``kd-da``; each has ``--help``).

``main(argv) -> int`` is the entry other tools call (``cg-launch collect``): it never raises or exits on
bad experiment files or arguments, reports each problem as one ``cg-analyze: warning:`` line on stderr,
and returns 0 when it wrote its files, 2 (with one ``cg-analyze: error:`` line, or argparse's usage
error) when there was nothing to write or the arguments were wrong.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from . import cg_curves, debug_cli, explore, kd, kd_da, noise_cli  # noqa: F401  (register their commands)
from .commands import COMMANDS


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS.names():
        return COMMANDS.get(argv[0])(argv[1:])
    return cg_curves.main(argv)  # anything else is seed 004's EXPERIMENTS_DIR


def console_main() -> None:
    sys.exit(main())
