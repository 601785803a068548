"""``fsp``: flow of solution procedure, Yim et al., CVPR 2017.

A first stage (``--init-epochs``, 30) matches the FSP matrices of consecutive feature maps
(``feat[:-1]``: the stem and every stage's output; the two models must have the same channels at
each): for maps ``a`` [C1, h, w] and ``b`` [C2, h, w] (the larger pooled to the smaller's size),
``G = (1 / hw) sum_{h,w} b a^T`` [C2, C1]; per sample ``sum_pairs mean (G_s - G_t)^2``. It
trains the student's layers up to the last map. The training after it is ``r*CE + a*KD``
(RepDistiller adds no FSP term there).
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.manifest import Batch
from ..errors import ConfigError
from . import METHODS, Extras
from .feature_kd import FeatureMethod, feature_map, pool_to_smaller


def fsp_matrices(features: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for bottom, top in zip(features[:-1], features[1:]):
        bottom, top = pool_to_smaller(bottom, top)
        out.append(torch.einsum("bihw,bjhw->bji", bottom, top) / (bottom.shape[2] * bottom.shape[3]))
    return out


@METHODS.register("fsp", help="flow of solution procedure: a first stage (--init-epochs, 30) matching the Gram "
                              "matrices of consecutive feature maps feat[:-1]; then r*CE + a*KD")
class FlowOfSolution(FeatureMethod):
    student_features = teacher_features = ("feat[:-1]",)
    init_stage = True
    features_in_training = False
    defaults = {**FeatureMethod.defaults, "init_epochs": 30}

    def build(self, student: list[torch.Size], teacher: list[torch.Size]) -> dict[str, nn.Module]:
        s_c = [feature_map(s, "fsp", "features")[1] for s in student]
        t_c = [feature_map(t, "fsp", "features")[1] for t in teacher]
        if s_c != t_c:
            raise ConfigError(f"--method fsp needs the same channels in student and teacher at each compared map "
                              f"(student {s_c}, teacher {t_c}): choose a pair of one family and width, e.g. "
                              f"cifar_resnet56 -> cifar_resnet20")
        return {}

    def init_losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        pairs = zip(fsp_matrices(extras.student_features), fsp_matrices(extras.teacher_features))
        return sum((g_s - g_t).pow(2).flatten(1).mean(1) for g_s, g_t in pairs)
