"""``cg-train confusions CKPT DATA_DIR -o FILE.parquet``: the class a checkpoint confuses each training image with.

What ``--noise-type instance --noise-confusions FILE`` reads (cg_train/noise/instance.py). The checkpoint's
model, built as its run built it, predicts every training sample in eval mode with the evaluation
transforms (the ``train_all`` phase of ``cg-train evaluate``); one row per sample, by Manifest index:
``index, true_label, top_wrong_class, p_top_wrong``, where ``top_wrong_class`` is the argmax of the
softmax over the classes other than the *true* label (the run's own label noise is ignored: the
checkpoint may come from a noisy run) and -1 where the true label is unknown. Runs under
``accelerate launch`` like ``evaluate`` (each process predicts its share; the rows are gathered).
"""
from __future__ import annotations

import argparse

import numpy as np

from .cli import SUBCOMMANDS, Subcommand
from .errors import CgTrainError

def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="a cg-train checkpoint (checkpoint.pth.tar, model_best.pth.tar)")
    p.add_argument("data_dir", metavar="DATA_DIR", help="the dataset root whose training split the noise will corrupt")
    p.add_argument("-o", "--output", required=True, metavar="FILE.parquet", help="where to write the table")
    p.add_argument("-b", "--batch-size", type=int, help="batch size over all processes (default: the run's)")
    p.add_argument("-j", "--workers", type=int, help="data-loading workers per process (default: the run's)")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="autocast for the forward pass")
    p.add_argument("--cpu", action="store_true", default=None, help="run on CPU even with a GPU")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def top_wrong(logits, true):
    """``(class, probability)`` of the most probable class other than ``true`` (-1 / NaN where ``true`` is -1)."""
    import torch

    probs = torch.softmax(logits.float(), dim=1)
    known = true >= 0
    others = probs.scatter(1, true.clamp(min=0).view(-1, 1), -1.0)  # below any probability
    classes = others.argmax(dim=1)
    p = others.gather(1, classes.view(-1, 1)).squeeze(1)
    return torch.where(known, classes, -1), torch.where(known, p, float("nan"))


def _run(args: argparse.Namespace) -> int:
    from .data.bundle import TRAIN_ALL
    from .engine.evaluate import evaluate
    from .evaluate_cli import load_checkpoint_model
    from .noise.instance import write_confusions

    # noise dropped: every sample, its true label, whatever the checkpoint's run corrupted or left out
    state, cfg, accelerator, data, model = load_checkpoint_model(args, "cg-train confusions", drop=("output", "noise"))
    if data.train.num_classes < 2:
        raise CgTrainError(f"{args.data_dir} has {data.train.num_classes} class: a confusion needs at least 2")
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def on_batch(batch, logits) -> None:
        classes, p = top_wrong(logits, batch.true_labels)
        parts.append((batch.indices.cpu().numpy(), classes.cpu().numpy(), p.cpu().numpy()))

    result = evaluate(model, data.extra_loader(TRAIN_ALL), accelerator, int(state.get("epoch", 0)),
                      desc="confusions", on_batch=on_batch, progress=args.progress)
    shares = [parts]
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        shares = gather_object(shares)
    if accelerator.is_main_process:
        rows = [part for share in shares for part in share]
        index, classes, p = (np.concatenate([r[i] for r in rows]) for i in range(3))
        index, first = np.unique(index.astype(np.int64), return_index=True)  # sorted; a padded share repeats rows
        n = len(data.train)
        if not np.array_equal(index, np.arange(n)):
            raise CgTrainError(f"predicted {len(index)} of the {n} training samples of {args.data_dir}: the other "
                               f"{n - len(index)} could not be read (the log names them); fix or remove those images "
                               f"and run `cg-train confusions` again")
        write_confusions(args.output, data.train.true_labels, classes[first], p[first])
        known = data.train.true_labels >= 0
        print(f"{args.checkpoint} ({cfg.model.arch}) on the {n} training samples of {args.data_dir}: top-1 "
              f"{result.acc1:.2f}, mean p_top_wrong {np.nanmean(p[first][known]) if known.any() else float('nan'):.4f}"
              f"; written to {args.output}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


SUBCOMMANDS.register("confusions", help="the class a checkpoint confuses each training image with "
                     "(for --noise-type instance --noise-confusions FILE)")(Subcommand(_configure, _run))
