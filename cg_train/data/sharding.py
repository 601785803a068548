"""Which sample indices each process handles, step by step. Pure functions, no torch.

Training: one permutation per (seed, epoch), the same on every process; global
step ``s`` covers ``order[s*B:(s+1)*B]`` and each of W processes takes a
contiguous share of it. So 1 process and W processes see exactly the same
samples per optimizer step, every index once per epoch, and a resumed run can
start at any step. The last partial batch is kept (split as evenly as
possible) unless it has fewer samples than processes, in which case those
few samples are skipped this epoch (a different few each epoch).

Evaluation: each process takes a contiguous block of the indices, no padding
and no duplicates, so summed metrics count every sample exactly once.
"""
from __future__ import annotations

import numpy as np

#: Stream ids keep independent uses of one seed from sharing random numbers.
ORDER_STREAM = 1
#: Seed stream of per-sample augmentations (crops and the torchvision loader).
AUGMENT_STREAM = 2


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, ORDER_STREAM, epoch]).permutation(n).astype(np.int64)


def global_batches(indices: np.ndarray, batch_size: int, world_size: int) -> list[np.ndarray]:
    """Split ``indices`` into global batches; drop a last batch too small to give every process a sample."""
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    if batches and len(batches[-1]) < world_size:
        batches.pop()
    return batches


def rank_share(batch: np.ndarray, world_size: int, rank: int) -> np.ndarray:
    return np.array_split(batch, world_size)[rank]


def max_share(batch_size: int, world_size: int) -> int:
    """The most samples one process gets of a global batch (:func:`rank_share`'s first shares)."""
    return -(-batch_size // world_size)


def train_plan(indices: np.ndarray, batch_size: int, world_size: int, rank: int) -> list[np.ndarray]:
    """Per-step index arrays of this process for one epoch, ``indices`` already in epoch order."""
    return [rank_share(b, world_size, rank) for b in global_batches(indices, batch_size, world_size)]


def eval_shard(indices: np.ndarray, world_size: int, rank: int) -> np.ndarray:
    return np.array_split(np.asarray(indices, dtype=np.int64), world_size)[rank]
