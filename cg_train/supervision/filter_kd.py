"""``filter_kd`` (seed 000): train toward a teacher run's low-pass-filtered predictions.

The targets are the teacher run's ``p_smoothing`` table (``--targets
TEACHER_RUN/p_smoothing_best.npy``, rows by sample index, written by
``cg-train DATA --p-smoothing 0.05 ...``): the running average of the teacher's
predicted distribution for each training sample. The loss is the soft-target
cross-entropy ``-sum_k q_k log softmax(s)_k``; a row the teacher never wrote
(all zeros, e.g. an unreadable image) falls back to the observed label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.manifest import Batch
from ..losses import soft_cross_entropy
from . import METHODS, Extras, Method




@METHODS.register("filter_kd", help="seed 000's Filter-KD: soft CE toward a teacher run's p_smoothing table "
                                    "(--targets TABLE.npy)")
class FilterKD(Method):
    table = "targets"

    def losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        hard = F.one_hot(batch.observed_labels, self.num_classes).float()
        target = torch.where(extras.seen.unsqueeze(1), extras.rows, hard)
        return soft_cross_entropy(logits, target)
