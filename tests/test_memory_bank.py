"""CRD's sharded contrast memory (cg_train/memory_bank.py) on 1 and 2 real gloo processes.

The shards must be disjoint and cover every index; 2 processes must draw the same negatives, compute the
same per-sample sums, gradients, ``Z`` and memory as 1 process with the whole batch; the negatives must be
a seeded stream (same epoch and step, same draws), from other classes only, and unbiased; the memory
update is RepDistiller's momentum formula; shards saved on one process count load on another.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cg_train.data.sharding import max_share
from cg_train.memory_bank import ContrastMemory, block_rows, held_blocks
from cg_train.errors import ConfigError

from conftest import free_port

N, DIM, CLASSES, BLOCKS, K, BATCH = 29, 5, 3, 4, 10, 7
LABELS = np.random.default_rng(0).integers(0, CLASSES, N)
EXCLUDED = np.zeros(N, bool)
EXCLUDED[[4, 17]] = True


def memory(rank: int, world: int, **kw) -> ContrastMemory:
    return ContrastMemory(N, DIM, LABELS, rank, world, torch.device("cpu"), step_rows=max_share(BATCH, world),
                          batch_rows=BATCH, negatives=K, blocks=BLOCKS, seed=3, excluded=EXCLUDED, **kw)


def normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def exercise(rank: int, world: int) -> dict:
    """Three steps of a global batch of 7 (shares 4 and 3 on 2 processes: the collectives carry padding):
    score, sum the NCE-like terms per sample, back-propagate, update."""
    mem = memory(rank, world)
    gen = torch.Generator().manual_seed(1)
    out: dict = {"start": mem.start, "stop": mem.stop, "held": mem.student.held_rows,
                 "initial": (mem.student.rows.clone(), mem.teacher.rows.clone()), "steps": []}
    for step in range(3):
        order = torch.randperm(N, generator=gen)
        order = order[~torch.from_numpy(EXCLUDED)[order]][:BATCH]
        raw_s, raw_t = torch.randn(BATCH, DIM, generator=gen), torch.randn(BATCH, DIM, generator=gen)
        mine = torch.from_numpy(np.array_split(np.arange(BATCH), world)[rank])
        emb_s, emb_t = raw_s[mine].requires_grad_(), raw_t[mine].requires_grad_()
        c = mem.contrast(normalised(emb_s), normalised(emb_t), order[mine], epoch=2, step=step)
        per_row = (c.own * (c.student_pos.log() + c.teacher_pos.log()) +
                   (c.weight * (c.student_neg + c.teacher_neg.sqrt())).sum(1))
        local = mem.to_local(per_row, len(mine))
        (local * (mine + 1)).sum().backward()  # a different weight per sample of the global batch
        g_idx = mem.gather(emb_s.detach(), emb_t.detach(), order[mine])[2]
        rows, weight = mem.draw_negatives(g_idx, epoch=2, step=step)
        drawn = [sorted((int(mem.start + r), round(float(w), 6)) for r, w in zip(rr, ww) if w > 0)
                 for rr, ww, i in zip(rows, weight, g_idx) if i >= 0]
        out["steps"].append({"local": local.detach(), "grad_s": emb_s.grad, "grad_t": emb_t.grad, "drawn": drawn})
    out.update(z=mem.z.clone(), student=mem.student.rows.clone(), teacher=mem.teacher.rows.clone(),
               seen=mem.student.seen.clone())
    return out


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(exercise(rank, world), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_hold_disjoint_shards_and_compute_what_one_does(tmp_path: Path) -> None:
    one = exercise(0, 1)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    two = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    # shards: disjoint, in order, covering every index; whole blocks of ceil(N / BLOCKS) rows, so at most
    # ceil(N / W) + BLOCKS / W rows per process when W divides BLOCKS
    assert [(p["start"], p["stop"]) for p in two] == [(0, 16), (16, 29)]
    assert all(p["held"] == p["stop"] - p["start"] <= -(-N // 2) + BLOCKS // 2 for p in two)
    for key in ("student", "teacher", "seen"):
        torch.testing.assert_close(torch.cat([p[key] for p in two]), one[key])
    for which in range(2):  # the initial memory does not depend on the process count
        torch.testing.assert_close(torch.cat([p["initial"][which] for p in two]), one["initial"][which])
    torch.testing.assert_close(two[0]["z"], one["z"])
    torch.testing.assert_close(two[1]["z"], one["z"])
    for step in range(3):
        for key in ("local", "grad_s", "grad_t"):
            torch.testing.assert_close(torch.cat([p["steps"][step][key] for p in two]), one["steps"][step][key])
        # each sample's negatives: the union over the processes is what one process drew
        merged = [sorted(a + b) for a, b in zip(two[0]["steps"][step]["drawn"], two[1]["steps"][step]["drawn"])]
        assert merged == one["steps"][step]["drawn"]
    # the rows a step touched moved; with unit-norm embeddings and momentum 0.5 they are unit vectors again
    assert one["seen"].any() and not one["seen"].all()
    torch.testing.assert_close(one["student"][one["seen"]].norm(dim=1), torch.ones(int(one["seen"].sum())))


@pytest.mark.parametrize("n, blocks, world", [(29, 4, 2), (29, 4, 3), (5, 8, 8), (1000, 64, 8), (7, 64, 3)])
def test_block_shards_are_disjoint_and_cover_every_index(n: int, blocks: int, world: int) -> None:
    bounds = [block_rows(n, world, r, blocks) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(len(held_blocks(blocks, world, r)) >= 1 for r in range(world))
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    if blocks % world == 0:
        assert max(stop - start for start, stop in bounds) <= -(-n // world) + blocks // world


def test_negatives_are_a_seeded_stream_from_other_classes_and_unbiased() -> None:
    mem = memory(0, 1)
    idx = torch.tensor([0, 3, 8, 28, 11, 9, -1])
    first = mem.draw_negatives(idx, epoch=1, step=5)
    again = memory(0, 1).draw_negatives(idx, epoch=1, step=5)  # a fresh process (a resume) draws the same
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], mem.draw_negatives(idx, epoch=1, step=6)[0])
    assert not torch.equal(first[0], mem.draw_negatives(idx, epoch=2, step=5)[0])
    rows, weight = first
    assert rows.shape == (7, K) and torch.equal(weight[-1], torch.zeros(K))  # the padding row weighs nothing
    for i, anchor in enumerate(idx[:-1].tolist()):
        drawn = rows[i][weight[i] > 0].numpy()
        assert (LABELS[drawn] != LABELS[anchor]).all() and not EXCLUDED[drawn].any()
    # unbiased: E[sum_k w_k 1{draw_k = e}] = K / (#eligible) for every eligible sample e (RepDistiller: K
    # uniform draws); estimated over 4000 steps for anchor 0
    eligible = (LABELS != LABELS[0]) & ~EXCLUDED
    total = np.zeros(N)
    steps = 4000
    for step in range(steps):
        r, w = mem.draw_negatives(idx[:1], epoch=0, step=step)
        np.add.at(total, r[0].numpy(), w[0].numpy())
    expected = K / eligible.sum()
    assert total[~eligible].sum() == 0
    np.testing.assert_allclose(total[eligible] / steps, expected, rtol=0.12)
    # with one block the draws are plain uniform draws, all of weight 1 (RepDistiller's setting)
    single = ContrastMemory(N, DIM, LABELS, 0, 1, torch.device("cpu"), step_rows=7, batch_rows=7, negatives=K,
                            blocks=1, excluded=EXCLUDED)
    assert torch.equal(single.draw_negatives(idx[:-1], 0, 0)[1], torch.ones(6, K))


def test_memory_update_is_the_momentum_formula() -> None:
    mem = memory(0, 1)
    before_s, before_t = mem.student.rows.clone(), mem.teacher.rows.clone()
    idx = torch.tensor([2, 9, 20])
    v_s, v_t = normalised(torch.randn(3, DIM)), normalised(torch.randn(3, DIM))
    mem.contrast(v_s, v_t, idx, epoch=0, step=0)
    for table, before, v in ((mem.student.rows, before_s, v_s), (mem.teacher.rows, before_t, v_t)):
        expected = before.clone()
        moved = 0.5 * before[idx].numpy() + 0.5 * v.numpy()
        expected[idx] = torch.from_numpy(moved / np.linalg.norm(moved, axis=1, keepdims=True))
        torch.testing.assert_close(table, expected)


def test_scores_are_repdistillers_exp_over_z() -> None:
    """``exp(v . m / T) / Z`` with ``Z = mean(first batch's (K + 1) scores) * N`` (one block: RepDistiller)."""
    mem = ContrastMemory(N, DIM, LABELS, 0, 1, torch.device("cpu"), step_rows=3, batch_rows=3, negatives=K,
                         blocks=1, temperature=0.1)
    idx = torch.tensor([1, 2, 5])
    v_s, v_t = normalised(torch.randn(3, DIM)), normalised(torch.randn(3, DIM))
    mem_s, mem_t = mem.student.rows.numpy().copy(), mem.teacher.rows.numpy().copy()
    rows = mem.draw_negatives(idx, 0, 0)[0].numpy()
    c = mem.contrast(v_s, v_t, idx, 0, 0)
    for v, memo, pos, neg, z in ((v_s, mem_t, c.student_pos, c.student_neg, mem.z[0]),
                                 (v_t, mem_s, c.teacher_pos, c.teacher_neg, mem.z[1])):
        full = np.exp(np.einsum("bkd,bd->bk", memo[np.concatenate([idx.numpy()[:, None], rows], 1)],
                                v.numpy()) / 0.1)  # RepDistiller's [b, K + 1] out, positive first
        np.testing.assert_allclose(float(z), full.mean() * N, rtol=1e-5)
        np.testing.assert_allclose(pos.numpy(), full[:, 0] / float(z), rtol=1e-5)
        np.testing.assert_allclose(neg.numpy(), full[:, 1:] / float(z), rtol=1e-5)


@pytest.mark.parametrize("saved_world, loaded_world", [(2, 1), (1, 4), (4, 3)])
def test_shards_saved_on_one_process_count_load_on_another(tmp_path: Path, saved_world: int,
                                                             loaded_world: int) -> None:
    full = {"student_memory": torch.randn(N, DIM), "teacher_memory": torch.randn(N, DIM)}
    states = []
    for rank in range(saved_world):
        mem = memory(rank, saved_world)
        for name, table in mem.tables.items():
            table.rows.copy_(full[name][mem.start:mem.stop])
        states.append({name: table.save(tmp_path / name, generation=2, is_main=rank == 0)
                       for name, table in mem.tables.items()})
    for rank in range(loaded_world):
        mem = memory(rank, loaded_world)
        for name, table in mem.tables.items():
            table.load(tmp_path / name, states[0][name], name)
            torch.testing.assert_close(table.rows, full[name][mem.start:mem.stop])
    mem.load_z([3.0, 4.0])
    assert mem.z_state() == [3.0, 4.0]


@pytest.mark.parametrize("kw, expected", [
    (dict(blocks=2, world=3), "set --crd-memory-blocks to at least 3"),
    (dict(blocks=16, world=1, negatives=8), "--nce-k 8 is smaller than CRD's 16 memory blocks"),
])
def test_bad_memory_settings_fail_in_one_line(kw: dict, expected: str) -> None:
    world = kw.pop("world")
    with pytest.raises(ConfigError, match=expected):
        ContrastMemory(N, DIM, LABELS, 0, world, torch.device("cpu"), step_rows=4, batch_rows=7, **kw)
