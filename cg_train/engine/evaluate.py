"""Evaluation: loss, top-1/top-5 and calibration (ECE) over one phase, summed exactly over processes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from ..data.loaders import Loader
from ..data.manifest import Batch
from ..progress import progress_bar
from .calibration import ECE_BINS, bin_sums, ece_from_sums


@dataclass(frozen=True)
class EvalResult:
    count: int
    loss: float
    acc1: float  # percent
    acc5: float  # percent
    ece: float = float("nan")  # expected calibration error, 0..1 (15 equal-width bins)
    calibration: Optional[tuple[tuple[float, ...], ...]] = None  # per-bin samples, confidence sum, correct sum


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Number of samples whose target is among the top-k logits, for each k (k capped at #classes)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(target.unsqueeze(1))
    return torch.stack([hits[:, :min(k, maxk)].any(dim=1).sum() for k in ks])


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Loader, accelerator: Accelerator, epoch: int, desc: str = "",
             on_batch: Optional[Callable[[Batch, torch.Tensor], None]] = None,
             progress: bool = True) -> EvalResult:
    """Evaluate ``model`` (the unwrapped module: no collectives inside the loop) on ``loader``.

    Labels are the observed ones: for ``corrupt`` that measures how far the
    network has fitted the corrupted labels, as in seed 004.
    """
    model.eval()
    loader.set_epoch(epoch)
    # count, loss, top1, top5, then the calibration bins' samples, confidence sums and correct sums
    sums = torch.zeros(4 + 3 * ECE_BINS, dtype=torch.float64, device=accelerator.device)
    bar = progress_bar(len(loader), desc, progress and accelerator.is_main_process, leave=False)
    for batch in loader:
        batch = batch.to(accelerator.device)
        if len(batch.indices):
            with accelerator.autocast():
                logits = model(batch.images)
            logits = logits.float()
            loss = F.cross_entropy(logits, batch.observed_labels, reduction="sum")
            sums += torch.cat([sums.new_full((1,), len(batch.indices)), loss.view(1),  # no host copy
                               topk_correct(logits, batch.observed_labels),
                               bin_sums(logits, batch.observed_labels).flatten()]).double()
            if on_batch is not None:
                on_batch(batch, logits)
        bar.update()
    bar.close()
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums, reduction="sum")
    count, loss, c1, c5 = sums[:4].tolist()
    if count == 0:
        return EvalResult(0, float("nan"), float("nan"), float("nan"))
    bins = sums[4:].view(3, ECE_BINS)
    return EvalResult(int(count), loss / count, 100.0 * c1 / count, 100.0 * c5 / count, ece_from_sums(bins),
                      tuple(tuple(row) for row in bins.tolist()))
