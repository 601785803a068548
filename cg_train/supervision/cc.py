"""``cc`` (RepDistiller's ``correlation``): correlation congruence, Peng et al., ICCV 2019.

RepDistiller's version (from the authors' code): linear embeddings ``e_s = W_s f_s``,
``e_t = W_t f_t`` of both models' penultimate features (``--feat-dim``, 128; both trained),
``d = |e_s - e_t|`` and, over consecutive samples of a process's share, the batch term
``mean_i sum_k d_ik d_(i+1)k``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.manifest import Batch
from . import METHODS, Extras, Losses
from .feature_kd import FeatureMethod, no_relation


class Embeddings(nn.Module):
    """The two linear embeddings, one module so one DDP call trains both."""

    def __init__(self, s_dim: int, t_dim: int, dim: int):
        super().__init__()
        self.student, self.teacher = nn.Linear(s_dim, dim), nn.Linear(t_dim, dim)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.student(f_s.flatten(1)), self.teacher(f_t.flatten(1))


@METHODS.register("cc", help="correlation congruence (RepDistiller's): b * mean_i sum_k d_ik d_(i+1)k, d = "
                             "|W_s f_s - W_t f_t| of the embeddings (a batch term; -b 0.02)")
class CorrelationCongruence(FeatureMethod):
    student_features = teacher_features = ("embedding",)
    has_side_modules = True
    defaults = {**FeatureMethod.defaults, "feature_weight": 0.02}

    def build(self, student: list[torch.Size], teacher: list[torch.Size]) -> dict[str, nn.Module]:
        return {"embed": Embeddings(student[0][1:].numel(), teacher[0][1:].numel(), self.cfg.feat_dim)}

    def feature_losses(self, batch: Batch, extras: Extras) -> Losses:
        e_s, e_t = self.side["embed"](extras.student_features[0], extras.teacher_features[0])
        e_s, e_t = e_s.float(), e_t.float()
        if len(e_s) < 2:
            return no_relation(e_s, e_t)
        delta = (e_s - e_t).abs()
        return Losses(e_s.new_zeros(len(e_s)), (delta[:-1] * delta[1:]).sum(1).mean())


METHODS.register("correlation", help="RepDistiller's name for cc")(CorrelationCongruence)
