"""Expected calibration error (Guo et al. 2017) from per-bin sums that add up exactly over batches and processes.

Confidence is the top softmax probability; bin ``b`` of ``B`` equal-width bins holds
the confidences in ``(b/B, (b+1)/B]``. Per bin the sums are (samples, confidence,
correct top-1), so ``ECE = sum_b |correct_b - confidence_b| / N``. These sums are what
torchmetrics' ``multiclass_calibration_error(norm="l1")`` reduces too, but kept as
``3 x B`` numbers instead of every sample's confidence: they ride along the one
reduction an evaluation already does, cost nothing at ImageNet scale, and give the
reliability diagram (``cg-analyze reliability``) its points. tests/test_calibration.py
checks them against torchmetrics and a hand computation.
"""
from __future__ import annotations

import torch

#: Equal-width confidence bins of the ECE (the usual 15).
ECE_BINS = 15


def bin_sums(logits: torch.Tensor, target: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """``[3, bins]`` float64: samples, summed confidence and correct top-1 predictions per confidence bin."""
    confidence, prediction = torch.softmax(logits.float(), dim=1).max(dim=1)
    edges = torch.linspace(0.0, 1.0, bins + 1, device=logits.device)[1:-1]
    index = torch.bucketize(confidence, edges)  # right=False: (lo, hi] bins, so a confidence of 1 is in the last
    sums = torch.zeros(3, bins, dtype=torch.float64, device=logits.device)
    values = torch.stack([torch.ones_like(confidence), confidence, prediction.eq(target).float()]).double()
    return sums.index_add_(1, index, values)


def ece_from_sums(sums: torch.Tensor) -> float:
    """Expected calibration error (0..1) from :func:`bin_sums` summed over any number of batches."""
    count = float(sums[0].sum())
    return float((sums[2] - sums[1]).abs().sum()) / count if count else float("nan")
