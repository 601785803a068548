"""Progress bars that behave in a terminal and in batch logs (SLURM ``.out`` files).

In a terminal: a live tqdm bar. Without one: a plain line at most every
``LOG_INTERVAL_S`` seconds, instead of thousands of carriage-return frames.
"""
from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 60.0


def progress_bar(total: int | None = None, desc: str = "", enabled: bool = True, **kwargs: Any) -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=interactive,
                mininterval=0.1 if interactive else LOG_INTERVAL_S, ascii=not interactive, **kwargs)
