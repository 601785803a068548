"""``crd``: Contrastive Representation Distillation, Tian, Krishnan and Isola, ICLR 2020 (RepDistiller's ``crd``).

Both models' penultimate features go through trained linear heads and L2 normalisation (``--feat-dim``,
128): ``v_s``, ``v_t``. A per-sample memory of each model's embeddings (:class:`~cg_train.memory_bank.
ContrastMemory`, sharded by sample index) gives every sample its positive (its own memory row) and
``K = --nce-k`` negatives (rows of samples of other classes). With ``P(v, m) = exp(v . m / T) / Z``
(``T = --nce-t``, ``Z`` fixed from the first batch), ``Pn = 1 / N`` and RepDistiller's NCE loss (its
``ContrastLoss``, Eq. 18 of the paper)::

    h(P)  = P / (P + K Pn + eps)
    l(v, M) = -log h(P(v, M_i)) - sum_k log(1 - h(P(v, M_k)))        (1 - h = K Pn / (P + K Pn + eps))
    crd_i = l(v_s,i, teacher memory) + l(v_t,i, student memory)

per sample; the batch mean of ``crd_i`` is RepDistiller's ``s_loss + t_loss``. The memories then move
toward the batch's embeddings (momentum ``--nce-m``). The loss is ``r CE + a KD + b crd`` with
RepDistiller's script values ``-r 1 -a 0 -b 0.8``. Every process scores the whole global batch against the
negatives it holds and the per-sample sums are added across processes, so 1 and N processes compute the
same per-sample loss (docs/feature_distillation.md, "CRD and its memory").
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.manifest import Batch
from ..data.sharding import max_share
from ..errors import ConfigError
from ..memory_bank import Contrast, ContrastMemory
from ..run_context import RunContext
from . import METHODS, Extras
from .cc import Embeddings
from .feature_kd import FeatureMethod

EPS = 1e-7  # RepDistiller's eps in ContrastLoss


def nce_terms(c: Contrast, n: int, k: int) -> torch.Tensor:
    """This process's part of each global-batch sample's NCE loss (``[B]``): its positive terms where it holds
    the sample's row, and its negatives' terms, weighted (:class:`~cg_train.memory_bank.Contrast`)."""
    noise = k / n  # K * Pn
    total = torch.zeros_like(c.student_pos)
    for pos, neg in ((c.student_pos, c.student_neg), (c.teacher_pos, c.teacher_neg)):
        positive = -torch.log(pos / (pos + noise + EPS))
        negative = -torch.log(noise / (neg + noise + EPS))
        total = total + torch.where(c.own, positive, torch.zeros_like(positive)) + (c.weight * negative).sum(1)
    return total


@METHODS.register("crd", help="contrastive representation distillation (RepDistiller's): r CE + a KD + b NCE "
                              "against a per-sample memory of both models' embeddings, --nce-k negatives from "
                              "other classes (-b 0.8)")
class ContrastiveRepresentationDistillation(FeatureMethod):
    student_features = teacher_features = ("embedding",)
    has_side_modules = True
    defaults = {**FeatureMethod.defaults, "feature_weight": 0.8}

    @classmethod
    def check(cls, cfg: Any) -> None:
        super().check(cfg)
        sup = cfg.supervision
        if sup.nce_k < sup.crd_memory_blocks:
            raise ConfigError(f"--nce-k {sup.nce_k} is smaller than --crd-memory-blocks {sup.crd_memory_blocks} "
                              f"(each block gives at least one negative): raise --nce-k or lower --crd-memory-blocks")

    def build(self, student: list[torch.Size], teacher: list[torch.Size]) -> dict[str, nn.Module]:
        # RepDistiller's two Embed heads (linear); their L2 norm runs in float32 outside autocast, below
        return {"embed": Embeddings(student[0][1:].numel(), teacher[0][1:].numel(), self.cfg.feat_dim)}

    def setup(self, ctx: RunContext) -> None:
        cfg, train = ctx.cfg, ctx.data.train
        self.memory = ContrastMemory(
            len(train), self.cfg.feat_dim, train.observed_labels, ctx.rank, ctx.world_size, ctx.accelerator.device,
            step_rows=max_share(cfg.data.batch_size, ctx.world_size), batch_rows=cfg.data.batch_size,
            negatives=self.cfg.nce_k, temperature=self.cfg.nce_t, momentum=self.cfg.nce_m, seed=cfg.train.seed,
            blocks=self.cfg.crd_memory_blocks, excluded=ctx.data.removed,
            other_class=self.cfg.crd_negatives == "other_class")
        self.tables = self.memory.tables

    def feature_losses(self, batch: Batch, extras: Extras) -> torch.Tensor:
        e_s, e_t = self.side["embed"](extras.student_features[0], extras.teacher_features[0])
        v_s, v_t = F.normalize(e_s.float(), dim=1), F.normalize(e_t.float(), dim=1)
        contrast = self.memory.contrast(v_s, v_t, batch.indices, extras.epoch, extras.step)
        return self.memory.to_local(nce_terms(contrast, self.memory.n, self.memory.negatives), len(batch.indices))

    def state_dict(self) -> dict[str, Any]:
        return {"z": self.memory.z_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:  # a fresh start: RepDistiller's random memory (the tables were just cleared), Z unset
            self.memory.initialise()
        self.memory.load_z(state.get("z"))
