"""Model registry. An entry builds an ``nn.Module`` for ``num_classes`` and names its input size.

torchvision ImageNet models (random init; nothing is downloaded) for full-size
images, CIFAR-style ResNets for 28-32 px inputs, and a BatchNorm-free CNN whose
results do not depend on how a batch is split across processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[int], nn.Module]
    resize_size: int  # shorter side before the center crop
    crop_size: int  # what the network sees


MODELS: Registry[ModelSpec] = Registry("model", "--arch (model.arch)")


def build_model(arch: str, num_classes: int) -> nn.Module:
    return MODELS.get(arch).build(num_classes)


from . import cifar_resnet, simple_cnn, torchvision_models  # noqa: E402,F401  (register)
