"""Sample order and sharding: every index once per epoch, the same global batches for any world size."""
from __future__ import annotations

import numpy as np
import pytest

from cg_train.data import sharding


@pytest.mark.parametrize("n, batch, world", [(300, 32, 1), (300, 32, 2), (301, 32, 3), (64, 64, 4), (10, 3, 2)])
def test_train_plan_covers_each_index_once(n: int, batch: int, world: int) -> None:
    order = np.arange(n)[sharding.epoch_order(n, seed=0, epoch=2)]
    plans = [sharding.train_plan(order, batch, world, rank) for rank in range(world)]
    assert len({len(p) for p in plans}) == 1  # every process runs the same number of steps
    seen = np.concatenate([step for plan in plans for step in plan])
    dropped = n % batch if 0 < n % batch < world else 0
    assert len(seen) == len(set(seen.tolist())) == n - dropped
    # step s of every world size covers the same global batch
    single = sharding.train_plan(order, batch, 1, 0)
    assert len(single) - len(plans[0]) == (1 if dropped else 0)
    for s, step in enumerate(single[:len(plans[0])]):
        assert sorted(np.concatenate([p[s] for p in plans]).tolist()) == sorted(step.tolist())


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    a = sharding.epoch_order(100, seed=1, epoch=0)
    assert np.array_equal(a, sharding.epoch_order(100, seed=1, epoch=0))
    assert not np.array_equal(a, sharding.epoch_order(100, seed=1, epoch=1))
    assert not np.array_equal(a, sharding.epoch_order(100, seed=2, epoch=0))
    assert sorted(a.tolist()) == list(range(100))


def test_eval_shards_are_disjoint_and_complete() -> None:
    indices = np.arange(7, 110, 3)
    shards = [sharding.eval_shard(indices, 4, r) for r in range(4)]
    joined = np.concatenate(shards)
    assert np.array_equal(np.sort(joined), indices) and len(joined) == len(indices)
