"""Seed 002's analysis commands of ``cg-analyze`` (one per step of its workflow after training):

- ``cg-analyze noise RUN_DIR``: score every sample with every detector, leaderboard report (step 3's metrics);
  ``cg-analyze noise DIR`` (a folder of runs, e.g. a seed sweep) or several RUN_DIRs: each run's report and
  a leaderboard over seeds (``analysis/noise_seeds.py``);
- ``cg-analyze train-detector RUN_DIR... --out FILE``: train the LSTM detector (step 2, ``train_detector.py``);
- ``cg-analyze paths RUN_DIR [--samples 12,57]``: seed 000's learning-path views;
- ``cg-analyze retrain SWEEP_DIR``: test accuracy against remove ratio of a remove-and-retrain sweep.

Each returns an exit code and prints one ``cg-analyze: error:`` line on bad input, like the seed-004 command.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from functools import partial
from typing import Callable, Sequence

from cg_train.errors import CgTrainError

from .commands import COMMANDS
from .common import run_parsed


def source_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="auto", choices=("auto", "train", "eval"),
                        help="which path logs: training passes (--paths) or eval passes after each epoch "
                             "(--paths-eval); auto: training passes when logged")


def detectors_arg(value: str) -> list[str]:
    from .detectors import DETECTORS

    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        DETECTORS.get(name)
    return names


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 2:
        raise argparse.ArgumentTypeError(f"{value!r}: give an integer of at least 2")
    return int(value)


def samples_arg(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--samples {value!r}: give comma-separated sample indices, e.g. 12,57")


def noise(args: argparse.Namespace) -> list[Path]:
    from .detectors import load_dynamics, usable_detectors
    from .noise_report import write_report
    from .noise_seeds import is_noise_run, score_runs

    paths = [Path(p) for p in args.run_dirs]
    one_run = len(paths) == 1 and (is_noise_run(paths[0]) or not paths[0].is_dir())
    if args.oos and not one_run and Path(args.oos).is_absolute():
        raise CgTrainError(f"--oos {args.oos}: over several runs --oos is read relative to each run (e.g. --oos "
                           f"../kfold for each RUN/../kfold); give a relative path, or one RUN_DIR")

    def score(run: Path, out: Path) -> tuple[list[Path], str]:
        dyn = load_dynamics(run, args.source)
        if args.oos:
            from .kfold import oos_probabilities

            dyn.oos_probs = oos_probabilities(Path(args.oos) if one_run else run / args.oos, dyn.observed)
        names = args.detectors or usable_detectors(dyn)
        return write_report(dyn, out, names, args.detector, args.dpi, args.samples, not args.no_figures), dyn.source

    if one_run:  # its report
        return score(paths[0], Path(args.output or paths[0] / "noise"))[0]
    return score_runs(paths, score, Path(args.output) if args.output else None, not args.no_figures)


def train_detector(args: argparse.Namespace) -> list[Path]:
    from .detectors import load_dynamics
    from .detectors.lstm import train_detector as fit

    from .detectors.domain import describe, profile

    runs = [load_dynamics(Path(r), args.source) for r in args.run_dirs]
    report = fit(runs, Path(args.out), epochs=args.epochs, init=args.init, length=args.length)
    print(f"cg-analyze: LSTM detector trained on {report.samples} samples ({report.corrupt} corrupt) of "
          f"{len(runs)} run(s), {report.epochs} epochs, last loss {report.final_loss:.4f}; its domain:")
    for dyn in runs:
        print(f"  {describe(profile(dyn).as_dict())}")
    return [Path(args.out)]


def paths(args: argparse.Namespace) -> list[Path]:
    from .detectors import DETECTORS, load_dynamics
    from .path_views import write_path_views

    run = Path(args.run_dir)
    dyn = load_dynamics(run, args.source)
    scores = None if args.samples else DETECTORS.get(args.by)(dyn)
    return write_path_views(dyn, Path(args.output or run / "noise"), args.samples, scores, args.dpi)


def retrain(args: argparse.Namespace) -> list[Path]:
    from .retrain import write_retrain

    return write_retrain(Path(args.sweep_dir), Path(args.output or args.sweep_dir), args.dpi)


def build_parsers() -> dict[str, tuple[argparse.ArgumentParser, Callable[[argparse.Namespace], list[Path]]]]:
    noise_p = argparse.ArgumentParser(prog="cg-analyze noise", description="Score every training sample of a "
                                      "run with every noise detector; ROC/PR, histograms, suspicious samples, "
                                      "learning paths, scores.parquet (seed 002).")
    noise_p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a cg-train --output-dir trained with "
                         "--paths and/or --paths-eval; a folder of runs (a seed sweep) or several RUN_DIRs: each "
                         "run's report in its noise/ folder and a leaderboard over seeds (noise_leaderboard.csv/.md: "
                         "mean ± std per setting and detector, runs per cell) in that folder (-o: all of it there)")
    noise_p.add_argument("--detectors", type=detectors_arg, help="comma-separated detectors (default: all of "
                         "aum, confident_learning, forgetting, lstm, mean_loss, and confident_learning_oos with "
                         "--oos)")
    noise_p.add_argument("--detector", type=Path, metavar="FILE", help="LSTM detector file for 'lstm' (default: "
                         "the one shipped, trained on varied runs of the embedded MNIST digits); the report names "
                         "the runs it was trained on and warns when RUN_DIR lies outside them")
    noise_p.add_argument("--samples", type=samples_arg, help="learning paths of these sample indices (default: the "
                         "6 most and 6 least suspicious)")
    noise_p.add_argument("--oos", metavar="KFOLD_DIR|FILE", help="K-fold out-of-sample predictions of the same "
                         "labels (a `cg-launch kfold` directory, merged here, or its oos_predictions.parquet): adds "
                         "the confident_learning_oos detector (cleanlab on cross-validated probabilities); over several runs, a "
                         "path relative to each run, e.g. ../kfold (a run without it is left out with a warning)")

    train_p = argparse.ArgumentParser(prog="cg-analyze train-detector", description="Train seed 002's 2-layer "
                                      "LSTM noise detector on runs with synthetic noise; save it as FILE, with "
                                      "what each run was (dataset, epochs, schedule, noise) for `noise` to check.")
    train_p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    train_p.add_argument("--out", required=True, metavar="FILE", help="where to save the detector (.pt)")
    train_p.add_argument("--init", type=Path, metavar="FILE", help="fine-tune this saved detector")
    train_p.add_argument("--epochs", type=int, default=20, help="passes over the sequences (default: 20)")
    train_p.add_argument("--length", type=positive_int, help="points of training progress every run's sequences "
                         "are resampled to (default: 32; --init keeps its detector's)")

    paths_p = argparse.ArgumentParser(prog="cg-analyze paths", description="Seed 000's learning-path views of "
                                      "chosen samples: p(true)/p(given) over epochs and on a simplex.")
    paths_p.add_argument("run_dir", metavar="RUN_DIR")
    paths_p.add_argument("--samples", type=samples_arg, help="comma-separated sample indices")
    paths_p.add_argument("--by", default="aum", help="without --samples: the 6 most and 6 least suspicious by "
                         "this detector (default: aum)")

    retrain_p = argparse.ArgumentParser(prog="cg-analyze retrain", description="Test accuracy against remove "
                                        "ratio for the runs of a remove-and-retrain sweep (seed 002 step 3).")
    retrain_p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="folder holding the runs (searched recursively)")

    noise_p.add_argument("--no-figures", action="store_true", help="scores, metrics and tables only")
    for parser in (noise_p, paths_p, retrain_p):
        parser.add_argument("-o", "--output", metavar="DIR", help="where to write (default: RUN_DIR/noise, or "
                            "SWEEP_DIR)")
        parser.add_argument("--dpi", type=int, default=110)
    for parser in (noise_p, train_p, paths_p):
        source_arg(parser)
    return {"noise": (noise_p, noise), "train-detector": (train_p, train_detector), "paths": (paths_p, paths),
            "retrain": (retrain_p, retrain)}


def main(name: str, argv: Sequence[str]) -> int:
    """``cg-analyze NAME ARGV...`` for one of this module's commands."""
    parser, run = build_parsers()[name]
    return run_parsed(parser, argv, run)


for _name, _help in (("noise", "score every sample with every noise detector; leaderboard report"),
                     ("train-detector", "train seed 002's LSTM noise detector on runs with synthetic noise"),
                     ("paths", "seed 000's learning-path views of chosen samples"),
                     ("retrain", "test top-1 against remove ratio of a remove-and-retrain sweep")):
    COMMANDS.register(_name, help=_help)(partial(main, _name))
