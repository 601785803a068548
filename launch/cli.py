"""``cg-launch``: submit a training run or a sweep with submitit, follow it, analyse it.

    cg-launch run [launch options] -- DATA_DIR [cg-train flags] --output-dir DIR
    cg-launch sweep SWEEP.yaml [--dir DIR] [launch options]
    cg-launch kfold [launch options] -- DATA_DIR [cg-train flags] --folds K --output-dir DIR
    cg-launch status DIR
    cg-launch collect DIR [--output FIGURES_DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from cg_train.errors import CgTrainError

EPILOG = """\
examples:
  cg-launch run --partition gpu --gpus-per-node 8 --time 2880 -- /imagenet --corrupt-fraction 0.5 \\
      --output-dir /checkpoint/$USER/noise_0.5
  cg-launch sweep sweeps/noise.yaml --dir /checkpoint/$USER/noise_sweep --parallelism 4
  cg-launch kfold --executor local --gpus-per-node 0 -- data/demo-mnist --config configs/noise_td.yaml \
      --folds 5 --output-dir runs/kfold
  cg-launch status /checkpoint/$USER/noise_sweep
  cg-launch collect /checkpoint/$USER/noise_sweep
"""


def build_parser() -> argparse.ArgumentParser:
    from .options import add_launch_flags

    parser = argparse.ArgumentParser(prog="cg-launch", description=__doc__.split("\n")[0].split(": ", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="submit one cg-train run (the arguments after -- are cg-train's)")
    add_launch_flags(run)
    run.add_argument("train_args", nargs=argparse.REMAINDER, metavar="-- DATA_DIR [cg-train flags]")
    sweep = commands.add_parser("sweep", help="submit every point of a sweep file as one job array")
    sweep.add_argument("sweep_file", metavar="SWEEP.yaml", help="base config + axes (see launch/sweep.py)")
    sweep.add_argument("--dir", metavar="DIR", help="launch directory, one subdirectory per point "
                       "(default: runs/<sweep file name>)")
    add_launch_flags(sweep)
    kfold = commands.add_parser("kfold", help="train K fold runs of one recipe (each without one stratified fold, "
                                "predicting it) as one job array, then merge their out-of-sample predictions")
    add_launch_flags(kfold)
    kfold.add_argument("train_args", nargs=argparse.REMAINDER,
                       metavar="-- DATA_DIR [cg-train flags] --folds K --output-dir DIR")
    status = commands.add_parser("status", help="state of each point: pending, running, done, failed, preempted")
    status.add_argument("dir", metavar="DIR", help="a directory a run or sweep was submitted to")
    collect = commands.add_parser("collect", help="run the analysis (cg-analyze) over the finished points")
    collect.add_argument("dir", metavar="DIR", help="a directory a run or sweep was submitted to")
    collect.add_argument("--output", metavar="DIR", help="where figures and the summary go (default: DIR/analysis)")
    return parser


def run_command(args: argparse.Namespace) -> int:
    from cg_train.cli import parse_train_args

    from .options import resolve_options
    from .records import HERE, LaunchDir
    from .submit import submit_points
    from .sweep import Point, for_launch

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if not train_args:
        raise CgTrainError("cg-launch run needs cg-train's arguments after --, e.g. -- /imagenet --output-dir DIR")
    cfg, _ = parse_train_args(train_args)
    launch = LaunchDir(cfg.output.dir)
    opts = resolve_options(vars(args), {}, "command line")
    submit_points(launch, [Point(HERE, {}, for_launch(cfg, launch.root))], opts)
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    from .options import resolve_options
    from .records import LaunchDir
    from .submit import submit_points
    from .sweep import load_sweep

    launch = LaunchDir(args.dir or Path("runs") / Path(args.sweep_file).stem)
    sweep = load_sweep(args.sweep_file, launch.root)
    opts = resolve_options(vars(args), sweep.launch, f"{Path(args.sweep_file).name} launch:")
    submit_points(launch, sweep.points, opts)
    return 0


def status_command(args: argparse.Namespace) -> int:
    from .records import LaunchDir
    from .status import format_status, launch_status

    print(format_status(launch_status(LaunchDir(args.dir))))
    return 0


def collect_command(args: argparse.Namespace) -> int:
    from .collect import collect
    from .records import LaunchDir

    return collect(LaunchDir(args.dir), Path(args.output) if args.output else None)


def kfold_command(args: argparse.Namespace) -> int:
    from .kfold import kfold_command as run_folds

    return run_folds(args)


COMMANDS = {"run": run_command, "sweep": sweep_command, "kfold": kfold_command, "status": status_command,
            "collect": collect_command}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return COMMANDS[args.command](args)
    except CgTrainError as exc:
        print(f"cg-launch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cg-launch: interrupted; `cg-launch status` shows where each point is, re-submitting continues",
              file=sys.stderr)
        return 130


def console_main() -> None:
    sys.exit(main())
