"""Step time of CRD's sharded memory: all-gathering embeddings (cg_train/memory_bank.py) vs fetching rows.

Two ways to use a memory sharded across W processes for CRD's NCE loss over ``K`` negatives per sample:

* **gather embeddings** (what ``ContrastMemory`` does): all-gather the global batch's embeddings and indices
  (``B x (2 dim + 1)`` values), every process scores all ``B`` samples against the ``K / W`` negatives it
  holds, one all-reduce of ``B`` partial sums (and the same in the backward pass);
* **fetch rows**: every process draws ``K + 1`` rows for each of its ``b`` samples and fetches them from
  their owners (all-gather of the ``b (K + 1)`` wanted indices, then an all-to-all of ``b (K + 1) x dim``
  rows per memory, fixed-size, zero-filled where not owned), then scores locally.

Both run on the same W gloo processes (CPU), alternating step by step so that load from other jobs hits
both alike; the script prints the median step time (forward + backward + memory update) and the values
each process sends per step.

    python benchmarks/crd_memory.py                       # 2 processes, b=32 per process, K=4096, dim=128
    python benchmarks/crd_memory.py --k 16384 --batch 64 --steps 6
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cg_train.memory_bank import ContrastMemory  # noqa: E402


def normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def gather_step(mem: ContrastMemory, emb_s: torch.Tensor, emb_t: torch.Tensor, idx: torch.Tensor,
                step: int) -> None:
    c = mem.contrast(normalised(emb_s), normalised(emb_t), idx, epoch=0, step=step)
    per_row = c.own * (c.student_pos + c.teacher_pos) + (c.weight * (c.student_neg + c.teacher_neg)).sum(1)
    mem.to_local(per_row, len(idx)).sum().backward()


def fetch_step(mem: ContrastMemory, emb_s: torch.Tensor, emb_t: torch.Tensor, idx: torch.Tensor,
               step: int, k: int, world: int) -> None:
    gen = torch.Generator().manual_seed(step)
    want = torch.cat([idx[:, None], torch.randint(mem.n, (len(idx), k), generator=gen)], 1).flatten()
    parts = [torch.empty_like(want) for _ in range(world)]
    dist.all_gather(parts, want)
    own, local = mem.student._local(torch.cat(parts))
    fetched = []
    for table in (mem.teacher, mem.student):  # student anchors score the teacher memory and vice versa
        rows = torch.where(own.unsqueeze(1), table._rows[local], torch.zeros(()))
        received = [torch.empty(len(want), mem.dim) for _ in range(world)]
        dist.all_to_all(received, list(rows.chunk(world)))
        fetched.append(torch.stack(received).sum(0).view(len(idx), k + 1, mem.dim))
    loss = sum(torch.exp(torch.bmm(rows, normalised(e).unsqueeze(2)) / mem.temperature).sum()
               for rows, e in zip(fetched, (emb_s, emb_t)))
    loss.backward()
    with torch.no_grad():  # positives to their owners: the same all-gather as the other design's
        g_s, g_t, g_idx = mem.gather(normalised(emb_s), normalised(emb_t), idx)
        mem.update(g_idx, g_s, g_t)


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    labels = np.random.default_rng(0).integers(0, 100, args.n)
    mem = ContrastMemory(args.n, args.dim, labels, rank, world, torch.device("cpu"), step_rows=args.batch,
                         batch_rows=args.batch * world, negatives=args.k, blocks=args.blocks)
    gen = torch.Generator().manual_seed(rank)
    times: dict[str, list[float]] = {"gather embeddings": [], "fetch rows": []}
    for step in range(args.steps + 1):
        for name in times:
            idx = torch.randint(args.n, (args.batch,), generator=gen)
            emb_s = torch.randn(args.batch, args.dim, generator=gen, requires_grad=True)
            emb_t = torch.randn(args.batch, args.dim, generator=gen, requires_grad=True)
            dist.barrier()
            started = time.perf_counter()
            if name == "gather embeddings":
                gather_step(mem, emb_s, emb_t, idx, step)
            else:
                fetch_step(mem, emb_s, emb_t, idx, step, args.k, world)
            dist.barrier()
            if step:  # the first round warms up
                times[name].append(time.perf_counter() - started)
    if rank == 0:
        b, k, d, w = args.batch, args.k, args.dim, world
        # values a process puts into collectives per step: the embeddings' all-gather, the partial sums'
        # all-reduce and, backward, both again (the gather's gradient is an all-reduce of B x 2 dim) | the
        # wanted indices, the rows for the other W - 1 processes (two memories), the positives' update
        sent = {"gather embeddings": b * (2 * d + 1) + 2 * w * b + w * b * 2 * d,
                "fetch rows": b * (k + 1) + 2 * (w - 1) * b * (k + 1) * d + b * (2 * d + 1)}
        lines = [f"{world} gloo processes, {b} samples each, K={k}, dim={d}, N={args.n}, {args.steps} steps "
                 f"each, alternating (median step time, forward + backward + memory update)"]
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, t in medians.items():
            lines.append(f"  {name:18s} {t * 1000:9.1f} ms   ~{sent[name] / 1e6:8.2f} M values sent per process")
        lines.append(f"  fetch rows / gather embeddings: {medians['fetch rows'] / medians['gather embeddings']:.2f}x")
        Path(out).write_text("\n".join(lines) + "\n")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="samples per process per step")
    parser.add_argument("--k", type=int, default=4096, help="negatives per sample (RepDistiller: 16384)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--n", type=int, default=50000, help="memory rows (CIFAR-100: 50000)")
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"crd_memory_bench_{os.getpid()}.txt"
    mp.spawn(worker, args=(args.processes, port, args, str(out)), nprocs=args.processes, join=True)
    print(out.read_text(), end="")
    out.unlink()


if __name__ == "__main__":
    main()
