"""Small real image files for the data-layer tests: textured JPEGs at ImageNet-like sizes, and broken ones."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def textured(height: int, width: int, seed: int) -> Image.Image:
    """Smooth colour blobs plus fine noise: edges and texture like a photo, unlike flat test colours."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC)).astype(np.int16)
    pixels = np.clip(base + rng.integers(-12, 13, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def jpeg_bytes(height: int = 24, width: int = 32, seed: int = 0, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    textured(height, width, seed).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_jpeg(path: Path, height: int = 24, width: int = 32, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(height, width, seed))
    return path


def corrupt_huffman_table(data: bytes) -> bytes:
    """A JPEG whose header and end marker look fine but whose Huffman table is garbage (decoders fail)."""
    position = data.find(b"\xff\xc4")
    assert position > data.find(b"\xff\xc0") > 0, "expected the frame header before the Huffman table"
    return data[:position + 5] + b"\xff" * 16 + data[position + 21:]


def write_broken_files(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Truncated, empty, not-an-image and a header-valid JPEG that no decoder accepts."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(40, 48, seed)
    files = {"truncated.jpg": good[: len(good) // 3], "empty.jpg": b"", "notes.jpg": b"not an image",
             "bad_huffman.jpg": corrupt_huffman_table(good)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def write_cifar(root: Path, name: str) -> np.ndarray:
    """Official pickles (bytes keys, [N, 3072] rows of R plane, G plane, B plane); returns the HWC images."""
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    rows = hwc.transpose(0, 3, 1, 2).reshape(6, 3072)
    if name == "cifar10":
        folder, meta, key, batches = root / "cifar-10-batches-py", "batches.meta", b"labels", \
            [f"data_batch_{i}" for i in range(1, 6)]
        names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
        meta_dict = {b"label_names": names, b"num_cases_per_batch": 10000}
    else:
        folder, meta, key, batches = root / "cifar-100-python", "meta", b"fine_labels", ["train"]
        meta_dict = {b"fine_label_names": [f"class{c}".encode() for c in range(100)],
                     b"coarse_label_names": [b"x"] * 20}
    folder.mkdir(parents=True)
    with open(folder / meta, "wb") as f:
        pickle.dump(meta_dict, f)
    for i, batch in enumerate(batches):
        part = slice(i, i + 1) if name == "cifar10" else slice(0, 5)
        with open(folder / batch, "wb") as f:
            pickle.dump({b"data": rows[part], key: [7] * len(rows[part]), b"batch_label": b"x"}, f)
    with open(folder / ("test_batch" if name == "cifar10" else "test"), "wb") as f:
        pickle.dump({b"data": rows[5:], key: [3]}, f)
    return hwc
