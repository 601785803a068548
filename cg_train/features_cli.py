"""``cg-train features ARCH``: the feature references a model offers to the feature methods.

RepDistiller's ``feat`` / ``preact`` lists of the model's family (what ``feat[1:-1]`` means for
it), then every module path and FX node name (for ``--student-features`` / ``--teacher-features``;
docs/feature_distillation.md), each with its shape for a ``--image-size`` input.
"""
from __future__ import annotations

import argparse

from .cli import SUBCOMMANDS, Subcommand


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arch", metavar="ARCH", help="a model of `cg-train list models`")
    parser.add_argument("--image-size", type=int, default=None, help="input size (default: the model's)")
    parser.add_argument("--all", action="store_true", help="also every module path and FX node name")


def _run(args: argparse.Namespace) -> int:
    import torch

    from .models import MODELS, build_model
    from .models.features import FeatureTaps, feature_names

    spec = MODELS.get(args.arch)
    model = build_model(MODELS.canonical(args.arch), 10).eval()
    size = args.image_size or spec.crop_size
    names = feature_names(model)
    for kind in ("feat", "preact"):
        if kind not in names:
            print(f"{args.arch}: no RepDistiller feature list (name modules or FX nodes instead)")
            break
        taps = FeatureTaps(model, names[kind], kind)
        with torch.no_grad():
            shapes = [tuple(f.shape[1:]) for f in taps.probe(torch.zeros(2, 3, size, size))]
        taps.remove()
        print(f"{kind}:")
        for i, (ref, shape) in enumerate(zip(names[kind], shapes)):
            print(f"  {kind}[{i}] = {ref:<24} {list(shape)}")
    if args.all:
        print("modules (PATH, PATH:in):\n  " + "\n  ".join(names["modules"]))
        print("FX nodes:\n  " + "\n  ".join(names["fx_nodes"]))
    return 0


SUBCOMMANDS.register("features", help="the feature references of a model (RepDistiller's feat/preact lists, "
                                      "module paths, FX nodes) for the feature methods")(Subcommand(_configure, _run))
