"""Images/s of the DALI loader's host-side feeder alone, with a per-file read latency injected.

The feeder is what runs on the training thread for every DALI step: read each file of
this process's share, parse its header, compute crop windows and flips. On a page-cached
local disk a read is ~30 us; on network storage (NFS, Lustre, GPFS) it is 0.5-2 ms, which
a serial reader pays once per image. This benchmark calls the feeder exactly as DALI
does (``StepFeeder.__call__`` once per step, one epoch of the real sharding plan, no
decoding) on real JPEGs, with each read made ``--latency`` ms slower by a sleep (which,
like a network read, releases the GIL), and compares the serial reader (``readers=0``)
with the reader pool. Target: >= 6,000 images/s per process at 2 ms.

    python benchmarks/feeder.py                                # latencies 0, 0.5, 2 ms; 32 readers
    python benchmarks/feeder.py --latency 2 --readers 32 --images 4000
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.loader import write_images  # noqa: E402
from cg_train.data.loaders import LoaderSpec  # noqa: E402
from cg_train.data.loaders.dali import DaliLoader, Read, StepFeeder  # noqa: E402
from cg_train.data.manifest import Manifest  # noqa: E402


class SlowStorageLoader(DaliLoader):
    """The DALI loader with every file read ``latency`` seconds slower (network storage)."""

    latency = 0.0

    def _read(self, index: int) -> Read:
        if self.latency:
            time.sleep(self.latency)
        return super()._read(index)


def feeder_rate(manifest: Manifest, batch: int, readers: int, latency_ms: float, epoch: int) -> float:
    """Images/s of one epoch of feeder calls (what DALI's ``external_source`` asks for, in order)."""
    spec = LoaderSpec(manifest=manifest, indices=np.arange(len(manifest), dtype=np.int64), train=True,
                      batch_size=batch, resize_size=256, crop_size=224, random_augmentations=True, workers=1,
                      seed=0, rank=0, world_size=1, device=torch.device("cpu"), readers=readers)
    loader = SlowStorageLoader(spec)
    loader.latency = latency_ms / 1000
    loader.set_epoch(epoch)
    feeder = StepFeeder(loader, loader._steps, epoch, loader._pool)
    start = time.perf_counter()
    count = 0
    try:
        while True:
            feeder()
            count += len(feeder.pending.popleft().indices)
    except StopIteration:
        pass
    elapsed = time.perf_counter() - start
    feeder.close()
    for value in spec.shared.values():
        if hasattr(value, "shutdown"):
            value.shutdown()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64, help="images per step of this process")
    parser.add_argument("--readers", type=int, default=32, help="reader threads of the concurrent feeder")
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.5, 2.0], help="ms per file read")
    parser.add_argument("--repeats", type=int, default=3, help="epochs per cell (the median is printed)")
    parser.add_argument("--dir", default=None, help="reuse JPEGs in this folder instead of writing new ones")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cg-train-feeder-bench-") as tmp:
        folder = Path(args.dir or tmp)
        files = sorted(str(p) for p in folder.glob("*.JPEG")) if args.dir else write_images(folder, args.images)
        manifest = Manifest.from_labels("train", ["a"], [0] * len(files), files=files)
        print(f"{len(files)} JPEGs (~500x375), batch {args.batch_size}, one epoch of feeder calls per cell, "
              f"median of {args.repeats}")
        print("| latency per file | serial img/s | concurrent img/s (readers) | ratio |")
        print("| --- | --- | --- | --- |")
        for latency in args.latency:
            rates = {}
            for readers in (0, args.readers):
                rates[readers] = statistics.median(feeder_rate(manifest, args.batch_size, readers, latency, e)
                                                   for e in range(args.repeats))
            print(f"| {latency:g} ms | {rates[0]:,.0f} | {rates[args.readers]:,.0f} ({args.readers}) | "
                  f"{rates[args.readers] / rates[0]:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
