"""``rkd``: relational knowledge distillation, Park et al., CVPR 2019 (distance and angle, w_d 25, w_a 50).

A batch term on both models' penultimate features ``e`` over a process's share: distance-wise,
the pairwise Euclidean distances divided by their mean over distinct pairs, compared with the
Huber (smooth L1, beta 1) loss averaged over all ``b^2`` entries; angle-wise, the cosines
``<(e_i - e_j)/|.|, (e_k - e_j)/|.|>`` over all ``b^3`` triplets, compared the same way.
The teacher's side carries no gradient (it is the target).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.manifest import Batch
from . import METHODS, Extras, Losses
from .feature_kd import FeatureMethod, no_relation

DISTANCE_WEIGHT, ANGLE_WEIGHT = 25.0, 50.0


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """RepDistiller's pdist: ``sqrt(max(|e_i|^2 + |e_j|^2 - 2 e_i.e_j, eps))``, 0 on the diagonal."""
    square = e.pow(2).sum(1)
    d = (square.unsqueeze(1) + square.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def normalized_distances(e: torch.Tensor) -> torch.Tensor:
    d = pairwise_distances(e)
    return d / d[d > 0].mean()


def angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


@METHODS.register("rkd", help="relational KD: b * (25 * distance + 50 * angle Huber losses) on the embeddings "
                              "(a batch term; -b 1)")
class RelationalKD(FeatureMethod):
    student_features = teacher_features = ("embedding",)
    defaults = {**FeatureMethod.defaults, "feature_weight": 1.0}

    def feature_losses(self, batch: Batch, extras: Extras) -> Losses:
        s, t = extras.student_features[0].flatten(1), extras.teacher_features[0].flatten(1)
        if len(s) < 2:
            return no_relation(s)
        distance = F.smooth_l1_loss(normalized_distances(s), normalized_distances(t))
        angle = F.smooth_l1_loss(angles(s), angles(t))
        return Losses(s.new_zeros(len(s)), DISTANCE_WEIGHT * distance + ANGLE_WEIGHT * angle)
