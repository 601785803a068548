"""Images/s of ``--loader dali`` vs ``--loader torchvision`` on the same JPEGs and the same cores.

Writes ``--images`` JPEGs of about 500x375 (ImageNet's typical size and quality, photo-like content)
into a temporary folder, then runs one phase (eval: resize 256 + center crop 224; train:
RandomResizedCrop 224 + flip) through both of cg-train's loaders, exactly as training uses them,
pinned to the same CPUs. After a warm-up epoch each, the two loaders run ``--repeats`` epochs in
alternation (so load from other jobs hits both alike); printed are each loader's median images/s, not
counting an epoch's first batch (start-up), and the median of the per-round ratios.

    python benchmarks/loader.py                                # 2,000 images, eval and train, all CPUs
    python benchmarks/loader.py --cpus 0,1 --workers 2 --threads 2 --phase train
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cg_train.data.loaders import LOADERS, LoaderSpec  # noqa: E402
from cg_train.data.manifest import Manifest  # noqa: E402


def photo_like(height: int, width: int, rng: np.random.Generator) -> Image.Image:
    """Smooth colour regions plus sensor-like noise: compresses like a photo (~60-100 KB at quality 90)."""
    coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC)).astype(np.int16)
    return Image.fromarray(np.clip(base + rng.integers(-12, 13, (height, width, 3)), 0, 255).astype(np.uint8))


def write_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        height, width = (375, 500) if i % 3 else (500, 375)  # landscape and portrait, as ImageNet
        path = folder / f"{i:05d}.JPEG"
        photo_like(height, width, rng).save(path, quality=90)
        files.append(str(path))
    return files


def build(loader_name: str, manifest: Manifest, args: argparse.Namespace, train: bool):
    spec = LoaderSpec(manifest=manifest, indices=np.arange(len(manifest), dtype=np.int64), train=train,
                      batch_size=args.batch_size, resize_size=256, crop_size=224, random_augmentations=train,
                      workers=args.workers, seed=0, rank=0, world_size=1, device=torch.device(args.device),
                      dali_threads=args.threads, prefetch=args.prefetch)
    return LOADERS.get(loader_name)(spec)


def epoch_rate(loader, epoch: int) -> float:
    """Images/s of one epoch, not counting the first batch (pipeline and worker start-up)."""
    loader.set_epoch(epoch)
    count, start = 0, None
    for batch in loader:
        if start is None:
            start = time.perf_counter()
        else:
            count += len(batch.indices)
    return count / (time.perf_counter() - start)


def compare(manifest: Manifest, args: argparse.Namespace, train: bool) -> tuple[float, float, float]:
    """Median images/s of each loader and the median per-round ratio; rounds alternate the two loaders,
    so a load change on a shared machine hits both alike."""
    loaders = {name: build(name, manifest, args, train) for name in ("dali", "torchvision")}
    for loader in loaders.values():
        epoch_rate(loader, 0)  # warm-up: page cache, worker processes, DALI's buffers
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for epoch in range(1, args.repeats + 1):
        for name, loader in loaders.items():
            rates[name].append(epoch_rate(loader, epoch))
    ratios = [d / t for d, t in zip(rates["dali"], rates["torchvision"])]
    return statistics.median(rates["dali"]), statistics.median(rates["torchvision"]), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="torchvision DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=2, help="DALI decoding threads")
    parser.add_argument("--prefetch", type=int, default=2, help="DALI prefetch queue depth")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per loader (after one warm-up)")
    parser.add_argument("--phase", choices=["eval", "train", "both"], default="both")
    parser.add_argument("--cpus", default=None, help="pin to these CPUs, e.g. 0,1 (default: all allowed)")
    parser.add_argument("--device", default="cpu", help="cpu (DALI CPU mode) or cuda (DALI nvJPEG decode)")
    parser.add_argument("--dir", default=None, help="reuse JPEGs in this folder instead of writing new ones")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    torch.set_num_threads(1)  # the loaders decode; the main thread should not fight them with BLAS threads
    cpus = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="cg-train-loader-bench-") as tmp:
        folder = Path(args.dir or tmp)
        files = sorted(str(p) for p in folder.glob("*.JPEG")) if args.dir else write_images(folder, args.images)
        size_kb = np.mean([os.path.getsize(f) for f in files]) / 1024
        manifest = Manifest.from_labels("train", ["a"], [0] * len(files), files=files)
        print(f"{len(files)} JPEGs (~500x375, {size_kb:.0f} KB on average) -> 224x224, batch {args.batch_size}, "
              f"CPUs {cpus}, torchvision workers {args.workers}, DALI threads {args.threads} "
              f"(prefetch {args.prefetch}), device {args.device}")
        phases = ["eval", "train"] if args.phase == "both" else [args.phase]
        for phase in phases:
            dali, reference, ratio = compare(manifest, args, phase == "train")
            print(f"{phase:>5}: dali {dali:7.1f} img/s   torchvision {reference:7.1f} img/s   "
                  f"ratio {ratio:.2f}x (median of {args.repeats} alternating rounds)")


if __name__ == "__main__":
    main()
