"""Supervision methods against hand computations (numpy), and the sharded per-sample table.

Each method's per-sample loss on a tiny batch is recomputed in numpy from its
definition (docs/supervision.md); the sharded table is checked across real
gloo processes against one process, and its shards across process counts.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cg_train.config import SupervisionConfig
from cg_train.data.manifest import Batch
from cg_train.supervision import METHODS, Extras
from cg_train.tables import ShardedTable, shard_bounds

from conftest import free_port

K = 4
RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(3, K)) * 2
TEACHERS = RNG.normal(size=(2, 3, K)) * 3  # two teachers
LABELS = np.array([2, 0, 3])
CFG = SupervisionConfig(smoothing=0.2, temperature=3.0, ce_weight=0.3, kd_weight=0.7, label_lr=0.4,
                        label_anchor=0.5)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.log(softmax(x, axis))


def hard_ce(logits: np.ndarray = LOGITS) -> np.ndarray:
    return -log_softmax(logits)[np.arange(len(LABELS)), LABELS]


def hand_kd(teachers: np.ndarray, t: float = CFG.temperature) -> np.ndarray:
    """T^2 KL(softmax(t/T) || softmax(s/T)) per sample, averaged over teachers."""
    terms = [(softmax(tl / t) * (log_softmax(tl / t) - log_softmax(LOGITS / t))).sum(1) for tl in teachers]
    return np.mean(terms, axis=0) * t * t


def batch() -> Batch:
    labels = torch.tensor(LABELS)
    return Batch(torch.zeros(3, 1, 2, 2), labels, labels, torch.tensor([5, 1, 7]))


def run(method: str, extras: Extras, cfg: SupervisionConfig = CFG) -> np.ndarray:
    return METHODS.get(method)(cfg, K).losses(batch(), torch.tensor(LOGITS, dtype=torch.float32), extras).numpy()


def teachers(n: int = 1) -> torch.Tensor:
    return torch.tensor(TEACHERS[:n], dtype=torch.float32)


def test_ce_is_cross_entropy_on_the_observed_label() -> None:
    np.testing.assert_allclose(run("ce", Extras()), hard_ce(), rtol=1e-5)


def test_ls_mixes_one_hot_and_uniform() -> None:
    s = CFG.smoothing
    expected = (1 - s) * hard_ce() + s * (-log_softmax(LOGITS)).mean(1)
    np.testing.assert_allclose(run("ls", Extras()), expected, rtol=1e-5)


@pytest.mark.parametrize("n_teachers", [1, 2])
def test_kd_is_weighted_ce_plus_t2_kl(n_teachers: int) -> None:
    expected = CFG.ce_weight * hard_ce() + CFG.kd_weight * hand_kd(TEACHERS[:n_teachers])
    np.testing.assert_allclose(run("kd", Extras(teacher_logits=teachers(n_teachers))), expected, rtol=1e-5)


def test_self_kd_is_kd_with_a_teacher_and_ce_before_it_has_one() -> None:
    np.testing.assert_allclose(run("self_kd", Extras(teacher_logits=teachers())),
                               run("kd", Extras(teacher_logits=teachers())), rtol=1e-6)
    np.testing.assert_allclose(run("self_kd", Extras()), hard_ce(), rtol=1e-5)


def test_filter_kd_is_soft_ce_toward_the_table_row_or_the_label_when_unseen() -> None:
    rows = softmax(RNG.normal(size=(3, K)))
    seen = np.array([True, False, True])
    out = run("filter_kd", Extras(rows=torch.tensor(rows, dtype=torch.float32), seen=torch.tensor(seen)))
    soft = -(rows * log_softmax(LOGITS)).sum(1)
    np.testing.assert_allclose(out, np.where(seen, soft, hard_ce()), rtol=1e-5)


def initial_label(method: str) -> np.ndarray:
    t = CFG.temperature
    if method == "sl_enc":
        return (1 - CFG.smoothing) * np.eye(K)[LABELS] + CFG.smoothing * softmax(TEACHERS[0] / t)
    if method == "sl_ens":
        return softmax(TEACHERS / t).mean(0)
    return softmax(TEACHERS[0] / t)


@pytest.mark.parametrize("method", ["sl", "sl_enc", "sl_ens", "sl_kd"])
def test_sl_losses_and_label_step_match_the_hand_formulas(method: str) -> None:
    stored = RNG.normal(size=(3, K))
    seen = np.array([False, True, False])  # samples 0 and 2: first visit, label = log(initial)
    z = np.where(seen[:, None], stored, np.log(initial_label(method)))
    q, log_p = softmax(z), log_softmax(LOGITS)
    soft = -(q * log_p).sum(1)
    expected = CFG.ce_weight * soft + CFG.kd_weight * hand_kd(TEACHERS[:2]) if method == "sl_kd" else soft
    extras = Extras(teacher_logits=teachers(2), rows=torch.tensor(stored, dtype=torch.float32),
                    seen=torch.tensor(seen))
    np.testing.assert_allclose(run(method, extras), expected, rtol=1e-5)
    # d/dz [-sum q log p] = -q (log p - sum q log p);  d/dz [-log q_y] = q - onehot(y)
    grad = -q * (log_p - (q * log_p).sum(1, keepdims=True)) + CFG.label_anchor * (q - np.eye(K)[LABELS])
    new = METHODS.get(method)(CFG, K).new_rows(batch(), torch.tensor(LOGITS, dtype=torch.float32), extras)
    np.testing.assert_allclose(new.numpy(), z - CFG.label_lr * grad, rtol=1e-4, atol=1e-6)


def test_every_method_is_tested_here() -> None:
    assert set(METHODS.names()) == {"ce", "ls", "kd", "self_kd", "filter_kd", "sl", "sl_enc", "sl_ens", "sl_kd"}


# --------------------------------------------------------------------------- sharded tables

N_ROWS = 11


def _table_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = exercise_table(rank, world)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def exercise_table(rank: int, world: int) -> dict:
    """Two steps of a running average on a global batch split like the trainer's, then a fetch."""
    table = ShardedTable(N_ROWS, 3, rank, world, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    fetched = []
    for step in range(2):
        order = torch.randperm(N_ROWS, generator=gen)[:8]
        values = torch.rand(8, 3, generator=gen)
        mine = np.array_split(np.arange(8), world)[rank]
        table.scatter(order[mine], values[mine], combine=lambda old, seen, new: torch.where(
            seen.unsqueeze(1), 0.5 * old + 0.5 * new, new))
        rows, seen = table.fetch(order[mine])
        fetched.append((order[mine], rows, seen))
    return {"held": table.held_rows, "start": table.start, "rows": table.rows.clone(), "seen": table.seen.clone(),
            "fetched": fetched}


def test_sharded_table_on_two_processes_equals_one_and_holds_only_its_share(tmp_path: Path) -> None:
    one = exercise_table(0, 1)
    mp.spawn(_table_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [p["held"] for p in parts] == [6, 5]  # ceil(11 / 2) at most per process
    torch.testing.assert_close(torch.cat([p["rows"] for p in parts]), one["rows"])
    torch.testing.assert_close(torch.cat([p["seen"] for p in parts]), one["seen"])
    for step in range(2):  # the processes' fetches, in rank order, are one process's fetch of the whole batch
        for i in range(3):
            got = torch.cat([part["fetched"][step][i] for part in parts])
            torch.testing.assert_close(got, one["fetched"][step][i])


@pytest.mark.parametrize("saved_world, loaded_world", [(3, 2), (2, 1), (1, 4)])
def test_shards_saved_on_one_process_count_load_on_another(tmp_path: Path, saved_world: int,
                                                             loaded_world: int) -> None:
    full = torch.rand(N_ROWS, 3)
    seen = torch.rand(N_ROWS) > 0.3
    states = []
    for rank in range(saved_world):
        table = ShardedTable(N_ROWS, 3, rank, saved_world, torch.device("cpu"))
        table.rows.copy_(full[table.start:table.stop])
        table.seen.copy_(seen[table.start:table.stop])
        states.append(table.save(tmp_path, generation=7, is_main=rank == 0))
    for rank in range(loaded_world):
        table = ShardedTable(N_ROWS, 3, rank, loaded_world, torch.device("cpu"))
        table.load(tmp_path, states[0], "test")
        assert table.held_rows == len(range(*shard_bounds(N_ROWS, loaded_world, rank))) <= -(-N_ROWS // loaded_world)
        torch.testing.assert_close(table.rows, full[table.start:table.stop])
        assert torch.equal(table.seen, seen[table.start:table.stop])
