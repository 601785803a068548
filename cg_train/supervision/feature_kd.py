"""The feature-level methods' base: RepDistiller's ``r * CE + a * KD + b * feature term``, and shared pieces.

Each method (fitnet.py, at.py, ...) declares the features it compares, builds its side
modules and computes its feature term (``feature_losses``): per sample where the paper's loss
is a mean over samples, as a :class:`~cg_train.supervision.Losses` batch term where it relates
the samples of a batch (SP, CC, RKD, PKT). ``r``, ``a``, ``b`` are ``--kd-ce-weight``,
``--kd-weight`` and ``--feature-weight``; the defaults are RepDistiller's scripts' (r = 1,
a = 0, b per method). With ``--lw-mix`` the CE and KD terms are seed 001's on x and x_aug,
and the feature term compares the original rows x.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data.manifest import Batch
from ..errors import ConfigError
from . import Extras, LossOutput, Losses
from .kd import KnowledgeDistillation


class FeatureMethod(KnowledgeDistillation):
    defaults: ClassVar[dict[str, Any]] = {"ce_weight": 1.0, "kd_weight": 0.0}
    #: the training after the first stage compares no features (ab, fsp: RepDistiller trains it with r*CE + a*KD)
    features_in_training: bool = True

    @classmethod
    def check(cls, cfg: Any) -> None:
        super().check(cfg)
        if not cls.features_in_training and cfg.supervision.feature_weight:
            raise ConfigError(f"--feature-weight: --method {cfg.supervision.method}'s feature loss is its first "
                              f"stage's (--init-epochs); the training after it is r*CE + a*KD, as RepDistiller")

    def losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> LossOutput:
        if extras.teacher_logits is None:  # not run (runs_teacher): a = 0 and no feature of it is compared
            ce = F.cross_entropy(logits[:len(batch.observed_labels)].float(), batch.observed_labels, reduction="none")
            base = self.cfg.ce_weight * ce
        else:
            base = super().losses(batch, logits, extras)
        weight = self.cfg.feature_weight
        if not weight or not self.features_in_training:
            return base
        return add(base, self.feature_losses(batch, extras), weight)

    def feature_losses(self, batch: Batch, extras: Extras) -> LossOutput:
        raise NotImplementedError

    def uses_features(self, stage: Optional[str]) -> bool:
        return self.features_in_training or stage is not None

    def runs_teacher(self, stage: Optional[str]) -> bool:
        return bool(self.cfg.kd_weight) or self.uses_features(stage)


def add(base: torch.Tensor, term: LossOutput, weight: float) -> LossOutput:
    """``base + weight * term`` for per-sample ``base`` and a per-sample or :class:`Losses` ``term``."""
    if isinstance(term, Losses):
        return Losses(base + weight * term.per_sample, weight * term.batch)
    return base + weight * term


def per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over everything but the batch dimension: a mean over all elements, per sample."""
    return x.flatten(1).mean(1)


def pool_to_smaller(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two feature maps to the other's (square) size, as RepDistiller."""
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
    elif s_h < t_h:
        f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
    return f_s, f_t


def over_pairs(extras: Extras, term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``sum over the compared pairs of term(f_s, f_t)``, the larger map of each pair pooled to the smaller's size;
    the pairs are zipped (the shorter list decides how many, RepDistiller's rule)."""
    return sum(term(*pool_to_smaller(f_s, f_t)) for f_s, f_t in zip(extras.student_features, extras.teacher_features))


def no_relation(*features: torch.Tensor) -> Losses:
    """A relational term on fewer than 2 samples: zero, still attached to the features (no NaN in the graph)."""
    first = features[0]
    zero = sum(f.sum() for f in features) * 0.0
    return Losses(torch.zeros(len(first), device=first.device), zero)


def feature_map(shape: torch.Size, method: str, what: str) -> torch.Size:
    if len(shape) != 4:
        raise ConfigError(f"--method {method}: its {what} must be a feature map [C, H, W], not a vector of "
                          f"{tuple(shape[1:])}: choose a stage output (feat[0..-2])")
    return shape


class ConvReg(nn.Module):
    """FitNet's regressor (RepDistiller's ConvReg): a conv that maps the student's map onto the teacher's shape,
    then BatchNorm (and ReLU)."""

    def __init__(self, s_shape: torch.Size, t_shape: torch.Size, use_relu: bool = True):
        super().__init__()
        _, s_c, s_h, s_w = s_shape
        _, t_c, t_h, t_w = t_shape
        if s_h == 2 * t_h:
            self.conv: nn.Module = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif s_h * 2 == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ConfigError(f"the student's feature map ({s_h}x{s_w}) is smaller than the teacher's ({t_h}x{t_w}) "
                              f"by other than a factor 2: choose layers of matching sizes")
        self.bn = nn.BatchNorm2d(t_c)
        self.use_relu = use_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.use_relu else x
