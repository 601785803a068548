"""Loader backends. Each yields :class:`~cg_train.data.manifest.Batch` for one phase.

A loader is built from a :class:`LoaderSpec` by a factory registered in
``LOADERS``. Contract (what the engine relies on):

- ``set_epoch(epoch, start_step=0)`` before iterating; training loaders order
  samples by :mod:`cg_train.data.sharding` so any backend, any number of
  processes and a resumed run see the same samples per step;
- ``len(loader)`` is the number of batches this process yields this epoch;
- ``skipped`` lists the samples that could not be decoded since ``set_epoch``
  (they are left out of the batch; indices of the others never shift).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Optional, Protocol

import numpy as np
import torch

from ...registry import Registry
from .. import sharding
from ..augment import Augmentation, resolve
from ..manifest import Batch, Manifest


class SkippedSample(NamedTuple):
    index: int
    source: str
    error: str


@dataclass
class LoaderSpec:
    manifest: Manifest
    indices: np.ndarray  # Manifest positions this loader covers
    train: bool  # True: per-epoch shuffle, global batches split over processes
    batch_size: int  # summed over processes
    resize_size: int
    crop_size: int
    random_augmentations: bool
    workers: int
    seed: int
    rank: int
    world_size: int
    device: torch.device
    dali_threads: Optional[int] = None  # DALI CPU threads (default: workers, at least 1)
    prefetch: int = 2  # batches a DALI pipeline prepares ahead
    readers: int = 32  # threads reading files ahead of the step (DALI; 0: read on the training thread)
    channels_last: bool = False  # hand images out in NHWC memory order (the model is channels_last too)
    #: one dict for all loaders of a run: backends keep what their loaders can share there (DALI: one
    #: pipeline per graph shape and one reader pool, instead of one each per phase)
    shared: dict = field(default_factory=dict)
    augment: str = "auto"  # augmentation preset (cg_train.data.augment); auto follows random_augmentations

    @property
    def augmentation(self) -> "Augmentation":
        """The preset, resolved; its training randomness applies to training loaders only."""
        return resolve(self.augment, self.random_augmentations)


class Loader(Protocol):
    skipped: list[SkippedSample]

    def set_epoch(self, epoch: int, start_step: int = 0) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Batch]: ...


LOADERS: Registry[Callable[[LoaderSpec], Loader]] = Registry("loader", "--loader (data.loader)")


def per_process_eval_batch(spec: LoaderSpec) -> int:
    return max(1, -(-spec.batch_size // spec.world_size))


def epoch_plan(spec: LoaderSpec, epoch: int) -> list[np.ndarray]:
    """This process's index array for every step of ``epoch``: what any backend must yield, in order."""
    if spec.train:
        order = spec.indices[sharding.epoch_order(len(spec.indices), spec.seed, epoch)]
        return sharding.train_plan(order, spec.batch_size, spec.world_size, spec.rank)
    mine = sharding.eval_shard(spec.indices, spec.world_size, spec.rank)
    size = per_process_eval_batch(spec)
    return [mine[i:i + size] for i in range(0, len(mine), size)]


from . import dali, synthetic, torchvision  # noqa: E402,F401  (register)
