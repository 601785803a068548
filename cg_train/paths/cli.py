"""``cg-train paths merge RUN_DIR [OUT]`` and ``cg-train paths export-td RUN_DIR [OUT_DIR] --top-n N``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import SUBCOMMANDS, Subcommand
from ..errors import CgTrainError
from .layout import EVAL_DIR, TRAIN_DIR


def _configure(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True, metavar="{merge,export-td}")
    merge = actions.add_parser("merge", help="merge a run's path logs into one Parquet file (epoch and rank "
                                             "as columns; readable by pandas, pyarrow, duckdb)")
    merge.add_argument("run_dir", metavar="RUN_DIR", help="the run's --output-dir")
    merge.add_argument("out", nargs="?", metavar="OUT", help="output file (default: RUN_DIR/paths.parquet, "
                                                             "or RUN_DIR/paths_eval.parquet with --eval)")
    merge.add_argument("--eval", action="store_true", help="merge paths_eval/ (--paths-eval) instead of paths/")
    export = actions.add_parser("export-td", help="write seed 002's training_dynamics.npz, metadata.pth and "
                                                  "metadata.npz")
    export.add_argument("run_dir", metavar="RUN_DIR", help="the run's --output-dir")
    export.add_argument("out_dir", nargs="?", metavar="OUT_DIR", help="where to write (default: RUN_DIR)")
    export.add_argument("--top-n", type=int, required=True, metavar="N",
                        help="channels: the trained-on label + the N-1 most probable other classes")
    export.add_argument("--source", default="auto", choices=("auto", "train", "eval"),
                        help="eval: the --paths-eval pass after each epoch (seed 002's); train: the training "
                             "steps; auto: eval when logged (default)")


def _run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise CgTrainError(f"run directory {run_dir} does not exist: pass a cg-train --output-dir")
    if args.action == "merge":
        from .merge import merge_paths

        name = EVAL_DIR if args.eval else TRAIN_DIR
        out = Path(args.out) if args.out else run_dir / f"{name}.parquet"
        rows, epochs = merge_paths(run_dir / name, out)
        print(f"merged {rows} rows of {epochs} epoch(s) from {run_dir / name} into {out}")
        return 0
    from .export_td import TD_FILE, export_td

    out_dir = Path(args.out_dir) if args.out_dir else run_dir
    result = export_td(run_dir, out_dir, args.top_n, args.source)
    note = "exact" if result.exact else "estimated from the logged top-k outside it"
    print(f"wrote {out_dir / TD_FILE}: td [{result.samples}, {len(result.epochs)}, {result.channels}] from the "
          f"{result.source} logs (channel 0 exact; other channels {note}); {result.filled} missing entries "
          f"filled from a neighbouring epoch, {result.never_seen} samples never seen (NaN)")
    return 0


SUBCOMMANDS.register("paths", help="merge path logs into one file, or export seed 002's training dynamics")(
    Subcommand(_configure, _run))
