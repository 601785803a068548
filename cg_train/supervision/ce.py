"""``ce`` (the default, today's behaviour) and ``ls``: cross-entropy on the observed hard label."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.manifest import Batch
from . import METHODS, Extras, Method


@METHODS.register("ce", help="cross-entropy on the observed label (the default)")
class CrossEntropy(Method):
    plain_cross_entropy = True  # the trainer's own loss line: Supervision is not called per step

    def losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch.observed_labels, reduction="none")


@METHODS.register("ls", help="label smoothing: (1-s) one-hot + s uniform (--smoothing s)")
class LabelSmoothing(Method):
    def losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch.observed_labels, reduction="none",
                               label_smoothing=self.cfg.smoothing)
