"""The reference loader: PIL decode + torchvision transforms in DataLoader workers."""
from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from torchvision import transforms as T

from ..augment import shift_and_flip
from ..crops import pad_crop_shifts
from ...engine.preemption import held_while_forking, ignore_in_helper
from ..manifest import Batch, Manifest
from ..sharding import AUGMENT_STREAM
from ..transforms import train_transform
from . import LOADERS, LoaderSpec, SkippedSample, epoch_plan

#: What a broken image file raises inside PIL (truncated, not an image, bad header, too large).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Augmentation seed of one sample in one epoch: independent of workers, ranks and resume point."""
    return int(np.random.SeedSequence([seed, AUGMENT_STREAM, epoch, index]).generate_state(1)[0])


class PadCropFlip:
    """``--augment cifar`` on an unnormalised CHW tensor: the (seed, epoch, index) shifts DALI applies too."""

    def __init__(self, pad: int, seed: int, normalize: Any):
        self.pad, self.seed, self.normalize = pad, seed, normalize

    def __call__(self, image: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        shifts, flips = pad_crop_shifts(self.seed, epoch, np.array([index]), self.pad)
        return self.normalize(shift_and_flip(image, int(shifts[0, 0]), int(shifts[0, 1]), bool(flips[0])))


class IndexedImages(Dataset):
    """Maps ``(index, epoch)`` to ``(index, tensor or None, error or None)``; never raises on a bad file."""

    def __init__(self, manifest: Manifest, transform: Any, seed: int, randomized: bool,
                 per_sample: Optional[PadCropFlip] = None):
        self.manifest, self.transform, self.seed, self.randomized = manifest, transform, seed, randomized
        self.per_sample = per_sample  # a transform of (tensor, epoch, index) applied after ``transform``

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Optional[torch.Tensor], Optional[str]]:
        index, epoch = key
        try:
            image = self.manifest.load_image(index)
            if self.per_sample is not None:
                return index, self.per_sample(self.transform(image), epoch, index), None
            if not self.randomized:
                return index, self.transform(image), None
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, index))
                return index, self.transform(image), None
        except DECODE_ERRORS as exc:
            return index, None, f"{type(exc).__name__}: {exc}"


class CollateBatch:
    """Stacks the decodable samples into a Batch; reports the others as skipped."""

    def __init__(self, manifest: Manifest, crop_size: int, channels_last: bool = False):
        self.observed = torch.from_numpy(manifest.observed_labels)
        self.true = torch.from_numpy(manifest.true_labels)
        self.manifest, self.crop_size = manifest, crop_size
        # reordered here, in the worker, so the training thread copies NHWC straight to the device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, items: list[tuple[int, Optional[torch.Tensor], Optional[str]]]):
        good = [(i, x) for i, x, _ in items if x is not None]
        skipped = [SkippedSample(i, self.manifest.source(i), err) for i, x, err in items if x is None]
        indices = torch.tensor([i for i, _ in good], dtype=torch.int64)
        images = (torch.stack([x for _, x in good]) if good
                  else torch.empty(0, 3, self.crop_size, self.crop_size)).contiguous(memory_format=self.memory_format)
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
        preset = spec.augmentation
        randomized = spec.train and preset.random_resized_crop
        transform = train_transform(spec.resize_size, spec.crop_size, randomized, preset.mean, preset.std)
        per_sample = None
        if spec.train and preset.pad:  # shifts after the resize, so normalise last
            per_sample = PadCropFlip(preset.pad, spec.seed, transform.transforms[-1])
            transform = T.Compose(transform.transforms[:-1])
        self.sampler = PlanSampler()
        self.skipped: list[SkippedSample] = []
        self._loader = DataLoader(
            IndexedImages(spec.manifest, transform, spec.seed, randomized, per_sample),
            batch_sampler=self.sampler, num_workers=spec.workers,
            collate_fn=CollateBatch(spec.manifest, spec.crop_size, spec.channels_last), worker_init_fn=ignore_in_helper,
            # page-locked batches: the trainer's non_blocking copy then overlaps the previous step
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
