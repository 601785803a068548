"""``ab`` (RepDistiller's ``abound``): activation boundaries, Heo et al., AAAI 2019.

A first stage (``--init-epochs``, 30) transfers where the teacher's neurons are active: on the
pre-activations ``preact[1:-1]`` (the stage outputs before their ReLU), a connector ``c``
(RepDistiller's: identity where the shapes agree, else conv + BN onto the teacher's shape) and,
per sample, ``sum_l w_l * 3/1000 * sum_{c,h,w} [(c(s) + m)^2 1(c(s) > -m, t <= 0) +
(c(s) - m)^2 1(c(s) <= m, t > 0)]`` with margin ``m = 1`` and ``w_l = 2^(l - L + 1)`` (the
deepest pair weighs 1). The stage trains the connector and the student's layers the loss reaches.
The training after it is ``r*CE + a*KD`` (RepDistiller adds no AB term there).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..data.manifest import Batch
from . import METHODS, Extras
from .feature_kd import ConvReg, FeatureMethod, feature_map

MARGIN = 1.0
SCALE = 3 / 1000  # RepDistiller's loss / 1000 * 3


def boundary_loss(source: torch.Tensor, target: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """Per sample: the squared hinge that pushes ``source`` to the side of 0 (with a margin) ``target`` is on."""
    off = (source + margin) ** 2 * ((source > -margin) & (target <= 0)).float()
    on = (source - margin) ** 2 * ((source <= margin) & (target > 0)).float()
    return (off + on).flatten(1).sum(1)


class Connector(nn.Module):
    def __init__(self, student: list[torch.Size], teacher: list[torch.Size]):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Identity() if s[1] == t[1] and s[2] == t[2] else ConvReg(s, t, use_relu=False)
            for s, t in zip(student, teacher))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [layer(f) for layer, f in zip(self.layers, features)]


@METHODS.register("ab", help="activation boundaries: a first stage (--init-epochs, 30) of the boundary loss on "
                             "preact[1:-1] through a connector; then r*CE + a*KD")
class ActivationBoundaries(FeatureMethod):
    student_features = teacher_features = ("preact[1:-1]",)
    has_side_modules = True
    init_stage = True
    features_in_training = False
    defaults = {**FeatureMethod.defaults, "init_epochs": 30}

    def build(self, student: list[torch.Size], teacher: list[torch.Size]) -> dict[str, nn.Module]:
        pairs = list(zip(student, teacher))
        return {"connector": Connector([feature_map(s, "ab", "features") for s, _ in pairs],
                                       [feature_map(t, "ab", "features") for _, t in pairs])}

    def trained_modules(self, stage: Optional[str]) -> Sequence[str]:
        return ["connector"] if stage is not None else []

    def init_losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        connected = self.side["connector"](extras.student_features)
        n = len(connected)
        return sum(2.0 ** (i - n + 1) * SCALE * boundary_loss(s.float(), t)
                   for i, (s, t) in enumerate(zip(connected, extras.teacher_features)))


METHODS.register("abound", help="RepDistiller's name for ab")(ActivationBoundaries)
