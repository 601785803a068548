"""``at`` (RepDistiller's ``attention``): attention transfer, Zagoruyko & Komodakis, ICLR 2017.

For each compared pair of feature maps (``feat[1:-1]``: the stage outputs), the attention map
``a(f) = normalize(mean_c f_c^2)`` (p = 2, flattened over h, w, unit L2 norm), and per sample
``sum_layers mean_{h,w} (a(f_s) - a(f_t))^2``; the larger map is average-pooled to the smaller
one's size first. Pairs are zipped: the shorter list decides how many (RepDistiller's rule).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.manifest import Batch
from . import METHODS, Extras
from .feature_kd import FeatureMethod, over_pairs

P = 2


def attention(f: torch.Tensor) -> torch.Tensor:
    return F.normalize(f.pow(P).mean(1).flatten(1))


@METHODS.register("at", help="attention transfer: b * sum_layers mean (a(f_s) - a(f_t))^2, a = normalized "
                             "channel mean of f^2, on feat[1:-1] (-b 1000)")
class AttentionTransfer(FeatureMethod):
    student_features = teacher_features = ("feat[1:-1]",)
    defaults = {**FeatureMethod.defaults, "feature_weight": 1000.0}

    def feature_losses(self, batch: Batch, extras: Extras) -> torch.Tensor:
        return over_pairs(extras, lambda f_s, f_t: (attention(f_s) - attention(f_t)).pow(2).mean(1))


METHODS.register("attention", help="RepDistiller's name for at")(AttentionTransfer)
