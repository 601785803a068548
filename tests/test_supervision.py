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
from cg_train.data.sharding import max_share
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
    # the feature methods are tested against their papers' formulas in test_feature_kd.py
    logit_level = {name for name in METHODS.names() if not METHODS.get(name).is_feature_method()}
    assert logit_level == {"ce", "ls", "kd", "self_kd", "filter_kd", "sl", "sl_enc", "sl_ens", "sl_kd"}


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
    # a global batch of 7: shares of 4 and 3 on two processes, so the fixed-size collectives carry padding
    table = ShardedTable(N_ROWS, 3, rank, world, torch.device("cpu"), step_rows=max_share(7, world),
                         count_updates=True)
    gen = torch.Generator().manual_seed(0)
    fetched = []
    for step in range(2):
        order = torch.randperm(N_ROWS, generator=gen)[:7]
        values = torch.rand(7, 3, generator=gen)
        mine = np.array_split(np.arange(7), world)[rank]
        table.scatter(order[mine], values[mine], combine=lambda old, seen, new: torch.where(
            seen.unsqueeze(1), 0.5 * old + 0.5 * new, new))
        rows, seen = table.fetch(order[mine])
        fetched.append((order[mine], rows, seen))
    return {"held": table.held_rows, "start": table.start, "rows": table.rows.clone(), "seen": table.seen.clone(),
            "updates": table.updates.clone(), "fetched": fetched}


