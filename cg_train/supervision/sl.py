"""Seed 003's label optimisation: per-sample soft labels learned jointly with the network.

Seed 003 names the methods (SL, SL-Enc, SL-Ens, SL-KD; teacher = a "smart
model") but not their equations; the choices below are ours and are documented
in docs/supervision.md.

Every training sample ``i`` owns a learned label ``q_i = softmax(z_i)``, ``z_i``
a row of a per-sample table (sharded across processes). The first time a
sample is trained on, ``z_i = log q0_i`` with ``q0_i`` the method's initial
label (below). At every visit:

* the network's loss is the soft-target cross-entropy ``-sum_k q_ik log p_k``
  (``p = softmax(student logits)``, ``q_i`` constant for this gradient);
* the label takes one gradient step on the same loss, with the student's
  prediction constant, plus ``--label-anchor`` times ``CE(observed label, q_i)``:
  ``z_i <- z_i - label_lr * grad_z [ -sum_k q_ik log p_k + anchor * (-log q_i,y) ]``.
  Without the anchor this moves the label toward the classes the network
  already finds likely (a self-training pull, as in Tanaka et al.'s joint
  optimisation); the anchor keeps it near the observed label.

Initial labels: ``sl`` the teacher's ``softmax(t / T)``; ``sl_enc`` the observed
one-hot label encoded with the teacher, ``(1 - s) onehot(y) + s softmax(t / T)``
(``s = --smoothing``); ``sl_ens`` the mean of several teachers' ``softmax(t / T)``
(``--teacher a.pth:b.pth``); ``sl_kd`` as ``sl``, and its loss adds seed 001's KD
term: ``r * SL + a * T^2 KL(teacher || student)``. ``sl_kd`` runs its teachers at
every step; the others need them only for a sample's first visit, so they stop
running them once every trained sample has a label (checked after each epoch:
usually from the second epoch on).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.manifest import Batch
from ..losses import kd_term, soft_cross_entropy
from . import METHODS, Extras, Method

#: Smallest initial label probability (log of 0 is not a logit).
EPS = 1e-8


@METHODS.register("sl", help="seed 003: per-sample soft labels learned with the network, initialised from "
                             "--teacher (--label-lr, --label-anchor)")
class SoftLabels(Method):
    teacher = "checkpoint"
    table = "labels"
    teacher_for_first_visits = True

    def initial(self, batch: Batch, extras: Extras) -> torch.Tensor:
        return F.softmax(extras.teacher_logits[0] / self.cfg.temperature, dim=1)

    def label_logits(self, batch: Batch, extras: Extras) -> torch.Tensor:
        """``z`` of the batch: the stored row, or ``log q0`` on a sample's first visit."""
        if extras.teacher_logits is None:  # every trained sample has its row (Supervision.labels_complete)
            return extras.rows
        first = torch.log(self.initial(batch, extras).clamp(min=EPS))
        return torch.where(extras.seen.unsqueeze(1), extras.rows, first)

    def losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        labels = F.softmax(self.label_logits(batch, extras), dim=1)
        return soft_cross_entropy(logits, labels)

    def new_rows(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        z = self.label_logits(batch, extras).detach().requires_grad_(True)
        with torch.enable_grad():
            loss = soft_cross_entropy(logits.detach(), F.softmax(z, dim=1))
            if self.cfg.label_anchor:
                loss = loss + self.cfg.label_anchor * F.cross_entropy(z, batch.observed_labels, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), z)
        return (z - self.cfg.label_lr * grad).detach()


@METHODS.register("sl_enc", help="sl with initial labels (1-s) onehot(observed) + s teacher (--smoothing s)")
class SoftLabelsEncoded(SoftLabels):
    def initial(self, batch: Batch, extras: Extras) -> torch.Tensor:
        s = self.cfg.smoothing
        hard = F.one_hot(batch.observed_labels, self.num_classes).float()
        return (1 - s) * hard + s * super().initial(batch, extras)


@METHODS.register("sl_ens", help="sl initialised from the mean prediction of several teachers "
                                 "(--teacher a.pth:b.pth:...)")
class SoftLabelsEnsemble(SoftLabels):
    def initial(self, batch: Batch, extras: Extras) -> torch.Tensor:
        return F.softmax(extras.teacher_logits / self.cfg.temperature, dim=2).mean(0)


@METHODS.register("sl_kd", help="sl plus a KD term to the teacher: r*SL + a*T^2*KL (--kd-ce-weight, "
                                "--kd-weight)")
class SoftLabelsKD(SoftLabels):
    teacher_for_first_visits = False  # its KD term needs the teachers at every step
    def losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        cfg = self.cfg
        return cfg.ce_weight * super().losses(batch, logits, extras) + \
            cfg.kd_weight * kd_term(logits, extras.teacher_logits, cfg.temperature)
