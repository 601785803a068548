"""Crop windows and image headers: the host-side geometry the DALI loader relies on."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from cg_train.data import crops
from cg_train.data.image_header import trusted_size
from image_files import corrupt_huffman_table, jpeg_bytes, textured


def through_window(image: Image.Image, window: np.ndarray, crop: int) -> np.ndarray:
    top, left, bottom, right = window
    return np.asarray(image.resize((crop, crop), Image.BILINEAR, box=(left, top, right, bottom)), dtype=int)


@pytest.mark.parametrize("height, width, resize, crop", [
    (375, 500, 256, 224), (500, 375, 256, 224), (333, 257, 256, 224), (28, 28, 36, 32), (300, 1000, 299, 299),
    (64, 64, 64, 56)])
def test_center_window_is_torchvision_resize_and_center_crop(height: int, width: int, resize: int,
                                                             crop: int) -> None:
    image = textured(height, width, seed=height + width)
    reference = np.asarray(T.CenterCrop(crop)(T.Resize(resize)(image)), dtype=int)
    window = crops.center_windows(np.array([height]), np.array([width]), resize, crop)[0]
    assert np.abs(through_window(image, window, crop) - reference).max() <= 1  # PIL's fixed-point rounding
    shifted = window + np.array([0, 1, 0, 1]) * width / (width * resize / min(height, width))
    assert np.abs(through_window(image, shifted, crop) - reference).max() > 8  # one pixel off is visible


def test_random_windows_are_torchvision_shaped_and_depend_only_on_seed_epoch_index() -> None:
    heights, widths = np.full(2000, 375), np.full(2000, 500)
    indices = np.arange(2000)
    windows, flips = crops.crop_windows(heights, widths, indices, randomized=True, seed=1, epoch=4,
                                        resize=256, crop=224)
    top, left, bottom, right = windows.T
    assert (top >= 0).all() and (left >= 0).all() and (bottom <= 375).all() and (right <= 500).all()
    area = (bottom - top) * (right - left) / (375 * 500)
    aspect = (right - left) / (bottom - top)
    assert area.min() >= 0.075 and area.max() <= 1 and 0.7 < aspect.min() and aspect.max() < 1.4
    # the same distribution as torchvision's own sampler (its rejections shrink the mean area)
    torch.manual_seed(0)
    theirs = np.array([T.RandomResizedCrop.get_params(torch.empty(3, 375, 500), list(crops.SCALE),
                                                      list(crops.RATIO)) for _ in range(2000)], dtype=float)
    their_area = theirs[:, 2] * theirs[:, 3] / (375 * 500)
    assert abs(area.mean() - their_area.mean()) < 0.03 and abs(np.median(area) - np.median(their_area)) < 0.04
    assert 0.45 < flips.mean() < 0.55
    alone, alone_flips = crops.crop_windows(heights[:1], widths[:1], indices[7:8], randomized=True, seed=1,
                                            epoch=4, resize=256, crop=224)
    assert np.array_equal(alone[0], windows[7]) and alone_flips[0] == flips[7]  # batch-independent
    other_epoch, _ = crops.crop_windows(heights, widths, indices, randomized=True, seed=1, epoch=5,
                                        resize=256, crop=224)
    other_seed, _ = crops.crop_windows(heights, widths, indices, randomized=True, seed=2, epoch=4,
                                       resize=256, crop=224)
    assert (other_epoch != windows).any(axis=1).mean() > 0.99 and (other_seed != windows).any(axis=1).mean() > 0.99


def test_random_window_falls_back_to_a_centred_crop_for_extreme_aspect() -> None:
    windows = crops.random_resized_windows(np.array([10]), np.array([1000]), np.full((1, crops.DRAWS), 0.99))
    top, left, bottom, right = windows[0]
    assert (top, bottom) == (0, 10) and right - left == round(10 * 4 / 3) and left == (1000 - 13) // 2


def png_bytes(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    textured(height, width, seed=1).save(buffer, format="PNG")
    return buffer.getvalue()


def test_trusted_size_reads_headers_and_distrusts_broken_files() -> None:
    good = jpeg_bytes(37, 53)
    progressive = io.BytesIO()
    textured(40, 30, seed=2).save(progressive, format="JPEG", progressive=True)
    cmyk = io.BytesIO()
    textured(21, 22, seed=3).convert("CMYK").save(cmyk, format="JPEG")
    assert trusted_size(good) == (37, 53) and trusted_size(good + b"\x00\x00\n") == (37, 53)
    assert trusted_size(progressive.getvalue()) == (40, 30) and trusted_size(cmyk.getvalue()) == (21, 22)
    assert trusted_size(png_bytes(12, 34)) == (12, 34)
    for suspicious in (good[:len(good) // 2], b"", b"not an image", png_bytes(12, 34)[:-30],
                       good + b"SEFH trailer written after the image by some phones"):
        assert trusted_size(suspicious) is None  # decoded by PIL instead, which keeps it or skips it
    # a header-valid file with a broken body is trusted: DALI fails its batch and PIL redoes that batch
    assert trusted_size(corrupt_huffman_table(good)) == (37, 53)
