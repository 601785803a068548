"""``pkt``: probabilistic knowledge transfer, Passalis & Tefas, ECCV 2018.

A batch term on both models' penultimate features over a process's share: cosine similarities
``c_ij`` (features L2-normalised, eps 1e-7), mapped to ``(c_ij + 1) / 2`` and normalised per row
into conditional probabilities ``p_j|i``; then ``mean_ij p^t_j|i log((p^t_j|i + eps) / (p^s_j|i + eps))``
(a KL divergence averaged over the ``b^2`` entries, as the authors' code).
"""
from __future__ import annotations

import torch

from ..data.manifest import Batch
from . import METHODS, Extras, Losses
from .feature_kd import FeatureMethod, no_relation

EPS = 1e-7


def conditional_probabilities(f: torch.Tensor) -> torch.Tensor:
    f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + EPS)
    f = torch.nan_to_num(f, nan=0.0)
    similarity = (f @ f.t() + 1.0) / 2.0
    return similarity / similarity.sum(1, keepdim=True)


@METHODS.register("pkt", help="probabilistic knowledge transfer: b * KL of the cosine-similarity distributions "
                              "of the embeddings (a batch term; -b 30000)")
class ProbabilisticKT(FeatureMethod):
    student_features = teacher_features = ("embedding",)
    defaults = {**FeatureMethod.defaults, "feature_weight": 30000.0}

    def feature_losses(self, batch: Batch, extras: Extras) -> Losses:
        s, t = extras.student_features[0].flatten(1), extras.teacher_features[0].flatten(1)
        if len(s) < 2:
            return no_relation(s)
        p_s, p_t = conditional_probabilities(s), conditional_probabilities(t)
        return Losses(s.new_zeros(len(s)), (p_t * torch.log((p_t + EPS) / (p_s + EPS))).mean())
