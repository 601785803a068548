"""Instance-dependent label noise: a corrupted sample takes the class a trained model confuses it with.

Class-conditional noise (``uniform``, ``symmetric``, ``flip``) ignores the image; real annotators
mislabel the images that look like another class. As in the instance-dependent noise of Chen et
al. (AAAI 2021, "Beyond class-conditional assumption"), a trained model's prediction stands in for
that confusion: ``cg-train confusions CKPT DATA_DIR -o FILE.parquet``
writes, for every training sample (by Manifest index),

    index            int    the sample
    true_label       int    its true label (-1: unknown)
    top_wrong_class  int    argmax of the checkpoint's softmax over the classes other than true_label (-1: unknown)
    p_top_wrong      float  that class's softmax probability (NaN: unknown)

and ``--noise-type instance --noise-confusions FILE`` gives each corrupted sample its
``top_wrong_class``, so every chosen sample is corrupt. Which exactly round(f*N) samples
(``--instance-noise-pick``): ``random``, the seeded choice every noise type makes; or
``confusable``, the samples with the highest ``p_top_wrong`` (ties: the lower index), the ones
the model finds most ambiguous (Chen et al.'s choice: the "hard" noise). Samples with an unknown
true label are never chosen.

A table written for another dataset or subset (other length, indices or true labels) is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from ..data.manifest import UNKNOWN_LABEL
from ..errors import ConfigError, DataError
from ..io import atomic_path
from ..label_debugging import most_suspicious, read_flag_table
from . import NOISES, NoiseContext

if TYPE_CHECKING:
    from ..config import NoiseConfig

NAME = "instance"
CONFUSION_COLUMNS = ("index", "true_label", "top_wrong_class", "p_top_wrong")
MAKE_IT = "write it with `cg-train confusions CKPT DATA_DIR -o FILE.parquet`"


def write_confusions(path: str, true_labels: np.ndarray, top_wrong_class: np.ndarray,
                     p_top_wrong: np.ndarray) -> None:
    """The confusions table, one row per training sample in index order (atomically: a crash leaves no half file)."""
    table = pd.DataFrame({"index": np.arange(len(true_labels), dtype=np.int64),
                          "true_label": np.asarray(true_labels, dtype=np.int64),
                          "top_wrong_class": np.asarray(top_wrong_class, dtype=np.int64),
                          "p_top_wrong": np.asarray(p_top_wrong, dtype=np.float64)})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def read_confusions(path: str, true_labels: np.ndarray, num_classes: int) -> pd.DataFrame:
    """The table at ``path``, checked against this training set's true labels (one-line errors)."""
    what = f"--noise-confusions {path}"
    table = read_flag_table(path, what, CONFUSION_COLUMNS, MAKE_IT)
    n = len(true_labels)
    another = "it was written for another dataset or subset: run `cg-train confusions` on this DATA_DIR"
    if len(table) != n or not np.array_equal(table["index"].to_numpy(), np.arange(n)):
        raise DataError(f"{what} has {len(table)} rows (indices {table['index'].min()}..{table['index'].max()}) "
                        f"but the training set has {n} samples (0..{n - 1}): {another}")
    differs = np.flatnonzero(table["true_label"].to_numpy(np.int64) != true_labels)
    if len(differs):
        i = differs[0]
        raise DataError(f"{what}: sample {i} has true_label {table['true_label'].iloc[i]} but this training set "
                        f"says {true_labels[i]} ({len(differs)} samples differ): {another}")
    known = true_labels != UNKNOWN_LABEL
    top = table["top_wrong_class"].to_numpy(np.int64)
    bad = np.flatnonzero(known & ((top < 0) | (top >= num_classes) | (top == true_labels)))
    if len(bad):
        raise DataError(f"{what}: sample {bad[0]} has top_wrong_class {top[bad[0]]}, not a class of "
                        f"0..{num_classes - 1} other than its true label {true_labels[bad[0]]}: {MAKE_IT}")
    return table


def check_instance_config(cfg: "NoiseConfig") -> None:
    """``instance`` has its confusions, and its options are not given to another noise type (one-line errors)."""
    if cfg.noise_type == NAME and not cfg.confusions:
        raise ConfigError(f"--noise-type (noise.noise_type)={NAME} needs --noise-confusions FILE.parquet (noise."
                          f"confusions): the classes a model confuses each sample with; {MAKE_IT}")
    if cfg.noise_type != NAME and cfg.confusions:
        raise ConfigError(f"--noise-confusions (noise.confusions) is read by --noise-type {NAME} only, not "
                          f"{cfg.noise_type}: add --noise-type {NAME} or drop --noise-confusions")
    if cfg.noise_type != NAME and cfg.instance_pick != "random":
        raise ConfigError(f"--instance-noise-pick (noise.instance_pick)={cfg.instance_pick} is read by --noise-type "
                          f"{NAME} only, not {cfg.noise_type}: add --noise-type {NAME} or drop it")


def _most_confusable(ctx: NoiseContext, table: pd.DataFrame) -> np.ndarray:
    candidates = ctx.candidates
    return most_suspicious(candidates, table["p_top_wrong"].to_numpy(np.float64)[candidates], ctx.count)


#: --instance-noise-pick: which samples are corrupted
PICKS: dict[str, Callable[[NoiseContext, pd.DataFrame], np.ndarray]] = {
    "random": lambda ctx, table: ctx.seeded_choice(),
    "confusable": _most_confusable,
}


@NOISES.register(NAME, help="the class a checkpoint's model confuses the image with (--noise-confusions, "
                 "`cg-train confusions`): instance-dependent, every re-drawn sample is corrupt")
def instance_noise(ctx: NoiseContext) -> tuple[np.ndarray, np.ndarray]:
    options: Any = ctx.options
    if options is None or not getattr(options, "confusions", None):
        raise ConfigError(f"--noise-type {NAME} needs --noise-confusions FILE.parquet ({MAKE_IT})")
    table = read_confusions(options.confusions, ctx.true_labels, ctx.num_classes)
    chosen = PICKS[options.instance_pick](ctx, table)
    return chosen, table["top_wrong_class"].to_numpy(np.int64)[chosen]
