"""What one prediction says about one sample, computed on the device for a whole batch.

Shared by the path logs, ``--store-learned`` and seed 002's ``results_valid.csv`` so
that "loss", "correct" and "margin" mean the same thing in every file:

- ``loss``: cross-entropy with the observed label (or the loss the trainer
  passes, i.e. what the optimizer saw);
- ``p_observed`` / ``p_true``: softmax probability of the observed / true label
  (``p_true`` is NaN where the true label is unknown, -1);
- ``margin``: observed-label logit minus the largest other logit (AUM's margin);
- ``top_probs`` / ``top_classes``: the k most probable classes, best first;
  ``correct`` is ``top_classes[:, 0] == observed``.

A row of a *mixed* image (``--da mixup`` and the like, without ``--lw-mix``) is
two samples: the one in ``index`` with weight ``mix_weight`` and ``mix_partner``
with ``1 - mix_weight``. Such rows carry four more columns (``mix_weight``,
``p_partner``: probability of the partner's observed label; ``mix_partner``,
``partner_label``), so no mixed image is ever read as one sample's prediction;
``loss`` is then the mixed-target loss the optimizer saw.

Everything is packed into one float32 and one int32 tensor, one row per column
(column-major), so that a CUDA run copies two buffers to the host per batch, not a
dozen, and the Parquet writer takes each column without a transpose.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Protocol

import numpy as np
import torch

#: Columns of :attr:`PackedStats.floats` before the top-k probabilities.
FLOAT_COLUMNS = ("loss", "p_observed", "p_true", "margin")
#: Columns of :attr:`PackedStats.ints` before the top-k classes.
INT_COLUMNS = ("index", "observed_label", "true_label")
#: Columns a mixed row adds after :data:`FLOAT_COLUMNS` / :data:`INT_COLUMNS` (before the top-k).
MIX_FLOAT_COLUMNS = ("mix_weight", "p_partner")
MIX_INT_COLUMNS = ("mix_partner", "partner_label")


class RowMix(Protocol):
    """The second source of each row (``cg_train.augment.Mix``); weight 1 and partner -1 for an unmixed row."""

    weight: torch.Tensor
    partner_index: torch.Tensor
    partner_label: torch.Tensor


class PackedStats(NamedTuple):
    floats: torch.Tensor  # float32 [4 (+2) + k, B]: FLOAT_COLUMNS (+ MIX_FLOAT_COLUMNS), the top-k probabilities
    ints: torch.Tensor  # int32 [3 (+2) + k, B]: INT_COLUMNS (+ MIX_INT_COLUMNS), then the top-k classes
    mixed: bool = False  # the MIX_* rows are present


@torch.no_grad()
def per_sample_stats(logits: torch.Tensor, observed: torch.Tensor, true: torch.Tensor, indices: torch.Tensor,
                     k: int, losses: Optional[torch.Tensor] = None, mix: Optional[RowMix] = None) -> PackedStats:
    """Per-sample statistics of one batch, on the logits' device (no host synchronisation).

    ``mix``: the rows are mixed images; their second source and weight are packed too.
    """
    logits = logits.detach().float()
    k = min(k, logits.shape[1])
    log_probs = torch.log_softmax(logits, dim=1)
    probs = log_probs.exp()
    obs = observed.view(-1, 1)
    loss = -log_probs.gather(1, obs).squeeze(1) if losses is None else losses.detach().float()
    p_observed = probs.gather(1, obs).squeeze(1)
    known = true >= 0
    p_true = probs.gather(1, true.clamp(min=0).view(-1, 1)).squeeze(1)
    p_true = torch.where(known, p_true, torch.full_like(p_true, float("nan")))
    others = logits.scatter(1, obs, float("-inf"))
    margin = logits.gather(1, obs).squeeze(1) - others.amax(dim=1)
    top_probs, top_classes = probs.topk(k, dim=1)
    floats, ints = [loss, p_observed, p_true, margin], [indices, observed, true]
    if mix is not None:
        p_partner = probs.gather(1, mix.partner_label.view(-1, 1)).squeeze(1)
        floats += [mix.weight.float(), p_partner]
        ints += [mix.partner_index, mix.partner_label]
    return PackedStats(torch.cat([torch.stack(floats), top_probs.T]),
                       torch.cat([torch.stack(ints), top_classes.T]).to(torch.int32), mix is not None)


class HostStats(NamedTuple):
    """:class:`PackedStats` on the host as NumPy arrays, with named views."""

    floats: np.ndarray  # [4 (+2) + k, B]
    ints: np.ndarray  # [3 (+2) + k, B]
    mixed: bool = False

    @property
    def rows(self) -> int:
        return self.floats.shape[1]

    @property
    def index(self) -> np.ndarray:
        return self.ints[0]

    @property
    def observed(self) -> np.ndarray:
        return self.ints[1]

    @property
    def true(self) -> np.ndarray:
        return self.ints[2]

    @property
    def top_classes(self) -> np.ndarray:
        """[k, B]: row j holds every sample's (j+1)-th most probable class."""
        return self.ints[len(INT_COLUMNS) + self.mixed * len(MIX_INT_COLUMNS):]

    @property
    def loss(self) -> np.ndarray:
        return self.floats[0]

    @property
    def p_observed(self) -> np.ndarray:
        return self.floats[1]

    @property
    def p_true(self) -> np.ndarray:
        return self.floats[2]

    @property
    def margin(self) -> np.ndarray:
        return self.floats[3]

    @property
    def top_probs(self) -> np.ndarray:
        """[k, B], like :attr:`top_classes`."""
        return self.floats[len(FLOAT_COLUMNS) + self.mixed * len(MIX_FLOAT_COLUMNS):]

    # mixed rows only (``mixed``): the second source
    @property
    def mix_weight(self) -> np.ndarray:
        return self.floats[4]

    @property
    def p_partner(self) -> np.ndarray:
        return self.floats[5]

    @property
    def mix_partner(self) -> np.ndarray:
        return self.ints[3]

    @property
    def partner_label(self) -> np.ndarray:
        return self.ints[4]

    @property
    def correct(self) -> np.ndarray:
        return self.top_classes[0] == self.observed


