"""Cost of ``--paths``: training steps with and without the path recorder, and the Parquet writer alone.

1. Step overhead: the demo model (``cifar_resnet20``, batch 128, 10 classes) trains on
   synthetic images; blocks of steps without the recorder alternate with blocks
   with it (the real ``PathRecorder.on_train_batch``, the writer thread running, a
   flush at the end of every block counted in), so both modes see the same machine
   load. Prints the step times of each mode and the overhead ratio: the median of
   the ratios of adjacent blocks, and the ratio of the fastest blocks (target <= 1.02).
2. Writer throughput: ImageNet-shaped rows (1,000 classes, top-5, random indices out
   of 1.28M) queued as fast as possible; rows per second until the last part is on
   disk (target >= 1M rows/s), bytes per row and per column, and the process RSS
   after each "epoch" (must not grow).
3. ``--measure DIR``: compressed bytes per row and column of a real run's logs.

    python benchmarks/path_logging.py            # CPU, or the GPU when there is one
    python benchmarks/path_logging.py --device cpu --rounds 10 --steps 20
    python benchmarks/path_logging.py --measure runs/demo/paths
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from cg_train.data.manifest import Batch
from cg_train.models import build_model
from cg_train.paths.layout import TRAIN_DIR, list_parts, path_schema
from cg_train.paths.writer import PartWriter
from cg_train.recorders.paths import PathRecorder
from cg_train.sample_stats import per_sample_stats


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_overhead(args: argparse.Namespace, device: torch.device, out: Path) -> None:
    torch.manual_seed(0)
    model = build_model(args.arch, args.classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    n = args.steps * args.batch_size
    images = torch.randn(args.batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, args.classes, (n,), device=device)
    recorder = PathRecorder(out, 0, 1, args.classes, args.topk, rows_per_part=1_000_000)
    recorder.load_state_dict({})

    hook_time: list[float] = []  # time the training thread spends in the hook

    def block(epoch: int, record: bool) -> float:
        sync(device)
        start = time.perf_counter()
        for step in range(args.steps):
            idx = torch.arange(step * args.batch_size, (step + 1) * args.batch_size, device=device)
            batch = Batch(images, labels[idx], labels[idx], idx)
            logits = model(images)
            losses = F.cross_entropy(logits.float(), batch.observed_labels, reduction="none")
            losses.mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if record:
                hook_start = time.perf_counter()
                recorder.on_train_batch(None, epoch, step, batch, logits.detach(), losses.detach())  # type: ignore
                hook_time.append(time.perf_counter() - hook_start)
        if record:
            recorder.on_train_epoch_end(None, epoch)  # type: ignore[arg-type]
            recorder.state_dict()  # flush: the part is on disk before the clock stops
        sync(device)
        return (time.perf_counter() - start) / args.steps

    block(0, True)  # warm-up of both paths (allocator, threads, first part)
    block(0, False)
    without, with_ = [], []
    for r in range(args.rounds):
        with_.append(block(r + 1, True))
        without.append(block(r + 1, False))
    ratios = [w / wo for w, wo in zip(with_, without)]  # adjacent blocks: slow load changes cancel
    rows = recorder.train_writer.rows_written
    print(f"step time, {args.arch} batch {args.batch_size} on {device} ({torch.get_num_threads()} threads), "
          f"{args.rounds} x {args.steps} steps per mode, interleaved:")
    for name, times in (("without recorder", without), ("with --paths", with_)):
        print(f"  {name:17s} min {min(times) * 1e3:8.2f}  median {statistics.median(times) * 1e3:8.2f} ms/step"
              f"   (blocks: {', '.join(f'{t * 1e3:.1f}' for t in times)})")
    print(f"  time in on_train_batch on the training thread: median {statistics.median(hook_time) * 1e3:.3f} ms "
          f"per step ({statistics.median(hook_time) / min(without) * 100:.3f}% of the fastest step without it)")
    print(f"  overhead ratio: median of paired blocks {statistics.median(ratios):.4f}, of the fastest blocks "
          f"{min(with_) / min(without):.4f} (target <= 1.02); {rows} rows in {len(list_parts(out / TRAIN_DIR))} parts")
    recorder.on_fit_end(None)  # type: ignore[arg-type]


def writer_throughput(args: argparse.Namespace, out: Path) -> None:
    classes, k, batch = 1000, 5, args.writer_batch
    rng = np.random.default_rng(0)
    order = rng.permutation(1_281_167)
    batches = []
    for b in range(64):  # distinct synthetic batches, reused round-robin (the writer only reads them)
        logits = torch.tensor(rng.normal(size=(batch, classes)) * 4, dtype=torch.float32)
        labels = torch.tensor(rng.integers(0, classes, batch))
        batches.append(per_sample_stats(logits, labels, labels, torch.tensor(order[b * batch:(b + 1) * batch]), k))
    writer = PartWriter(out, 0, path_schema(classes, k), rows_per_part=args.rows_per_part)
    steps = args.writer_rows // batch
    print(f"writer: {steps * batch:,} rows/epoch of {classes} classes, top-{k}, parts of "
          f"{args.rows_per_part:,} rows, zstd")
    rates = []
    for epoch in range(args.writer_epochs):
        start = time.perf_counter()
        for step in range(steps):
            writer.put(epoch, step, batches[step % len(batches)])
        writer.flush()
        elapsed = time.perf_counter() - start
        rates.append(steps * batch / elapsed)
        print(f"  epoch {epoch}: {rates[-1] / 1e6:6.2f} M rows/s   RSS {rss_mb():7.1f} MB   "
              f"buffered rows after flush: {writer.buffered_rows}")
    writer.close()
    size = sum(p.path.stat().st_size for p in list_parts(out))
    print(f"  median {statistics.median(rates) / 1e6:.2f} M rows/s (target >= 1M rows/s); "
          f"{size / writer.rows_written:.1f} bytes/row on disk (files included)")
    print_column_bytes("  synthetic ImageNet-shaped rows (uniform random values)", out)


def column_bytes(root: Path) -> dict[str, float]:
    """Compressed bytes per row of every column of the parts under ``root`` (from the Parquet footers)."""
    sizes: dict[str, int] = {}
    rows = 0
    for part in list_parts(root):
        meta = pq.ParquetFile(part.path).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                column = meta.row_group(g).column(c)
                sizes[column.path_in_schema] = sizes.get(column.path_in_schema, 0) + column.total_compressed_size
    return {name: size / rows for name, size in sizes.items()}


def print_column_bytes(title: str, root: Path) -> None:
    per_column = column_bytes(root)
    print(f"{title}: {sum(per_column.values()):.1f} bytes/row: "
          + ", ".join(f"{name} {size:.2f}" for name, size in per_column.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")
    parser.add_argument("--arch", default="cifar_resnet20", help="the demo model (default)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--rounds", type=int, default=12, help="blocks per mode, interleaved")
    parser.add_argument("--writer-rows", type=int, default=2_000_000, help="rows per writer epoch")
    parser.add_argument("--writer-epochs", type=int, default=4)
    parser.add_argument("--writer-batch", type=int, default=1024)
    parser.add_argument("--rows-per-part", type=int, default=1_000_000)
    parser.add_argument("--skip-steps", action="store_true", help="only measure the writer")
    parser.add_argument("--measure", metavar="DIR", help="only print the compressed bytes/row of every column of "
                                                         "the path logs in DIR (e.g. runs/demo/paths)")
    args = parser.parse_args()
    if args.measure:
        print_column_bytes(f"{args.measure}", Path(args.measure))
        return
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    with tempfile.TemporaryDirectory(prefix="cg-train-bench-") as tmp:
        if not args.skip_steps:
            step_overhead(args, device, Path(tmp) / "steps")
        writer_throughput(args, Path(tmp) / "writer")


if __name__ == "__main__":
    main()
