"""Named augmentation presets (``--augment``), read by both loaders so they transform alike.

A preset says how a training image is cropped and flipped and which mean/std normalise
every phase. Evaluation always takes ``Resize(resize) + CenterCrop(crop)``; training adds:

- ``none``: nothing (seed 004's default: deterministic training inputs);
- ``random_resized_crop``: torchvision's ``RandomResizedCrop(crop)`` + horizontal flip
  (ImageNet training; what ``--random-augmentations`` selects);
- ``cifar``: pad 4 + random ``crop x crop`` crop + horizontal flip, with CIFAR's mean/std
  (the CIFAR recipe of the KD seeds: CRD, seed 000, seed 003).

``cifar`` shifts and flips are drawn by :func:`cg_train.data.crops.pad_crop_shifts`, a
function of (seed, epoch, index): the torchvision and DALI loaders apply identical ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import Registry
from .transforms import IMAGENET_MEAN, IMAGENET_STD

#: CIFAR's per-channel mean/std (over CIFAR-10's training set), as in CRD's and the seeds' loaders
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Augmentation:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    random_resized_crop: bool = False  # training windows from crops.random_resized_windows (with a flip)
    pad: int = 0  # pad-and-crop shifts of up to this many pixels after the resize (with a flip)

    @property
    def randomized(self) -> bool:
        return self.random_resized_crop or self.pad > 0


AUGMENTATIONS: Registry[Optional[Augmentation]] = Registry("augmentation", "--augment (data.augment)")
#: ``--augment auto`` (the default): ``random_resized_crop`` with ``--random-augmentations``, else ``none``
AUTO = "auto"
AUGMENTATIONS.register(AUTO, help="random_resized_crop with --random-augmentations, else none")(None)
AUGMENTATIONS.register("none", help="resize + center crop, ImageNet mean/std, no randomness (seed 004)")(
    Augmentation(IMAGENET_MEAN, IMAGENET_STD))
AUGMENTATIONS.register("random_resized_crop", help="RandomResizedCrop + flip, ImageNet mean/std "
                       "(= --random-augmentations)")(Augmentation(IMAGENET_MEAN, IMAGENET_STD, random_resized_crop=True))
AUGMENTATIONS.register("cifar", help="pad 4 + random crop + flip, CIFAR mean/std (the KD seeds' CIFAR recipe)")(
    Augmentation(CIFAR_MEAN, CIFAR_STD, pad=4))


def resolve(name: str, random_augmentations: bool) -> Augmentation:
    """The preset ``--augment name`` selects; ``--random-augmentations`` only combines with auto (or its own preset)."""
    if random_augmentations and name not in (AUTO, "random_resized_crop"):
        raise ConfigError(f"--random-augmentations selects --augment random_resized_crop, not {name}: drop one of them")
    preset = AUGMENTATIONS.get(name)
    return preset if preset is not None else resolve("random_resized_crop" if random_augmentations else "none", False)


def shift_and_flip(image: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """``out[:, r, c] = image[:, r + dy, c + dx]`` (zero outside), then mirrored if ``flip``: a CHW tensor."""
    pad = max(abs(dy), abs(dx))
    height, width = image.shape[-2:]
    out = F.pad(image, [pad] * 4)[:, pad + dy:pad + dy + height, pad + dx:pad + dx + width] if pad else image
    return out.flip(-1) if flip else out
