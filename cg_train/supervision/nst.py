"""``nst``: neuron selectivity transfer, Huang & Wang, 2017 (polynomial kernel, d = 2, c = 0).

For each compared pair (``feat[1:-1]``, the larger pooled to the smaller's size), every
channel's map is flattened over h, w and L2-normalised; with ``k(x, y) = (x . y)^2``, per sample
the squared MMD ``mean k(t, t') + mean k(s, s') - 2 mean k(s, t)`` over all channel pairs,
summed over the layers (RepDistiller's full loss; the teacher-teacher part has no gradient).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.manifest import Batch
from . import METHODS, Extras
from .feature_kd import FeatureMethod, over_pairs


def poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[batch, channels_b, channels_a]`` of ``(a_i . b_j)^2``."""
    return torch.bmm(b, a.transpose(1, 2)).pow(2)


@METHODS.register("nst", help="neuron selectivity transfer: b * sum_layers MMD^2 (polynomial kernel) between the "
                              "channels' normalized maps, feat[1:-1] (-b 50)")
class NeuronSelectivity(FeatureMethod):
    student_features = teacher_features = ("feat[1:-1]",)
    defaults = {**FeatureMethod.defaults, "feature_weight": 50.0}

    def feature_losses(self, batch: Batch, extras: Extras) -> torch.Tensor:
        return over_pairs(extras, mmd2)


def mmd2(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Per sample, the squared MMD between the channels' L2-normalised maps (maps of one size)."""
    s, t = F.normalize(f_s.flatten(2), dim=2), F.normalize(f_t.flatten(2), dim=2)
    mean = lambda k: k.flatten(1).mean(1)  # noqa: E731
    return mean(poly_kernel(t, t)) + mean(poly_kernel(s, s)) - 2 * mean(poly_kernel(s, t))
