"""Model registry. An entry builds an ``nn.Module`` for ``num_classes`` and names its input size.

torchvision ImageNet models (random init, or ``--pretrained`` ImageNet weights from
the local torch hub cache; nothing is downloaded) for full-size images; CIFAR-style
networks for 28-32 px inputs (the teacher/student pairs of the KD seeds: ResNet,
ResNet-x4, WideResNet, VGG, MobileNetV2, ShuffleNet V1/V2); and a BatchNorm-free CNN
whose results do not depend on how a batch is split across processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn

from ..errors import ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[int], nn.Module]
    resize_size: int  # shorter side before the center crop
    crop_size: int  # what the network sees
    load_pretrained: Optional[Callable[[nn.Module], None]] = None  # fills a built model with published weights


MODELS: Registry[ModelSpec] = Registry("model", "--arch (model.arch)")


def build_model(arch: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    spec = MODELS.get(arch)
    model = spec.build(num_classes)
    if pretrained:
        if spec.load_pretrained is None:
            raise ConfigError(f"--pretrained: {arch} has no published weights; only torchvision's ImageNet models "
                              f"have them (see `cg-train list models`)")
        spec.load_pretrained(model)
    return model


from . import cifar_mobile, cifar_resnet, cifar_vgg, simple_cnn, torchvision_models, wide_resnet  # noqa: E402,F401,I001  (register)
