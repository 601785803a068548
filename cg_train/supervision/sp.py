"""``sp`` (RepDistiller's ``similarity``): similarity-preserving KD, Tung & Mori, ICCV 2019.

A relational (batch) term on ``feat[-2]`` (the last stage's output): with ``G = F F^T`` over the
``b`` samples of a process's share (``F``: the flattened features), each row L2-normalised,
``||G_t - G_s||_F^2 / b^2``.
"""
from __future__ import annotations

import torch.nn.functional as F

from ..data.manifest import Batch
from . import METHODS, Extras, Losses
from .feature_kd import FeatureMethod, no_relation


@METHODS.register("sp", help="similarity-preserving: b * ||G_t - G_s||_F^2 / batch^2, G = row-normalized F F^T "
                             "of feat[-2] (a batch term; -b 3000)")
class SimilarityPreserving(FeatureMethod):
    student_features = teacher_features = ("feat[-2]",)
    defaults = {**FeatureMethod.defaults, "feature_weight": 3000.0}

    def feature_losses(self, batch: Batch, extras: Extras) -> Losses:
        f_s, f_t = extras.student_features[0].flatten(1), extras.teacher_features[0].flatten(1)
        b = len(f_s)
        if b < 2:
            return no_relation(f_s)
        g_s, g_t = F.normalize(f_s @ f_s.t()), F.normalize(f_t @ f_t.t())
        return Losses(f_s.new_zeros(b), (g_t - g_s).pow(2).sum() / b ** 2)


METHODS.register("similarity", help="RepDistiller's name for sp")(SimilarityPreserving)
