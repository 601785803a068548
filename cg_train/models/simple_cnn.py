"""A small CNN without BatchNorm: fast on CPU, and its result does not depend on how a
global batch is split over processes (no per-process batch statistics)."""
from __future__ import annotations

from torch import Tensor, nn

from . import MODELS, ModelSpec


class SimpleCNN(nn.Module):
    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(inplace=True),
                                        nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


MODELS.register("simple_cnn", help="2-conv CNN without BatchNorm, 32 px (fast CPU tests and demos)")(
    ModelSpec(SimpleCNN, 32, 32))