def to_host(stats: PackedStats) -> HostStats:
    """Blocking copy to NumPy (for small per-evaluation outputs; the path writer copies asynchronously)."""
    return HostStats(stats.floats.cpu().numpy(), stats.ints.cpu().numpy(), stats.mixed)


def concat(parts: list[HostStats], k: int) -> HostStats:
    """Stack batches (all mixed or all not); an empty list gives empty unmixed arrays of the right width."""
    if not parts:
        return HostStats(np.empty((len(FLOAT_COLUMNS) + k, 0), np.float32),
                         np.empty((len(INT_COLUMNS) + k, 0), np.int32))
    return HostStats(np.concatenate([p.floats for p in parts], axis=1),
                     np.concatenate([p.ints for p in parts], axis=1), parts[0].mixed)


def write_predictions(path: "str | Path", stats: HostStats, trained_on: Optional[np.ndarray] = None) -> None:
    """One Parquet row per sample in index order: labels, the top-k classes/probabilities (best first), the
    per-sample loss, and ``trained_on`` (bool [N] by index: whether the predicting model trained on the
    sample; False for every row without it). ``cg-train evaluate --predictions`` and ``--predict-heldout``
    write this table; ``cg-analyze relabel --source model`` and the K-fold merge read it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .io import atomic_path

    order = np.argsort(stats.index, kind="stable")
    index = stats.index[order].astype(np.int64)
    k = stats.top_classes.shape[0]
    table = pa.table({
        "index": index,
        "observed_label": stats.observed[order], "true_label": stats.true[order],
        "prediction": stats.top_classes[0][order], "confidence": stats.top_probs[0][order],
        "correct": stats.correct[order], "loss": stats.loss[order], "p_observed": stats.p_observed[order],
        "p_true": stats.p_true[order], "margin": stats.margin[order],
        "top_classes": pa.FixedSizeListArray.from_arrays(stats.top_classes[:, order].T.reshape(-1), k),
        "top_probs": pa.FixedSizeListArray.from_arrays(stats.top_probs[:, order].T.reshape(-1), k),
        "trained_on": np.zeros(len(index), bool) if trained_on is None else np.asarray(trained_on)[index],
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
