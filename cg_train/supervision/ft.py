"""``ft`` (RepDistiller's ``factor``): factor transfer, Kim et al., NeurIPS 2018.

A first stage (``--init-epochs``, 30; constant LR ``--init-lr``, 0.01 as RepDistiller for its
ResNet/WRN students) trains a paraphraser, a convolutional autoencoder on the teacher's
``feat[-2]`` (rate k = 0.5), to reconstruct it (per sample, the mean squared error). The
training after it trains a translator (3 conv + BN + LeakyReLU) on the student's ``feat[-2]``
and, per sample, the feature term ``mean_{h,w} |a(T(f_s)) - a(P(f_t))|`` where ``P`` is the
paraphraser's encoder (frozen now) and ``a(x) = normalize(mean_c x_c^2)`` (RepDistiller's
FactorTransfer, p1 = 2, p2 = 1); the larger map is pooled to the smaller's size first.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..data.manifest import Batch
from . import METHODS, Extras
from .at import attention
from .feature_kd import FeatureMethod, feature_map, per_sample_mean, pool_to_smaller

RATE = 0.5
SLOPE = 0.1


def _block(conv: type[nn.Module], c_in: int, c_out: int, bn: bool) -> list[nn.Module]:
    return [conv(c_in, c_out, 3, 1, 1), *([nn.BatchNorm2d(c_out)] if bn else []), nn.LeakyReLU(SLOPE)]


class Paraphraser(nn.Module):
    def __init__(self, t_shape: torch.Size):
        super().__init__()
        c, k = t_shape[1], int(t_shape[1] * RATE)
        self.encoder = nn.Sequential(*_block(nn.Conv2d, c, c, False), *_block(nn.Conv2d, c, k, False),
                                     *_block(nn.Conv2d, k, k, False))
        self.decoder = nn.Sequential(*_block(nn.ConvTranspose2d, k, k, False), *_block(nn.ConvTranspose2d, k, c, False),
                                     *_block(nn.ConvTranspose2d, c, c, False))

    def forward(self, f_t: torch.Tensor) -> torch.Tensor:
        """The reconstruction (what the first stage trains)."""
        return self.decoder(self.encoder(f_t))


class Translator(nn.Module):
    def __init__(self, s_shape: torch.Size, t_shape: torch.Size):
        super().__init__()
        c, k = s_shape[1], int(t_shape[1] * RATE)
        self.encoder = nn.Sequential(*_block(nn.Conv2d, c, c, True), *_block(nn.Conv2d, c, k, True),
                                     *_block(nn.Conv2d, k, k, True))

    def forward(self, f_s: torch.Tensor) -> torch.Tensor:
        return self.encoder(f_s)


@METHODS.register("ft", help="factor transfer: a first stage (--init-epochs, 30) trains a paraphraser of the "
                             "teacher's feat[-2]; then b * |a(translator(f_s)) - a(paraphraser(f_t))| (-b 200)")
class FactorTransfer(FeatureMethod):
    student_features = teacher_features = ("feat[-2]",)
    has_side_modules = True
    init_stage = True
    defaults = {**FeatureMethod.defaults, "feature_weight": 200.0, "init_epochs": 30}

    def build(self, student: list[torch.Size], teacher: list[torch.Size]) -> dict[str, nn.Module]:
        s, t = feature_map(student[0], "ft", "feature"), feature_map(teacher[0], "ft", "feature")
        return {"paraphraser": Paraphraser(t), "translator": Translator(s, t)}

    def trained_modules(self, stage: Optional[str]) -> Sequence[str]:
        return ["paraphraser"] if stage is not None else ["translator"]

    def init_lr(self, cfg: Any) -> float:
        return 0.01 if cfg.model.arch.startswith(("cifar_resnet", "wrn_")) else cfg.optim.lr

    def init_losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        f_t = extras.teacher_features[0]
        return per_sample_mean((self.side["paraphraser"](f_t).float() - f_t) ** 2)

    def feature_losses(self, batch: Batch, extras: Extras) -> torch.Tensor:
        factor_s = self.side["translator"](extras.student_features[0]).float()
        with torch.no_grad():  # the paraphraser is frozen after its stage
            factor_t = self.modules["paraphraser"].encoder(extras.teacher_features[0]).float()
        factor_s, factor_t = pool_to_smaller(factor_s, factor_t)
        return (attention(factor_s) - attention(factor_t)).abs().mean(1)


METHODS.register("factor", help="RepDistiller's name for ft")(FactorTransfer)
