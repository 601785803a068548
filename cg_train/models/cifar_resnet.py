"""CIFAR-style ResNets: a 3x3 stride-1 stem, no max-pool, stages that halve the size after the first.

- ``cifar_resnetN`` (He et al. 2016, sec. 4.2): depth 6n+2, basic blocks, 3 stages of
  16/32/64 channels. ``cifar_resnet32`` is seed 002's detector-training network;
  ``cifar_resnet8x4`` / ``cifar_resnet32x4`` are the 4x-wide student/teacher pair of the
  CIFAR-100 KD benchmarks (stem 32, stages 64/128/256 channels).
- ``cifar_resnet50``: CRD's ``ResNet50`` (RepDistiller ``models/resnetv2.py``), the
  teacher of seed 001's ResNet50 -> vgg8 pair: bottleneck blocks (expansion 4) [3, 4, 6, 3]
  in stages of 64/128/256/512 planes, a 64-channel stem, a 2048 -> classes linear layer.
  Not torchvision's ``resnet50`` (7x7 stride-2 stem and max-pool, for 224 px).

Projection shortcuts (1x1 conv + BN) where the shape changes, as in the CRD/RepDistiller
code that seeds 001/003 use (so parameter counts match the KD literature).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from . import MODELS, ModelSpec


def shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity, or a 1x1 conv + BN projection where the block changes the shape."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as CRD's and torchvision's v1.5), 1x1 expand x4."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], stem: int, stages: Sequence[tuple[int, int]],
                 num_classes: int):
        """``stages``: (planes, blocks) per stage; the first runs at full size, each later one halves it."""
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU(inplace=True))
        layers, in_planes = [], stem
        for stage, (planes, blocks) in enumerate(stages):
            for index in range(blocks):
                layers.append(block(in_planes, planes, 2 if stage > 0 and index == 0 else 1))
                in_planes = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def cifar_resnet(depth: int, num_classes: int, widths: tuple[int, int, int, int] = (16, 16, 32, 64)) -> CifarResNet:
    """ResNet-(6n+2) of basic blocks; ``widths``: stem channels, then the channels of the three stages."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return CifarResNet(BasicBlock, widths[0], [(planes, n) for planes in widths[1:]], num_classes)


for _depth in (8, 20, 32, 44, 56, 110):
    MODELS.register(f"cifar_resnet{_depth}", help=f"CIFAR-style ResNet-{_depth}, 32 px")(
        ModelSpec(lambda k, _d=_depth: cifar_resnet(_d, k), 32, 32))
for _depth in (8, 32):
    MODELS.register(f"cifar_resnet{_depth}x4", help=f"CIFAR-style ResNet-{_depth}x4 (4x wider, CRD's KD pair), 32 px")(
        ModelSpec(lambda k, _d=_depth: cifar_resnet(_d, k, (32, 64, 128, 256)), 32, 32))
MODELS.register("cifar_resnet50", help="CRD's CIFAR ResNet50 (bottlenecks [3,4,6,3], 3x3 stem, no max-pool), 32 px")(
    ModelSpec(lambda k: CifarResNet(Bottleneck, 64, [(64, 3), (128, 4), (256, 6), (512, 3)], k), 32, 32))
