"""Mobile networks at 32 px as in the CRD/RepDistiller code: the students of its cross-architecture pairs.

- ``cifar_mobilenetv2``: MobileNetV2 (Sandler et al. 2018) with expansion 6 and width
  0.5 (CRD's ``mobile_half``), a stride-2 stem and the ImageNet stage table, so a 32 px
  input ends at 2x2; 1280-channel 1x1 conv head.
- ``cifar_shufflenetv1``: ShuffleNet (Zhang et al. 2018), 3 groups, stages of 240/480/960
  channels with 4/8/4 units, a 1x1 stem without downsampling.
- ``cifar_shufflenetv2``: ShuffleNet V2 1.0x (Ma et al. 2018), stages of 116/232/464
  channels with a down-sampling unit and 3/7/3 basic units, 1024-channel head, 1x1 stem.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import MODELS, ModelSpec


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(out_ch)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class FeaturesThenLinear(nn.Module):
    """``classifier(features(x))``: the shape every network here ends in."""

    features: nn.Module
    classifier: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def init_like_crd(model: nn.Module) -> None:
    """CRD's initialisation: convolutions N(0, 2 / (k*k*out_channels)), linear layers N(0, 0.01), zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- MobileNetV2

class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        self.residual = stride == 1 and in_ch == out_ch
        self.conv = nn.Sequential(conv_bn(in_ch, hidden, 1), conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                  conv_bn(hidden, out_ch, 1, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class CifarMobileNetV2(FeaturesThenLinear):
    #: (expansion, channels, units, first stride); expansion None means the ``expand`` argument
    STAGES = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
              (None, 160, 3, 2), (None, 320, 1, 1))

    def __init__(self, num_classes: int, expand: int = 6, width: float = 0.5):
        super().__init__()
        in_ch = int(32 * width)
        layers: list[nn.Module] = [conv_bn(3, in_ch, 3, 2)]
        for t, c, n, s in self.STAGES:
            out_ch = int(c * width)
            for unit in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if unit == 0 else 1, expand if t is None else t))
                in_ch = out_ch
        head = int(1280 * width) if width > 1.0 else 1280
        self.features = nn.Sequential(*layers, conv_bn(in_ch, head, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(head, num_classes)
        init_like_crd(self)


# --------------------------------------------------------------------------- ShuffleNet V1

class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1; stride 2 concatenates an avg-pooled shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int):
        super().__init__()
        mid = out_ch // 4
        self.first_groups = 1 if in_ch == 24 else groups  # the stem's 24 channels are not grouped
        self.stride = stride
        self.conv1 = conv_bn(in_ch, mid, 1, groups=self.first_groups)
        self.conv2 = conv_bn(mid, mid, 3, stride, groups=mid)
        self.conv3 = conv_bn(mid, out_ch, 1, groups=groups, relu=False)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(self.conv1(x), self.first_groups)
        out = self.conv3(self.conv2(out))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class CifarShuffleNetV1(FeaturesThenLinear):
    def __init__(self, num_classes: int, widths: tuple[int, ...] = (240, 480, 960), units: tuple[int, ...] = (4, 8, 4),
                 groups: int = 3):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 24, 1)]
        in_ch = 24
        for width, n in zip(widths, units):
            for unit in range(n):
                # the first unit of a stage concatenates its input, so it adds only width - in_ch channels
                layers.append(ShuffleV1Unit(in_ch, width - in_ch if unit == 0 else width, 2 if unit == 0 else 1, groups))
                in_ch = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(in_ch, num_classes)


# --------------------------------------------------------------------------- ShuffleNet V2

class ShuffleV2Unit(nn.Module):
    """Split the channels in half; one half passes, the other goes 1x1 -> dw 3x3 -> 1x1; concat, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(conv_bn(half, half, 1), conv_bn(half, half, 3, groups=half, relu=False),
                                    conv_bn(half, half, 1))

    def forward(self, x: Tensor) -> Tensor:
        keep, work = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([keep, self.branch(work)], 1), 2)


class ShuffleV2Down(nn.Module):
    """Both branches stride 2: dw 3x3 -> 1x1 on the left, 1x1 -> dw 3x3 -> 1x1 on the right; concat, shuffle."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        half = out_ch // 2
        self.left = nn.Sequential(conv_bn(in_ch, in_ch, 3, 2, groups=in_ch, relu=False), conv_bn(in_ch, half, 1))
        self.right = nn.Sequential(conv_bn(in_ch, half, 1), conv_bn(half, half, 3, 2, groups=half, relu=False),
                                   conv_bn(half, half, 1))

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class CifarShuffleNetV2(FeaturesThenLinear):
    def __init__(self, num_classes: int, widths: tuple[int, ...] = (116, 232, 464), units: tuple[int, ...] = (3, 7, 3),
                 head: int = 1024):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 24, 1)]
        in_ch = 24
        for width, n in zip(widths, units):
            layers += [ShuffleV2Down(in_ch, width), *(ShuffleV2Unit(width) for _ in range(n))]
            in_ch = width
        self.features = nn.Sequential(*layers, conv_bn(in_ch, head, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(head, num_classes)


MODELS.register("cifar_mobilenetv2", help="MobileNetV2 (expansion 6, width 0.5; CRD's student), 32 px")(
    ModelSpec(CifarMobileNetV2, 32, 32))
MODELS.register("cifar_shufflenetv1", help="ShuffleNet V1, 3 groups (CRD's student), 32 px")(
    ModelSpec(CifarShuffleNetV1, 32, 32))
MODELS.register("cifar_shufflenetv2", help="ShuffleNet V2 1.0x (CRD's student), 32 px")(
    ModelSpec(CifarShuffleNetV2, 32, 32))
