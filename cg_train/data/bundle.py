"""Assemble what a run reads: manifests, label noise, seed-004 subsets, and one loader per phase."""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch

from ..errors import DataError
from ..label_debugging import apply_label_table
from ..noise import corrupt_labels, is_corrupt
from ..results import EVAL_PHASES
from .loaders import LOADERS, Loader, LoaderSpec
from .manifest import UNKNOWN_LABEL, Manifest
from .readers import DATASETS
from .folds import fold_assignment
from .removal import removed_mask
from .readers.listing import listing_cache
from .subsets import eval_subsets

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("cg_train")

#: An extra phase that recorders may ask for: every training sample, evaluation transform, each once.
TRAIN_ALL = "train_all"
#: Another: the training samples left out of training (--exclude, --remove-ratio, --fold), evaluation transform.
HELDOUT = "heldout"


@dataclass
class DataBundle:
    train: Manifest  # observed labels include the synthetic corruption
    test: Manifest
    resampled: np.ndarray  # bool [N]: labels re-drawn by the noise
    subsets: dict[str, np.ndarray]  # pristine / corrupt / train_sample -> train indices
    train_loader: Loader
    eval_loaders: dict[str, Loader]  # phase -> loader; empty phases are left out
    extra_loaders: dict[str, Callable[[], Loader]] = field(default_factory=dict)  # phase -> builder, on demand
    removed: Optional[np.ndarray] = None  # bool [N]: left out of training (--exclude / --remove-ratio / --fold)
    folds: Optional[np.ndarray] = None  # int64 [N]: each sample's fold of --folds K (None without)
    label_before_debugging: Optional[np.ndarray] = None  # int64 [N]: observed labels before --labels (None without)

    def record_columns(self) -> dict[str, np.ndarray]:
        """Per-sample columns of ``corruption.parquet`` beyond the labels: what this run changed about them."""
        n = len(self.train)
        columns = {"removed": np.zeros(n, dtype=bool) if self.removed is None else self.removed}
        if self.folds is not None:
            columns["fold"] = self.folds
        if self.label_before_debugging is not None:
            columns["label_before_debugging"] = self.label_before_debugging
            columns["relabelled"] = self.label_before_debugging != self.train.observed_labels
        return columns

    def extra_loader(self, phase: str) -> Loader:
        if phase not in self.extra_loaders:
            raise ValueError(f"no extra evaluation phase {phase!r}; known: {', '.join(self.extra_loaders)}")
        return self.extra_loaders[phase]()


def usable_workers(requested: int) -> int:
    """``--workers``, at most the CPUs this process may run on: more workers than cores only thrash
    (the default of 4, seed 004's, would oversubscribe a 2-core laptop or CI runner)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested > cpus:
        log.info("--workers %d lowered to %d: this process may use %d CPU(s)", requested, cpus, cpus)
        return cpus
    return requested


def read_manifests(cfg: "Config") -> tuple[Manifest, Manifest]:
    if not cfg.data.dir:
        raise DataError("no dataset given: pass DATA_DIR (e.g. cg-train /imagenet ...) or set data.dir")
    reader = DATASETS.get(cfg.data.dataset)
    with listing_cache(cfg.data.listing_cache):
        train = reader(cfg.data.dir, "train")
        test = reader(cfg.data.test_dir or cfg.data.dir, cfg.data.test_split, classes=train.classes)
    if len(train) == 0:
        raise DataError(f"the training split of {cfg.data.dir} is empty")
    return train, test


def apply_noise(train: Manifest, cfg: "Config") -> tuple[Manifest, np.ndarray]:
    """Re-draw labels from the *true* ones: a sample whose true label is unknown is never chosen and keeps
    its observed (e.g. web) label."""
    redrawn, resampled = corrupt_labels(train.true_labels, train.num_classes,
                                        cfg.noise.corrupt_fraction, cfg.noise.noise_type, cfg.train.seed,
                                        options=cfg.noise)
    return train.with_observed(np.where(resampled, redrawn, train.observed_labels)), resampled


def build_data(cfg: "Config", resize_size: int, crop_size: int, rank: int, world_size: int,
               device: torch.device) -> DataBundle:
    train, test = read_manifests(cfg)
    train, resampled = apply_noise(train, cfg)
    before_debugging = None
    if cfg.noise.labels:  # data debugging: after the corruption, before anything that reads observed labels
        before_debugging = train.observed_labels
        train = apply_label_table(cfg.noise.labels, train)
    subsets = eval_subsets(is_corrupt(train), train.true_labels != UNKNOWN_LABEL, cfg.data.sample_size,
                           cfg.train.seed)
    factory = LOADERS.get(cfg.data.loader)
    workers = usable_workers(cfg.data.workers)
    shared: dict = {}  # what the loaders of this run share (DALI: pipelines, reader threads)

    def spec(manifest: Manifest, indices: np.ndarray, train_phase: bool) -> LoaderSpec:
        batch = cfg.data.batch_size if train_phase else (cfg.data.eval_batch_size or cfg.data.batch_size)
        return LoaderSpec(manifest=manifest, indices=indices, train=train_phase, batch_size=batch,
                          resize_size=resize_size, crop_size=crop_size,
                          random_augmentations=cfg.data.random_augmentations, workers=workers,
                          seed=cfg.train.seed, rank=rank, world_size=world_size, device=device,
                          dali_threads=cfg.data.dali_threads, prefetch=cfg.data.dali_prefetch,
                           augment=cfg.data.augment, readers=cfg.speed.dali_readers,
                           channels_last=cfg.speed.channels_last, shared=shared)

    if len(train) < world_size:
        raise DataError(f"{len(train)} training samples cannot be shared by {world_size} processes")
    folds = fold_assignment(cfg.noise, train.observed_labels, cfg.train.seed)
    removed = removed_mask(cfg.noise, train, folds)
    if removed.any():
        log.info("training without %d of %d samples (--exclude / --remove-ratio / --fold)", removed.sum(),
                 len(train))
    train_loader = factory(spec(train, np.flatnonzero(~removed).astype(np.int64), True))
    phase_sets = {**subsets, "test": np.arange(len(test), dtype=np.int64)}
    eval_loaders = {name: factory(spec(test if name == "test" else train, phase_sets[name], False))
                    for name in EVAL_PHASES if len(phase_sets[name])}
    # built on first use (most runs never need it), then kept
    extra = {TRAIN_ALL: functools.cache(lambda: factory(spec(train, np.arange(len(train), dtype=np.int64), False)))}
    if removed.any():
        extra[HELDOUT] = functools.cache(lambda: factory(spec(train, np.flatnonzero(removed).astype(np.int64),
                                                               False)))
    return DataBundle(train, test, resampled, subsets, train_loader, eval_loaders, extra, removed, folds,
                      before_debugging)
