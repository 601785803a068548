"""VGG with BatchNorm for 32 px inputs, as in the CRD/RepDistiller code (``vgg13`` -> ``vgg8`` pair).

Five blocks of 3x3 conv + BN + ReLU (64/128/256/512/512 channels), 2x2 max-pooling
after the first three, global average pooling and one linear layer (the ImageNet
VGG's 4096-wide classifier is gone). At 32 px the fourth pooling is skipped, as in
that code, so blocks 4 and 5 both run at 4x4.
"""
from __future__ import annotations

from torch import nn

from . import MODELS, ModelSpec
from .cifar_mobile import FeaturesThenLinear, init_like_crd

#: convolutions per block (CRD's configs 'S', 'A', 'B', 'D', 'E' for VGG-8/11/13/16/19)
BLOCKS = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


class CifarVGG(FeaturesThenLinear):
    def __init__(self, depth: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for block, widths in enumerate(BLOCKS[depth]):
            for width in widths:
                layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                in_channels = width
            if block < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(in_channels, num_classes)
        init_like_crd(self)


for _depth in BLOCKS:
    MODELS.register(f"cifar_vgg{_depth}", help=f"VGG-{_depth} with BatchNorm, CIFAR variant (CRD), 32 px")(
        ModelSpec(lambda k, _d=_depth: CifarVGG(_d, k), 32, 32))
