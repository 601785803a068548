"""Wide ResNets for 32 px inputs (Zagoruyko & Komodakis 2016), as in the CRD/RepDistiller code.

WRN-d-w: depth ``d = 6n + 4`` (n pre-activation basic blocks per stage), stage widths
16w/32w/64w after a 16-channel stem, 1x1 conv shortcuts where the width changes, no
dropout. ``wrn_40_2`` -> ``wrn_16_2`` is a standard CIFAR-100 teacher/student pair;
any ``wrn_D_W`` name builds on demand (``--arch wrn_28_10``).
"""
from __future__ import annotations

import math
import re

from torch import Tensor, nn

from ..errors import ConfigError
from . import MODELS, ModelSpec


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice; where the shape changes, the shortcut takes the pre-activated input."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None if in_planes == planes else nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    def __init__(self, depth: int, width: int, num_classes: int):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n+4 >= 10, got {depth}")
        n = (depth - 4) // 6
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        blocks, in_planes = [], channels[0]
        for stage, planes in enumerate(channels[1:]):
            for block in range(n):
                blocks.append(PreActBlock(in_planes, planes, 2 if stage > 0 and block == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # RepDistiller's init: N(0, 2 / (k*k*out_channels))
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.blocks(self.stem(x))))


def _family(match: re.Match[str]) -> ModelSpec:
    depth, width = int(match.group(1)), int(match.group(2))
    if (depth - 4) % 6 or depth < 10 or width < 1:
        raise ConfigError(f"--arch {match.group(0)}: WideResNet needs depth 6n+4 >= 10 (16, 28, 40, ...) and "
                          f"width >= 1")
    return ModelSpec(lambda k: WideResNet(depth, width, k), 32, 32)


for _depth, _width in ((16, 1), (16, 2), (40, 1), (40, 2), (28, 10)):
    MODELS.register(f"wrn_{_depth}_{_width}", help=f"WideResNet-{_depth}-{_width} (CIFAR), 32 px")(
        ModelSpec(lambda k, _d=_depth, _w=_width: WideResNet(_d, _w, k), 32, 32))
MODELS.register_family("wrn_D_W", r"wrn_(\d+)_(\d+)", _family,
                       "WideResNet-D-W (CIFAR) for any depth D = 6n+4 and width W, e.g. wrn_28_10, 32 px")
