"""``kd`` (Hinton et al.) and ``self_kd``: hard-label CE plus temperature-scaled KL to a frozen teacher.

Per sample, as RepDistiller (seed 001's code base) with ``-r/-a`` as
``--kd-ce-weight/--kd-weight``: ``r * CE(s, y) + a * T^2 * KL(softmax(t/T) || softmax(s/T))``.
Seed 001's ``-b`` weighs the feature methods' terms (``--feature-weight``; docs/feature_distillation.md).
Several teachers: the KL term is averaged over them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..augment.losses import lw_mix_losses
from ..data.manifest import Batch, mix_of
from ..losses import kd_term
from . import METHODS, Extras, Method




@METHODS.register("kd", help="Hinton KD from --teacher: r*CE + a*T^2*KL (--kd-ce-weight, --kd-weight, "
                             "--kd-temperature)")
class KnowledgeDistillation(Method):
    teacher = "checkpoint"
    lw_mix_ok = True

    lw_mix: tuple[float, float, float] = (1.0, 0.0, 1.0)  # set from --lw-mix by Supervision
    t_output = False  # --t-output-as-target-for-input-mix

    def losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        ce = F.cross_entropy(logits[:len(batch.observed_labels)].float(), batch.observed_labels, reduction="none")
        if extras.teacher_logits is None:  # self_kd before its first teacher exists: plain CE
            return ce
        cfg = self.cfg
        if mix_of(batch) is not None and mix_of(batch).images is not None:  # --lw-mix: x and x_aug in one forward
            return lw_mix_losses(batch, logits, extras.teacher_logits, self.lw_mix, cfg.ce_weight, cfg.kd_weight,
                                 cfg.temperature, self.t_output)
        return cfg.ce_weight * ce + cfg.kd_weight * kd_term(logits, extras.teacher_logits, cfg.temperature)


@METHODS.register("self_kd", help="self-distillation: kd whose teacher is this run's model at the end of the "
                                  "previous epoch (plain CE in epoch 0)")
class SelfDistillation(KnowledgeDistillation):
    teacher = "self"
    lw_mix_ok = False
