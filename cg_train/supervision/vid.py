"""``vid``: variational information distillation, Ahn et al., CVPR 2019.

For each compared pair (``feat[1:-1]``), a regressor of three 1x1 convs (ReLU between, student
channels -> teacher channels -> teacher -> teacher) predicts the mean ``mu`` of a Gaussian over
the teacher's map, with one learned variance per teacher channel, ``var = softplus(alpha) + eps``
(``alpha`` initialised so that ``var`` starts at 5, as the authors' code). Per sample, the
negative log-likelihood up to its constant, ``mean_{c,h,w} 0.5 ((mu - f_t)^2 / var + log var)``,
summed over the pairs; the larger map is average-pooled to the smaller one's size first.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.manifest import Batch
from . import METHODS, Extras
from .feature_kd import FeatureMethod, feature_map, per_sample_mean, pool_to_smaller

INIT_VARIANCE, EPS = 5.0, 1e-5


class VariationalHead(nn.Module):
    def __init__(self, s_channels: int, t_channels: int):
        super().__init__()
        mid = t_channels
        self.regressor = nn.Sequential(nn.Conv2d(s_channels, mid, 1, bias=False), nn.ReLU(),
                                       nn.Conv2d(mid, mid, 1, bias=False), nn.ReLU(),
                                       nn.Conv2d(mid, t_channels, 1, bias=False))
        self.log_scale = nn.Parameter(torch.full((t_channels,), math.log(math.exp(INIT_VARIANCE - EPS) - 1.0)))

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        f_s, f_t = pool_to_smaller(f_s, f_t)
        mean = self.regressor(f_s).float()
        var = (F.softplus(self.log_scale.float()) + EPS).view(1, -1, 1, 1)
        return per_sample_mean(0.5 * ((mean - f_t) ** 2 / var + torch.log(var)))


class VariationalHeads(nn.Module):
    """One head per compared pair, in one module so one DDP call trains them all."""

    def __init__(self, pairs: list[tuple[int, int]]):
        super().__init__()
        self.heads = nn.ModuleList(VariationalHead(s, t) for s, t in pairs)

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        return sum(head(f_s, f_t) for head, f_s, f_t in zip(self.heads, student, teacher))


@METHODS.register("vid", help="variational information distillation: b * sum_layers Gaussian NLL of the teacher's "
                              "map given the student's, learned mean and per-channel variance (feat[1:-1]; -b 1)")
class VariationalInformation(FeatureMethod):
    student_features = teacher_features = ("feat[1:-1]",)
    has_side_modules = True
    defaults = {**FeatureMethod.defaults, "feature_weight": 1.0}

    def build(self, student: list[torch.Size], teacher: list[torch.Size]) -> dict[str, nn.Module]:
        pairs = [(feature_map(s, "vid", "features")[1], feature_map(t, "vid", "features")[1])
                 for s, t in zip(student, teacher)]
        return {"heads": VariationalHeads(pairs)}

    def feature_losses(self, batch: Batch, extras: Extras) -> torch.Tensor:
        return self.side["heads"](extras.student_features, extras.teacher_features)
