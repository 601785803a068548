"""torchvision's ImageNet architectures: seed 004's (resnet18, vgg13_bn, inception_v3) and seed 003's ResNet-152.

``--pretrained`` loads torchvision's ImageNet weights from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, the file torchvision itself would download) and
never downloads; with another number of classes the classifier keeps its fresh
initialisation (timm's ``reset_classifier``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm

from ..errors import ConfigError
from . import MODELS, ModelSpec

log = logging.getLogger("cg_train")


def weights_file(name: str) -> Path:
    """Where torchvision caches ``name``'s default ImageNet weights."""
    url = tvm.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def load_imagenet_weights(model: nn.Module, name: str) -> None:
    """Copy the cached ImageNet weights into ``model``; layers whose shape differs (the classifier) stay fresh."""
    path = weights_file(name)
    if not path.is_file():
        raise ConfigError(f"--pretrained: {name}'s ImageNet weights are not in the torch hub cache: put {path.name} "
                          f"in {path.parent} (or set TORCH_HOME); cg-train never downloads")
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    reshaped = sorted(k for k in state if k in own and k not in fitting)
    missing = sorted(set(own) - set(fitting) - set(reshaped))
    if missing:
        raise ConfigError(f"--pretrained: {path} lacks {len(missing)} of {name}'s tensors (e.g. {missing[0]}): "
                          f"the file is not torchvision's {name} weights")
    model.load_state_dict(fitting, strict=False)
    log.info("--pretrained: %s ImageNet weights from %s%s", name, path,
             f"; fresh {', '.join(reshaped)} for the new number of classes" if reshaped else "")


def _register(name: str, build, resize: int, crop: int, help: str) -> None:
    MODELS.register(name, help=help)(
        ModelSpec(build, resize, crop, load_pretrained=lambda model: load_imagenet_weights(model, name)))


for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    _register(_name, lambda k, _n=_name: getattr(tvm, _n)(weights=None, num_classes=k), 256, 224,
              f"torchvision {_name}, 224 px")
_register("vgg13_bn", lambda k: tvm.vgg13_bn(weights=None, num_classes=k), 256, 224,
          "torchvision vgg13_bn, 224 px")


def _inception(num_classes: int) -> nn.Module:
    # Seed 004 turns the auxiliary classifier off so every model returns plain logits.
    return tvm.inception_v3(weights=None, num_classes=num_classes, aux_logits=False, init_weights=True)


_register("inception_v3", _inception, 299, 299, "torchvision inception_v3 without aux logits, 299 px")