def test_sharded_table_on_two_processes_equals_one_and_holds_only_its_share(tmp_path: Path) -> None:
    one = exercise_table(0, 1)
    mp.spawn(_table_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [p["held"] for p in parts] == [6, 5]  # ceil(11 / 2) at most per process
    torch.testing.assert_close(torch.cat([p["rows"] for p in parts]), one["rows"])
    torch.testing.assert_close(torch.cat([p["seen"] for p in parts]), one["seen"])
    updates = torch.cat([p["updates"] for p in parts])  # each row counted once per step that named it
    torch.testing.assert_close(updates, one["updates"])
    assert updates.sum() == 14 and torch.equal(updates > 0, one["seen"])
    for step in range(2):  # the processes' fetches, in rank order, are one process's fetch of the whole batch
        for i in range(3):
            got = torch.cat([part["fetched"][step][i] for part in parts])
            torch.testing.assert_close(got, one["fetched"][step][i])


@pytest.mark.parametrize("saved_world, loaded_world", [(3, 2), (2, 1), (1, 4)])
def test_shards_saved_on_one_process_count_load_on_another(tmp_path: Path, saved_world: int,
                                                             loaded_world: int) -> None:
    full = torch.rand(N_ROWS, 3)
    seen = torch.rand(N_ROWS) > 0.3
    updates = torch.randint(0, 9, (N_ROWS,), dtype=torch.int32)
    states = []
    for rank in range(saved_world):
        table = ShardedTable(N_ROWS, 3, rank, saved_world, torch.device("cpu"), count_updates=True)
        table.rows.copy_(full[table.start:table.stop])
        table.seen.copy_(seen[table.start:table.stop])
        table.updates.copy_(updates[table.start:table.stop])
        states.append(table.save(tmp_path, generation=7, is_main=rank == 0))
    for rank in range(loaded_world):
        table = ShardedTable(N_ROWS, 3, rank, loaded_world, torch.device("cpu"), count_updates=True)
        table.load(tmp_path, states[0], "test")
        assert table.held_rows == len(range(*shard_bounds(N_ROWS, loaded_world, rank))) <= -(-N_ROWS // loaded_world)
        torch.testing.assert_close(table.rows, full[table.start:table.stop])
        assert torch.equal(table.seen, seen[table.start:table.stop])
        assert table.updates_known and torch.equal(table.updates, updates[table.start:table.stop])
    # a checkpoint of a version without counts: the rows load, the counts are known to be unknown
    older = {key: value for key, value in states[0].items() if key != "updates"}
    table = ShardedTable(N_ROWS, 3, 0, 1, torch.device("cpu"), count_updates=True)
    table.load(tmp_path, older, "test")
    torch.testing.assert_close(table.rows, full)
    assert not table.updates_known


# --------------------------------------------------------------------------- config and the table

@pytest.mark.parametrize("overrides, expected", [
    (["supervision.method=kdd"], "unknown supervision method 'kdd' (did you mean 'kd'?)"),
    (["supervision.method=kd"], "--method kd needs --teacher CKPT"),
    (["supervision.method=filter_kd"], "--method filter_kd needs --targets TABLE.npy"),
    (["supervision.smoothing=1.5"], "--smoothing (supervision.smoothing)=1.5 must be in [0.0, 1.0]"),
])
def test_bad_supervision_settings_fail_in_one_line(overrides: list[str], expected: str) -> None:
    from cg_train.checks import check_names
    from cg_train.config import build_config
    from cg_train.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        check_names(build_config(overrides=overrides))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_cg_analyze_kd_tabulates_mean_and_std_over_seeds(tmp_path: Path) -> None:
    import pandas as pd
    import yaml

    from analysis.cli import main as analyze

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.yaml").write_text(yaml.safe_dump({"model": {"arch": "cifar_resnet56"}}))
    top1 = {("kd", 0): 70.0, ("kd", 1): 71.0, ("kd", 2): 73.0, ("ce", 0): 68.0}
    for (method, seed), acc in top1.items():
        run = tmp_path / f"{method}{seed}"
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({
            "model": {"arch": "cifar_resnet20"}, "noise": {"corrupt_fraction": 0.0}, "train": {"seed": seed},
            "supervision": {"method": method, "teacher": str(teacher / "model_best.pth.tar")}}))
        pd.DataFrame({"epoch": [0, 1], "count": 10, "loss": 1.0, "acc1": [1.0, acc], "acc5": 100.0}).to_csv(
            run / "test.csv", index=False)
        if method == "kd":
            pd.DataFrame({"phase": ["test"], "epoch": [1], "ece": [acc / 1000]}).to_csv(run / "calibration.csv")
    assert analyze(["kd", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "kd_table.csv").set_index("method")
    kd = np.array([70.0, 71.0, 73.0])
    assert table.loc["kd", "teacher"] == "cifar_resnet56" and table.loc["ce", "teacher"] == "-"
    assert table.loc["kd", "seeds"] == 3
    np.testing.assert_allclose(table.loc["kd", ["top1_mean", "top1_std"]].astype(float), [kd.mean(), kd.std(ddof=1)])
    np.testing.assert_allclose(table.loc["kd", ["ece_mean", "ece_std"]].astype(float),
                               [kd.mean() / 1000, kd.std(ddof=1) / 1000])
    assert table.loc["ce", "top1_mean"] == 68.0 and table.loc["ce", "top1_std"] == 0.0
    assert "| kd | cifar_resnet20 | cifar_resnet56 | 0 | 3 | 71.33 ± 1.53 | +3.33 |" in (tmp_path / "kd_table.md").read_text()


def test_kd_configs_are_valid_sweeps_of_seed_003_table_2(tmp_path: Path) -> None:
    from launch.sweep import load_sweep

    from cg_train.config import split_teachers

    from conftest import REPO

    methods = {}
    for sweep in sorted((REPO / "configs/kd").glob("*.yaml")):
        if sweep.name == "cifar100.yaml":  # the base the sweeps share
            continue
        points = load_sweep(sweep, tmp_path).points
        assert len({p.name for p in points}) == len(points) > 1, sweep.name
        for point in points:
            sup = point.cfg.supervision
            methods.setdefault(sup.method, set()).add(point.cfg.model.arch)
            for path in filter(None, [*split_teachers(sup.teacher), sup.targets]):
                assert Path(path).is_absolute() and path.startswith(str(Path.cwd())), path
    assert {m: methods[m] for m in ("ls", "kd", "sl", "sl_enc", "sl_ens", "sl_kd")} == \
        dict.fromkeys(["ls", "kd", "sl", "sl_enc", "sl_ens", "sl_kd"], {"cifar_resnet20", "cifar_resnet110"})
    assert "filter_kd" in methods
