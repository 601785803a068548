"""Run the analysis (``cg-analyze``) over the finished points of a launch.

The analysis reads one experiment per subdirectory; it gets a view of the launch
directory with only the finished points in it (``.launch/finished/<point>/``, links to
the runs' files), so half-trained runs never end up in a figure.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

from . import LaunchError
from .records import HERE, LaunchDir
from .status import format_status, launch_status


def load_analysis() -> Callable[[list[str]], int]:
    try:
        from analysis.cli import main
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("analysis"):
            raise
        raise LaunchError("cg-launch collect needs the analysis package (cg-analyze), which this installation "
                          "lacks") from None
    return main


def finished_view(launch: LaunchDir, names: list[str]) -> Path:
    """``.launch/finished/<point>/`` for exactly ``names``: a folder per point whose entries are symbolic links
    to the run's files (the analysis walks folders but not linked ones)."""
    view = launch.meta / "finished"
    if view.exists():
        shutil.rmtree(view)  # only folders and links: the runs' files are never followed
    for name in names:
        run_dir = launch.run_dir(name)
        folder = view / (run_dir.name if name == HERE else name)
        folder.mkdir(parents=True)
        for entry in run_dir.iterdir():
            if not entry.name.startswith("."):
                (folder / entry.name).symlink_to(os.path.relpath(entry, folder))
    return view


def collect(launch: LaunchDir, output: Optional[Path] = None) -> int:
    analyze = load_analysis()  # before anything is written
    statuses = launch_status(launch)
    done = [s.name for s in statuses if s.state == "done"]
    if not done:
        raise LaunchError(f"no point of {launch.root} has finished yet:\n{format_status(statuses)}")
    if len(done) < len(statuses):
        print(f"collecting {len(done)} of {len(statuses)} points; the others are not finished:", file=sys.stderr)
        print(format_status([s for s in statuses if s.state != "done"]), file=sys.stderr)
    output = output or launch.root / "analysis"
    return analyze([str(finished_view(launch, done)), "--output", str(output)])
