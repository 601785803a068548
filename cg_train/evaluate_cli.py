"""``cg-train evaluate CKPT DATA_DIR``: a checkpoint's top-1/top-5/loss/ECE, without training.

What torchvision's ``train.py --test-only`` and timm's ``validate.py`` do, and how a
user checks a teacher before distilling from it. The checkpoint brings its
architecture and its run's config (dataset, label noise, seed, input size), so
``corrupt`` / ``pristine`` / ``train_sample`` are the very subsets its run evaluated;
flags given here win. Runs under ``accelerate launch`` like training (each process
evaluates its share; the sums are reduced exactly, predictions gathered).

``--soft-labels FILE.npy`` (e.g. CIFAR-10H's human label distributions for CIFAR-10's
test set) adds ``soft_loss``: the mean cross-entropy of the predictions to those
distributions, how close a teacher's outputs are to ``p(y|x)`` (seed 000).

Writes to ``--output-dir`` (default: ``evaluate/`` next to the checkpoint):
``evaluate.csv`` (one row per checkpoint and phase, appended), ``reliability.csv``
(its calibration bins) and, with ``--predictions``, ``predictions_<phase>.parquet``
(one row per sample, by Manifest index).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .cli import SUBCOMMANDS, Subcommand, comma_list
from .errors import CgTrainError
from .results import EVAL_PHASES, RELIABILITY_COLUMNS

EVALUATE_CSV = "evaluate.csv"
#: ``soft_loss``: mean cross-entropy to ``--soft-labels`` (test phase only; empty otherwise)
EVALUATE_COLUMNS = ("checkpoint", "epoch", "phase", "count", "loss", "acc1", "acc5", "ece", "soft_loss")
#: Flags of this command and the config keys they set (``None``: left to the checkpoint's config).
CONFIG_FLAGS = {"dataset": "data.dataset", "loader": "data.loader", "batch_size": "data.eval_batch_size",
                "workers": "data.workers", "test_split": "data.test_split", "test_dir": "data.test_dir",
                "image_size": "data.image_size", "resize_size": "data.resize_size", "cpu": "train.cpu",
                "mixed_precision": "train.mixed_precision"}

log = logging.getLogger("cg_train")


def _configure(p: argparse.ArgumentParser) -> None:
    from .data.bundle import HELDOUT, TRAIN_ALL

    phases = (*EVAL_PHASES, TRAIN_ALL, HELDOUT)
    p.add_argument("checkpoint", metavar="CKPT", help="a cg-train checkpoint (checkpoint.pth.tar, model_best.pth.tar)")
    p.add_argument("data_dir", metavar="DATA_DIR", help="dataset root")
    p.add_argument("--phases", type=comma_list(str), default=["test"], metavar="PHASE,...",
                   help=f"what to evaluate, comma-separated, of {', '.join(phases)} (test = the val/test split; "
                        f"train_all = every training sample without augmentation; heldout = the training samples "
                        f"the run left out: --exclude, --remove-ratio, --fold) [default: test]")
    p.add_argument("--dataset", help="dataset reader (default: the checkpoint's run's)")
    p.add_argument("--loader", help="torchvision or dali (default: the checkpoint's run's)")
    p.add_argument("--test-split", help="split evaluated as 'test' (default: the run's, usually val)")
    p.add_argument("--test-dir", help="evaluate 'test' on the val split of this other dataset root")
    p.add_argument("-b", "--batch-size", type=int, help="evaluation batch size over all processes")
    p.add_argument("-j", "--workers", type=int, help="data-loading workers per process")
    p.add_argument("--image-size", type=int, help="crop size fed to the model (default: the run's)")
    p.add_argument("--resize-size", type=int, help="shorter side before the center crop (default: the run's)")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="autocast for the forward pass")
    p.add_argument("--cpu", action="store_true", default=None, help="evaluate on CPU even with a GPU")
    p.add_argument("--predictions", action="store_true", help="also write every sample's prediction to "
                   "predictions_<phase>.parquet (with trained_on: whether the checkpoint's run trained on it; "
                   "what `cg-analyze relabel --source model --predictions FILE` reads)")
    p.add_argument("--topk", type=int, default=5, help="classes and probabilities per sample in --predictions")
    p.add_argument("--soft-labels", metavar="FILE.npy", help="a [N, K] table of label distributions for the test "
                   "split, e.g. CIFAR-10H's cifar10h-probs.npy: adds soft_loss, the mean cross-entropy of the "
                   "predictions to it (how far they are from p(y|x), seed 000)")
    p.add_argument("--output-dir", metavar="DIR", help="where to write (default: CKPT's folder/evaluate)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def checkpoint_config(state: dict[str, Any], args: argparse.Namespace, path: Path,
                      drop: tuple[str, ...] = ("output",)):
    """The run's config from the checkpoint, with this command's flags on top; the ``drop`` sections are
    left at their defaults (``cg-train confusions`` drops ``noise``: it needs the true labels, not the run's)."""
    from .config import build_config

    saved = state.get("config")
    if not isinstance(saved, dict) or "arch" not in state or "state_dict" not in state:
        raise CgTrainError(f"{path} is not a cg-train checkpoint (no config, arch or weights in it)")
    flags = {key: getattr(args, name, None) for name, key in CONFIG_FLAGS.items()
             if getattr(args, name, None) is not None}
    # the weights come from the checkpoint; a forward pass needs neither ImageNet weights nor ZeRO
    flags.update({"data.dir": args.data_dir, "model.arch": state["arch"], "model.pretrained": False,
                  "train.deepspeed": None})
    saved = {section: values for section, values in saved.items() if section not in drop}
    return build_config(mappings=[(f"the config saved in {path}", saved)], flags=flags)


def load_checkpoint_model(args: argparse.Namespace, what: str, drop: tuple[str, ...] = ("output",)):
    """``(state, cfg, accelerator, data, model)``: the checkpoint's model as its run built it, with its weights,
    on the accelerator's device, and the data of its config with this command's flags (one-line errors)."""
    from .data.bundle import build_data
    from .engine import checkpoint
    from .engine.run import input_sizes, make_accelerator, setup_logging
    from .models import build_model

    path = Path(args.checkpoint)
    state = checkpoint.load(path, what)
    cfg = checkpoint_config(state, args, path, drop)
    accelerator = make_accelerator(cfg)
    setup_logging(accelerator.is_main_process)
    resize, crop = input_sizes(cfg)
    data = build_data(cfg, resize, crop, accelerator.process_index, accelerator.num_processes, accelerator.device)
    model = build_model(cfg.model.arch, data.train.num_classes)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise CgTrainError(f"{path}: its {cfg.model.arch} weights do not fit {data.train.num_classes} classes of "
                           f"{args.data_dir} ({str(exc).splitlines()[-1].strip()}); use it on the dataset it "
                           f"was trained on") from None
    model.to(accelerator.device)
    return state, cfg, accelerator, data, model


def _run(args: argparse.Namespace) -> int:
    import torch

    from .data.bundle import HELDOUT, TRAIN_ALL
    from .data.soft_labels import read_soft_labels
    from .engine.evaluate import evaluate
    from .io import CsvLog
    from .recorders.calibration import reliability_rows
    from .sample_stats import concat, per_sample_stats, to_host, write_predictions

    path = Path(args.checkpoint)
    extra_phases = (TRAIN_ALL, HELDOUT)
    unknown = [phase for phase in args.phases if phase not in (*EVAL_PHASES, *extra_phases)]
    if unknown or not args.phases:
        raise CgTrainError(f"--phases: unknown phase {unknown[0] if unknown else '(none)'}; choose from "
                           f"{', '.join((*EVAL_PHASES, *extra_phases))}")
    state, cfg, accelerator, data, model = load_checkpoint_model(args, "cg-train evaluate")
    soft = None
    if args.soft_labels:
        soft = torch.from_numpy(read_soft_labels(args.soft_labels, data.test)).to(accelerator.device)
    out = Path(args.output_dir) if args.output_dir else path.parent / "evaluate"
    epoch = int(state.get("epoch", 0))
    results, predictions, soft_loss = {}, {}, {}
    for phase in args.phases:
        loader = data.extra_loader(phase) if phase in data.extra_loaders else data.eval_loaders.get(phase)
        if loader is None:
            log.info("%s: no samples (e.g. corrupt without label noise, heldout of a run without removal); "
                     "skipped", phase)
            continue
        parts: list = []
        soft_sum = torch.zeros(1, dtype=torch.float64, device=accelerator.device)

        def on_batch(batch, logits, phase=phase, parts=parts, soft_sum=soft_sum) -> None:
            if args.predictions:
                parts.append(to_host(per_sample_stats(logits, batch.observed_labels, batch.true_labels,
                                                      batch.indices, args.topk)))
            if soft is not None and phase == "test":
                soft_sum.add_(-(soft[batch.indices] * torch.log_softmax(logits, dim=1)).sum().double())

        results[phase] = evaluate(model, loader, accelerator, epoch, desc=f"evaluate {phase}", on_batch=on_batch,
                                  progress=args.progress)
        if soft is not None and phase == "test":
            total = accelerator.reduce(soft_sum, reduction="sum") if accelerator.num_processes > 1 else soft_sum
            soft_loss[phase] = float(total) / results[phase].count
        if args.predictions:
            shares = [concat(parts, min(args.topk, data.train.num_classes))]
            if accelerator.num_processes > 1:
                from accelerate.utils import gather_object

                shares = gather_object(shares)
            predictions[phase] = shares
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        metrics, bins = CsvLog(out / EVALUATE_CSV, EVALUATE_COLUMNS), CsvLog(out / "reliability.csv",
                                                                             RELIABILITY_COLUMNS)
        metrics.ensure_header()
        bins.ensure_header()
        print(f"{path} ({cfg.model.arch}, epoch {epoch}) on {args.data_dir}:")
        for phase, r in results.items():
            soft_text = f"  soft-label loss {soft_loss[phase]:.4f}" if phase in soft_loss else ""
            print(f"  {phase:<12} top-1 {r.acc1:6.2f}  top-5 {r.acc5:6.2f}  loss {r.loss:.4f}  ECE {r.ece:.4f}"
                  f"{soft_text}  ({r.count} samples)")
            metrics.append((str(path), epoch, phase, r.count, r.loss, r.acc1, r.acc5, r.ece, soft_loss.get(phase, "")))
            bins.append(*reliability_rows(epoch, phase, r.calibration))
        for phase, shares in predictions.items():
            trained_on = None if phase == "test" else ~data.removed  # the test split is never trained on
            write_predictions(out / f"predictions_{phase}.parquet", concat(shares, shares[0].top_classes.shape[0]),
                              trained_on)
        print(f"written to {out}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


SUBCOMMANDS.register("evaluate", help="top-1/top-5/loss/ECE of a checkpoint on the val split (or other phases), "
                     "optionally every sample's prediction")(Subcommand(_configure, _run))
