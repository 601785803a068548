"""``cg-launch kfold [launch options] -- DATA_DIR [cg-train flags] --folds K --output-dir DIR``.

Out-of-sample predictions for confident learning, run by the engine: K points ``DIR/fold=I/``, each the
given recipe with ``--fold I`` (trained on the other K-1 stratified folds, then predicting fold I:
``heldout_predictions.parquet``). They are submitted like a sweep: one SLURM array task per fold
(``--executor slurm``), or processes on this machine (``local``) or here, one after the other
(``debug``). Re-running the command skips finished folds and resumes cut-off ones from their
checkpoints. Once every fold has finished (at once for local and debug), ``cg-analyze kfold DIR``
merges the folds into ``DIR/oos_predictions.parquet``; for local and debug this command does it.

The same launch as a sweep file: an axis ``noise.fold: [0, ..., K-1]`` over a base with
``noise.folds: K`` (configs/sweeps/kfold_cl.yaml); its points are named the same.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

from cg_train.checks import check_names
from cg_train.config import Config
from cg_train.errors import ConfigError

from .sweep import Point, for_launch


def fold_points(cfg: Config, root: Path) -> list[Point]:
    """One point per fold of ``cfg.noise.folds``, writing to ``root/fold=I``."""
    if cfg.noise.folds < 2:
        raise ConfigError("cg-launch kfold needs --folds K (K >= 2) among cg-train's flags after --")
    if cfg.noise.fold is not None:
        raise ConfigError("cg-launch kfold runs every fold itself: leave out --fold")
    points = []
    for fold in range(cfg.noise.folds):
        point = copy.deepcopy(cfg)
        point.noise.fold = fold
        check_names(point)  # a fold refused with the recipe's other flags is refused before any submission
        name = f"fold={fold}"
        points.append(Point(name, {"noise.fold": fold}, for_launch(point, root / name)))
    return points


def kfold_command(args: argparse.Namespace) -> int:
    from cg_train.cli import parse_train_args

    from .options import resolve_options
    from .records import LaunchDir
    from .submit import submit_points

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if not train_args:
        raise ConfigError("cg-launch kfold needs cg-train's arguments after --, e.g. -- DATA --folds 5 "
                          "--output-dir DIR")
    cfg, _ = parse_train_args(train_args)
    launch = LaunchDir(cfg.output.dir)
    opts = resolve_options(vars(args), {}, "command line")
    submit_points(launch, fold_points(cfg, launch.root), opts)
    if opts.executor == "slurm":
        print(f"when every fold has finished: cg-analyze kfold {launch.root}")
        return 0
    try:
        from analysis.kfold import write_kfold
    except ModuleNotFoundError:  # an installation without cg-analyze: the fold runs are there all the same
        print(f"merge the folds with `cg-analyze kfold {launch.root}` where the analysis package is installed")
        return 0
    for path in write_kfold(launch.root):
        print(path)
    return 0
