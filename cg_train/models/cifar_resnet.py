"""CIFAR-style ResNets (He et al. 2016, sec. 4.2): 3 stages of 16/32/64 channels for 28-32 px inputs.

Depth 6n+2 with basic blocks; projection shortcuts (1x1 conv + BN) where the
shape changes, as in the CRD/RepDistiller code that seeds 001/003 use (so
parameter counts match the KD literature). ``cifar_resnet32`` is seed 002's
detector-training network; ``cifar_resnet8x4`` / ``cifar_resnet32x4`` are the
4x-wide student/teacher pair of the CIFAR-100 KD benchmarks (stem 32, stages
64/128/256 channels).
"""
from __future__ import annotations

from torch import Tensor, nn

from . import MODELS, ModelSpec


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, widths: tuple[int, int, int, int] = (16, 16, 32, 64)):
        """``widths``: stem channels, then the channels of the three stages."""
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        stem = widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU(inplace=True))
        layers, in_planes = [], stem
        for stage, planes in enumerate(widths[1:]):
            for block in range(n):
                layers.append(BasicBlock(in_planes, planes, 2 if stage > 0 and block == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


for _depth in (8, 20, 32, 44, 56, 110):
    MODELS.register(f"cifar_resnet{_depth}", help=f"CIFAR-style ResNet-{_depth}, 32 px")(
        ModelSpec(lambda k, _d=_depth: CifarResNet(_d, k), 32, 32))
for _depth in (8, 32):
    MODELS.register(f"cifar_resnet{_depth}x4", help=f"CIFAR-style ResNet-{_depth}x4 (4x wider, CRD's KD pair), 32 px")(
        ModelSpec(lambda k, _d=_depth: CifarResNet(_d, k, (32, 64, 128, 256)), 32, 32))
