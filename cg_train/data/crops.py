"""Crop windows in source-pixel coordinates, computed on the host for whole batches. Pure numpy.

A window is ``(top, left, bottom, right)`` in the pixels of the decoded image;
resizing that window to ``crop x crop`` is what a loader does. Expressing both
phases this way lets the DALI loader decode only the window and resize it in one
operator, and makes every crop a pure function of (seed, epoch, index, image size):

- evaluation: torchvision's ``Resize(resize) + CenterCrop(crop)`` mapped back to the
  source image (same integer sizes and rounding, so the pixel grid is identical);
- training with ``--random-augmentations``: ``RandomResizedCrop(crop)`` (torchvision's
  algorithm: 10 tries of area in [0.08, 1] and log-uniform aspect in [3/4, 4/3], then a
  centred fallback) + a horizontal flip with probability 1/2, drawn from a counter-based
  hash of (seed, epoch, index), so neither threads, ranks nor a resume point change them.
"""
from __future__ import annotations

import numpy as np

from .sharding import AUGMENT_STREAM

SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
TRIES = 10
#: Uniform numbers one sample consumes: 4 per try (area, aspect, top, left) and 1 for the flip.
DRAWS = 4 * TRIES + 1

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective, well-avalanching hash of uint64 values."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_uniforms(seed: int, epoch: int, indices: np.ndarray, count: int = DRAWS) -> np.ndarray:
    """``[len(indices), count]`` uniforms in [0, 1) that depend only on (seed, epoch, index)."""
    with np.errstate(over="ignore"):
        key = _mix(np.uint64(seed) * _GOLDEN + np.uint64(AUGMENT_STREAM))
        key = _mix(key + np.uint64(epoch) * _GOLDEN)
        sample = _mix(key + np.asarray(indices, dtype=np.uint64)[:, None] * _GOLDEN)
        bits = _mix(sample + np.arange(1, count + 1, dtype=np.uint64)[None, :] * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def center_windows(heights: np.ndarray, widths: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """torchvision ``Resize(resize)`` (shorter side) + ``CenterCrop(crop)`` as source windows ``[n, 4]``."""
    h = np.asarray(heights, dtype=np.float64)
    w = np.asarray(widths, dtype=np.float64)
    short, long = np.minimum(h, w), np.maximum(h, w)
    new_long = np.floor(resize * long / short)  # torchvision: int(size * long / short)
    out_h = np.where(h > w, new_long, resize)
    out_w = np.where(h > w, resize, new_long)
    top = np.round((out_h - crop) / 2.0)  # int(round(...)): round half to even, as numpy
    left = np.round((out_w - crop) / 2.0)
    sy, sx = h / out_h, w / out_w
    return np.stack([top * sy, left * sx, (top + crop) * sy, (left + crop) * sx], axis=1)


def random_resized_windows(heights: np.ndarray, widths: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """torchvision ``RandomResizedCrop`` windows ``[n, 4]`` (integer pixels) from ``uniforms[:, :4*TRIES]``."""
    h = np.asarray(heights, dtype=np.float64)[:, None]
    w = np.asarray(widths, dtype=np.float64)[:, None]
    u = uniforms[:, :4 * TRIES].reshape(len(uniforms), TRIES, 4)
    area = h * w * (SCALE[0] + (SCALE[1] - SCALE[0]) * u[..., 0])
    log_lo, log_hi = np.log(RATIO[0]), np.log(RATIO[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    cw = np.round(np.sqrt(area * aspect))
    ch = np.round(np.sqrt(area / aspect))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    top = np.floor(u[..., 2] * (h - ch + 1))
    left = np.floor(u[..., 3] * (w - cw + 1))
    first = np.argmax(fits, axis=1)
    rows = np.arange(len(u))
    found = fits[rows, first]
    # torchvision's fallback: the largest centred window whose aspect is clamped to RATIO
    h1, w1 = h[:, 0], w[:, 0]
    in_ratio = w1 / h1
    fb_w = np.where(in_ratio < RATIO[0], w1, np.where(in_ratio > RATIO[1], np.round(h1 * RATIO[1]), w1))
    fb_h = np.where(in_ratio < RATIO[0], np.round(w1 / RATIO[0]), h1)
    fb_top, fb_left = np.floor((h1 - fb_h) / 2), np.floor((w1 - fb_w) / 2)
    t = np.where(found, top[rows, first], fb_top)
    lft = np.where(found, left[rows, first], fb_left)
    hh = np.where(found, ch[rows, first], fb_h)
    ww = np.where(found, cw[rows, first], fb_w)
    return np.stack([t, lft, t + hh, lft + ww], axis=1)


def flips(uniforms: np.ndarray) -> np.ndarray:
    """Horizontal flip with probability 1/2, from the last uniform of each sample."""
    return uniforms[:, -1] < 0.5


def crop_windows(heights: np.ndarray, widths: np.ndarray, indices: np.ndarray, *, randomized: bool,
                 seed: int, epoch: int, resize: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Source windows ``[n, 4]`` and flip flags ``[n]`` of a batch (no flips when not randomized)."""
    if not randomized:
        return center_windows(heights, widths, resize, crop), np.zeros(len(indices), dtype=bool)
    u = sample_uniforms(seed, epoch, indices)
    return random_resized_windows(heights, widths, u), flips(u)


def pad_crop_shifts(seed: int, epoch: int, indices: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR's ``RandomCrop(crop, padding=pad)`` + flip as ``[n, 2]`` (dy, dx) shifts in [-pad, pad] and flips.

    The output pixel ``(r, c)`` is the resized crop's ``(r + dy, c + dx)``, zero outside it
    (torchvision pads with 0 before cropping). Drawn from the same (seed, epoch, index)
    hash as the other augmentations, so both loaders apply the very same shifts.
    """
    u = sample_uniforms(seed, epoch, indices, count=3)
    shifts = np.floor(u[:, :2] * (2 * pad + 1)).astype(np.int64) - pad
    return shifts, u[:, 2] < 0.5
