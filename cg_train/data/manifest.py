"""The data contract: a Manifest describes a split, a Batch is what every loader yields.

A Manifest is pure data (no open files): file paths *or* in-memory images, the
labels the model is trained on (``observed_labels``), the clean labels where
known (``true_labels``, -1 when unknown, e.g. Clothing1M noisy-only samples),
the class names and the split. A sample's position in the Manifest is its
stable **index**: loaders, recorders, CSVs and Parquet logs all refer to it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import torch
from PIL import Image

UNKNOWN_LABEL = -1


class Batch(NamedTuple):
    """``(images, observed_labels, true_labels, indices)``; ``indices`` are Manifest positions."""

    images: torch.Tensor
    observed_labels: torch.Tensor
    true_labels: torch.Tensor
    indices: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = True) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in self))


class MixedBatch(NamedTuple):
    """A :class:`Batch` after a mixing ``--da`` or ``--lw-mix`` on the device: a row is not one sample
    alone, and ``mix`` (a :class:`Mix`) says which other sample and how much of it
    (docs/kd_augmentation.md). Loaders never yield one, so ``images, observed, true, indices = batch``
    holds for everything a loader hands out."""

    images: torch.Tensor
    observed_labels: torch.Tensor
    true_labels: torch.Tensor
    indices: torch.Tensor
    mix: "Mix"


@dataclass
class Mix:
    """How the rows of a batch were made from two sources (all on the batch's device)."""

    weight: torch.Tensor  # [m] float: share of the row's own sample (``Batch.indices``); 1 for an unmixed row
    partner_index: torch.Tensor  # [m] manifest index of the second source; -1 for an unmixed row
    partner_label: torch.Tensor  # [m] observed label of the second source (own label when unmixed)
    images: Optional[torch.Tensor] = None  # --lw-mix: the augmented copy shown in addition to Batch.images
    source: Optional[torch.Tensor] = None  # --lw-mix: each augmented row's first source (batch position)
    partner: Optional[torch.Tensor] = None  # --lw-mix: each augmented row's second source (batch position)
    source_label: Optional[torch.Tensor] = None  # --lw-mix: observed label of each augmented row's first source

    @classmethod
    def of(cls, batch: Batch) -> "Mix":
        """The batch's mix; for a plain batch, every row unmixed (weight 1, no partner)."""
        mix = mix_of(batch)
        if mix is not None:
            return mix
        return cls(torch.ones(len(batch.indices), device=batch.indices.device),
                   torch.full_like(batch.indices, -1), batch.observed_labels)


def mix_of(batch: "Batch | MixedBatch") -> Optional[Mix]:
    """The batch's mixing record, or None for a batch of whole samples."""
    return getattr(batch, "mix", None)


@dataclass(frozen=True)
class Manifest:
    split: str
    classes: tuple[str, ...]
    true_labels: np.ndarray  # int64 [N], UNKNOWN_LABEL where the clean label is not known
    observed_labels: np.ndarray  # int64 [N], the labels training uses
    files: Optional[np.ndarray] = None  # object [N] of absolute paths, or None for in-memory data
    images: Optional[np.ndarray] = None  # uint8 [N, H, W, C] for in-memory datasets (CIFAR)
    root: Optional[str] = None

    def __post_init__(self) -> None:
        n = len(self.true_labels)
        if (self.files is None) == (self.images is None):
            raise ValueError("a Manifest holds either files or in-memory images")
        for name in ("observed_labels", "files", "images"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Manifest.{name} has {len(value)} entries, expected {n}")

    def __len__(self) -> int:
        return len(self.true_labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_labels(cls, split: str, classes: Sequence[str], labels: Sequence[int], *,
                    files: Optional[Sequence[str]] = None, images: Optional[np.ndarray] = None,
                    root: Optional[str] = None, observed: Optional[Sequence[int]] = None) -> "Manifest":
        true = np.asarray(labels, dtype=np.int64)
        obs = true.copy() if observed is None else np.asarray(observed, dtype=np.int64)
        return cls(split=split, classes=tuple(classes), true_labels=true, observed_labels=obs,
                   files=None if files is None else np.asarray(files, dtype=object), images=images,
                   root=root)

    def with_observed(self, observed: np.ndarray) -> "Manifest":
        return dataclasses.replace(self, observed_labels=np.asarray(observed, dtype=np.int64))

    def source(self, index: int) -> str:
        """A human-readable name of a sample: its path, or ``split[index]`` for in-memory data."""
        return str(self.files[index]) if self.files is not None else f"{self.split}[{index}]"

    def load_image(self, index: int) -> Image.Image:
        """Decode one sample as RGB (CMYK, grayscale and palette images are converted)."""
        if self.images is not None:
            return Image.fromarray(self.images[index]).convert("RGB")
        with Image.open(self.files[index]) as img:
            return img.convert("RGB")
