"""Loss terms shared by the supervision methods and the augmentation losses (per sample, float32)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_term(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample ``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the teachers ``[T, b, K]``."""
    log_s = F.log_softmax(logits.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=2)
    kl = (log_t.exp() * (log_t - log_s.unsqueeze(0))).sum(2)
    return kl.mean(0) * temperature ** 2


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ``-sum_k target_k log softmax(logits)_k``."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1)
