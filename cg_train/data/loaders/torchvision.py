"""The reference loader: PIL decode + torchvision transforms in DataLoader workers."""
from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ...engine.preemption import held_while_forking, ignore_in_helper
from ..manifest import Batch, Manifest
from ..sharding import AUGMENT_STREAM
from ..transforms import eval_transform, train_transform
from . import LOADERS, LoaderSpec, SkippedSample, epoch_plan

#: What a broken image file raises inside PIL (truncated, not an image, bad header, too large).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Augmentation seed of one sample in one epoch: independent of workers, ranks and resume point."""
    return int(np.random.SeedSequence([seed, AUGMENT_STREAM, epoch, index]).generate_state(1)[0])


class IndexedImages(Dataset):
    """Maps ``(index, epoch)`` to ``(index, tensor or None, error or None)``; never raises on a bad file."""

    def __init__(self, manifest: Manifest, transform: Any, seed: int, randomized: bool):
        self.manifest, self.transform, self.seed, self.randomized = manifest, transform, seed, randomized

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Optional[torch.Tensor], Optional[str]]:
        index, epoch = key
        try:
            image = self.manifest.load_image(index)
            if not self.randomized:
                return index, self.transform(image), None
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, index))
                return index, self.transform(image), None
        except DECODE_ERRORS as exc:
            return index, None, f"{type(exc).__name__}: {exc}"


class CollateBatch:
    """Stacks the decodable samples into a Batch; reports the others as skipped."""

    def __init__(self, manifest: Manifest, crop_size: int):
        self.observed = torch.from_numpy(manifest.observed_labels)
        self.true = torch.from_numpy(manifest.true_labels)
        self.manifest, self.crop_size = manifest, crop_size

    def __call__(self, items: list[tuple[int, Optional[torch.Tensor], Optional[str]]]):
        good = [(i, x) for i, x, _ in items if x is not None]
        skipped = [SkippedSample(i, self.manifest.source(i), err) for i, x, err in items if x is None]
        indices = torch.tensor([i for i, _ in good], dtype=torch.int64)
        images = (torch.stack([x for _, x in good]) if good
                  else torch.empty(0, 3, self.crop_size, self.crop_size))
        return Batch(images, self.observed[indices], self.true[indices], indices), skipped


class PlanSampler:
    """A batch sampler replaying a precomputed per-step plan; mutable so persistent workers survive epochs."""

    def __init__(self) -> None:
        self.plan: list[np.ndarray] = []
        self.epoch = 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in self.plan:
            yield [(int(i), self.epoch) for i in step]

    def __len__(self) -> int:
        return len(self.plan)


class TorchvisionLoader:
    def __init__(self, spec: LoaderSpec):
        self.spec = spec
        randomized = spec.train and spec.random_augmentations
        transform = (train_transform(spec.resize_size, spec.crop_size, spec.random_augmentations)
                     if spec.train else eval_transform(spec.resize_size, spec.crop_size))
        self.sampler = PlanSampler()
        self.skipped: list[SkippedSample] = []
        self._loader = DataLoader(
            IndexedImages(spec.manifest, transform, spec.seed, randomized),
            batch_sampler=self.sampler, num_workers=spec.workers,
            collate_fn=CollateBatch(spec.manifest, spec.crop_size), worker_init_fn=ignore_in_helper,
            pin_memory=spec.device.type == "cuda",
            persistent_workers=spec.train and spec.workers > 0,
            prefetch_factor=4 if spec.workers > 0 else None)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.sampler.plan = epoch_plan(self.spec, epoch)[start_step:]
        self.sampler.epoch = epoch
        self.skipped = []

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        with held_while_forking():  # workers start here: none may die of a stop signal meant for the run
            batches = iter(self._loader)
        for batch, skipped in batches:
            self.skipped.extend(skipped)
            yield batch


@LOADERS.register("torchvision", help="PIL decode + torchvision transforms in DataLoader workers (reference)")
def build_torchvision_loader(spec: LoaderSpec) -> TorchvisionLoader:
    return TorchvisionLoader(spec)
