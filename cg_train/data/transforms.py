"""Image transforms, torchvision flavour. The DALI loader reproduces the eval ones."""
from __future__ import annotations

from typing import Sequence

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(resize_size: int, crop_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    return T.Compose([T.Resize(resize_size), T.CenterCrop(crop_size), T.ToTensor(), T.Normalize(mean, std)])


def train_transform(resize_size: int, crop_size: int, random_augmentations: bool,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    """Seed 004: deterministic resize + center crop unless ``--random-augmentations``."""
    if not random_augmentations:
        return eval_transform(resize_size, crop_size, mean, std)
    return T.Compose([T.RandomResizedCrop(crop_size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean, std)])
