"""torchvision's ImageNet architectures as used by seed 004 (resnet18, vgg13_bn, inception_v3)."""
from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from . import MODELS, ModelSpec


def _register(name: str, build, resize: int, crop: int, help: str) -> None:
    MODELS.register(name, help=help)(ModelSpec(build, resize, crop))


for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    _register(_name, lambda k, _n=_name: getattr(tvm, _n)(weights=None, num_classes=k), 256, 224,
              f"torchvision {_name}, 224 px")
_register("vgg13_bn", lambda k: tvm.vgg13_bn(weights=None, num_classes=k), 256, 224,
          "torchvision vgg13_bn, 224 px")


def _inception(num_classes: int) -> nn.Module:
    # Seed 004 turns the auxiliary classifier off so every model returns plain logits.
    return tvm.inception_v3(weights=None, num_classes=num_classes, aux_logits=False, init_weights=True)


_register("inception_v3", _inception, 299, 299, "torchvision inception_v3 without aux logits, 299 px")
