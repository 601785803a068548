"""``fitnet`` (RepDistiller's ``hint``): FitNets, Romero et al., ICLR 2015.

A regressor ``r`` (RepDistiller's ConvReg: conv + BN + ReLU onto the teacher's shape) maps the
student's hint layer onto the teacher's, and per sample the feature term is the mean squared
error ``mean_{c,h,w} (r(f_s) - f_t)^2`` (RepDistiller's ``nn.MSELoss`` over the batch is its mean).
The hint layer is ``feat[--hint-layer]`` of both models (2: the second stage's output).
RepDistiller trains it jointly from the start (``--init-epochs 0``, the default); the paper's
hint stage is ``--init-epochs N``: N epochs of the hint loss alone, training the regressor and
the student's layers up to the hint, then the training with ``r*CE + a*KD + b*hint``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..data.manifest import Batch
from . import METHODS, Extras
from .feature_kd import ConvReg, FeatureMethod, feature_map, per_sample_mean


@METHODS.register("fitnet", help="FitNet hints: b * MSE(regressor(student feat[--hint-layer]), teacher's) "
                                 "(-b 100; --init-epochs N: the paper's hint stage first)")
class FitNet(FeatureMethod):
    student_features = teacher_features = ("feat[2]",)
    has_side_modules = True
    init_stage = True
    defaults = {**FeatureMethod.defaults, "feature_weight": 100.0}

    def features(self) -> tuple[Sequence[str], Sequence[str]]:
        hint = (f"feat[{self.cfg.hint_layer}]",)
        return hint, hint

    def build(self, student: list[torch.Size], teacher: list[torch.Size]) -> dict[str, nn.Module]:
        return {"regressor": ConvReg(feature_map(student[0], "fitnet", "hint layer"),
                                     feature_map(teacher[0], "fitnet", "hint layer"))}

    def trained_modules(self, stage: Optional[str]) -> Sequence[str]:
        return ["regressor"]

    def feature_losses(self, batch: Batch, extras: Extras) -> torch.Tensor:
        return per_sample_mean((self.side["regressor"](extras.student_features[0]) - extras.teacher_features[0]) ** 2)

    def init_losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        return self.feature_losses(batch, extras)


METHODS.register("hint", help="RepDistiller's name for fitnet")(FitNet)
