"""Seed 001's KD loss with an augmented copy of the batch (``--lw-mix a,b,c``), per sample.

As Good-DA-in-KD's train_student.py: ``r * CE(s(x), y) + kd_weight * (a * KL(x) +
b * CE(s(x_aug), mixed label) + c * KL(x_aug))``, KL at temperature T times T^2.
The KL target of ``x_aug`` is the teacher's output on ``x_aug`` with
``--t-output-as-target-for-input-mix``, else the teacher's logits on the two
sources mixed with the same weight. The augmented rows (their number can differ
from the batch's: CutMixPick keeps ``--n-pick``) enter as their batch mean, added
to every original row, so the summed loss has seed 001's value and each per-sample
loss stays attached to one real sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.manifest import Batch, mix_of
from ..losses import kd_term


def lw_mix_losses(batch: Batch, logits: torch.Tensor, teacher_logits: torch.Tensor, weights: tuple[float, float, float],
                  ce_weight: float, kd_weight: float, temperature: float, t_output: bool) -> torch.Tensor:
    """Per original row; ``logits`` [b + m, K] and ``teacher_logits`` [T, b + m, K] hold x then x_aug."""
    mix, b = mix_of(batch), len(batch.indices)
    s, s_aug = logits[:b].float(), logits[b:].float()
    t, t_aug = teacher_logits[:, :b], teacher_logits[:, b:]
    a, mixed_ce, mixed_kl = weights
    rows = ce_weight * F.cross_entropy(s, batch.observed_labels, reduction="none")
    rows = rows + kd_weight * a * kd_term(s, t, temperature)
    w = mix.weight.float()
    extra = torch.zeros(len(s_aug), device=s.device)
    if mixed_ce:
        extra = extra + mixed_ce * (w * F.cross_entropy(s_aug, mix.source_label, reduction="none")
                                    + (1 - w) * F.cross_entropy(s_aug, mix.partner_label, reduction="none"))
    if mixed_kl:
        target = t_aug if t_output else \
            w.view(1, -1, 1) * t[:, mix.source] + (1 - w).view(1, -1, 1) * t[:, mix.partner]
        extra = extra + mixed_kl * kd_term(s_aug, target, temperature)
    return rows + kd_weight * extra.mean()
