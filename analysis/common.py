"""Helpers every ``cg-analyze`` command shares; this module imports no command.

A command is a function ``argv -> exit code`` (:data:`analysis.commands.COMMANDS`). It never raises or exits
on bad input: :func:`run_parsed` turns argparse's usage errors and :class:`~cg_train.errors.CgTrainError`
into a return code and one ``cg-analyze: error:`` line, so other tools (``cg-launch collect``) can call it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from cg_train.errors import CgTrainError
from cg_train.io import atomic_path


def split_formats(text: str) -> list[str]:
    """``"pdf, PNG"`` -> ``["pdf", "png"]``."""
    return [f.strip().lower() for f in text.split(",") if f.strip()]


def save_figure(figure: Any, out_dir: Path, name: str, formats: Sequence[str] = ("png", "pdf"), dpi: int = 110,
                tight: bool = False) -> list[Path]:
    """``name.<fmt>`` in every format, written atomically; returns the paths. No creation date in the
    metadata, so the same inputs give the same bytes. The caller closes a pyplot figure."""
    written = []
    for fmt in formats:
        path = Path(out_dir) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            figure.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata, **({"bbox_inches": "tight"} if tight else {}))
        written.append(path)
    return written


def run_parsed(parser: argparse.ArgumentParser, argv: Sequence[str],
               action: Callable[[argparse.Namespace], list[Path]]) -> int:
    """Parse ``argv``, run ``action`` and print the files it wrote; usage and CgTrainError become return
    codes (0, 2), never exits or tracebacks, so other tools can call a command."""
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


def save_pyplot(figure: Any, out_dir: Path, name: str, dpi: int = 110) -> list[Path]:
    """A pyplot figure as ``name.png`` and ``name.pdf`` (tight bounding box), then closed."""
    import matplotlib.pyplot as plt

    try:
        return save_figure(figure, out_dir, name, ("png", "pdf"), dpi, tight=True)
    finally:
        plt.close(figure)
