"""The path-log format without training: statistics, the writer, the resume contract, td export."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch

from cg_train.cli import parse_train_args
from cg_train.checks import check_names
from cg_train.config import build_config
from cg_train.errors import CgTrainError, ConfigError
from cg_train.paths.export_td import export_td, resolve_source
from cg_train.paths.layout import EVAL_DIR, TRAIN_DIR, is_mixed, list_parts, path_schema, to_table
from cg_train.paths.merge import merge_paths
from cg_train.paths.writer import PartWriter
from cg_train.recorders.paths import PathRecorder
from cg_train.sample_stats import per_sample_stats, to_host
from conftest import kill_when


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def test_per_sample_stats_match_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 7)) * 3
    observed = rng.integers(0, 7, 64)
    true = np.where(rng.random(64) < 0.2, -1, rng.integers(0, 7, 64))
    indices = rng.permutation(1000)[:64]
    stats = to_host(per_sample_stats(torch.tensor(logits), torch.tensor(observed), torch.tensor(true),
                                     torch.tensor(indices), k=3))
    probs = softmax(logits)
    rows = np.arange(64)
    np.testing.assert_array_equal(stats.index, indices)
    np.testing.assert_allclose(stats.loss, -np.log(probs[rows, observed]), rtol=1e-5)
    np.testing.assert_allclose(stats.p_observed, probs[rows, observed], rtol=1e-5)
    np.testing.assert_allclose(stats.p_true[true >= 0], probs[rows, true][true >= 0], rtol=1e-5)
    assert np.isnan(stats.p_true[true < 0]).all() and (true < 0).any()
    others = logits.copy()
    others[rows, observed] = -np.inf
    np.testing.assert_allclose(stats.margin, logits[rows, observed] - others.max(axis=1), rtol=1e-5, atol=1e-5)
    order = np.argsort(-probs, axis=1)[:, :3]
    np.testing.assert_array_equal(stats.top_classes.T, order)
    np.testing.assert_allclose(stats.top_probs.T, np.take_along_axis(probs, order, 1), rtol=1e-5)
    np.testing.assert_array_equal(stats.correct, order[:, 0] == observed)


def test_mixed_rows_carry_both_sources_weight_and_partner_probability() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 5)) * 2
    own, partner_label = rng.integers(0, 5, 6), rng.integers(0, 5, 6)
    weight = np.array([0.7, 0.7, 1.0, 0.25, 0.25, 0.5], np.float32)
    partner = np.array([40000, 12, -1, 7, 40000, 3])  # an index beyond int16: kept as an int32 index, not a label
    mix = SimpleNamespace(weight=torch.tensor(weight), partner_index=torch.tensor(partner),
                          partner_label=torch.tensor(partner_label))
    stats = to_host(per_sample_stats(torch.tensor(logits), torch.tensor(own), torch.tensor(own),
                                     torch.arange(6) + 10, k=2, mix=mix))
    probs, rows = softmax(logits), np.arange(6)
    np.testing.assert_allclose(stats.p_partner, probs[rows, partner_label], rtol=1e-5)
    np.testing.assert_array_equal(stats.mix_partner, partner)
    np.testing.assert_array_equal(stats.partner_label, partner_label)
    np.testing.assert_array_equal(stats.mix_weight, weight)
    np.testing.assert_allclose(stats.p_observed, probs[rows, own], rtol=1e-5)  # the row's own sample, as unmixed
    order = np.argsort(-probs, axis=1)[:, :2]
    np.testing.assert_array_equal(stats.top_classes.T, order)
    table = to_table(np.zeros(6, np.int32), stats, path_schema(5, 2, mixed=True))
    assert is_mixed(table.schema) and not is_mixed(path_schema(5, 2))
    frame = table.to_pandas()
    assert frame.columns[9:13].tolist() == ["mix_partner", "partner_label", "mix_weight", "p_partner"]
    np.testing.assert_array_equal(frame.mix_partner, partner)
    np.testing.assert_array_equal(frame.partner_label, partner_label)
    np.testing.assert_array_equal(frame.top2_class, order[:, 1])


def test_merge_takes_a_sample_in_several_rows_of_a_mixed_step_but_not_a_copied_part(tmp_path: Path) -> None:
    """cutmix_pick may keep several candidates of one sample in a step; a part written twice is still refused."""
    root = tmp_path / TRAIN_DIR
    writer = PartWriter(root, 0, path_schema(10, 2, mixed=True), rows_per_part=6)
    for step in range(2):
        indices = torch.tensor([3, 3, 5, 8, 3, 8]) + 10 * step
        mix = SimpleNamespace(weight=torch.full((6,), 0.6), partner_index=indices.roll(1),
                              partner_label=torch.zeros(6, dtype=torch.int64))
        writer.put(0, step, per_sample_stats(torch.randn(6, 10), torch.ones(6, dtype=torch.int64),
                                             torch.ones(6, dtype=torch.int64), indices, 2, mix=mix))
    writer.close()
    rows, epochs = merge_paths(root, tmp_path / "merged.parquet")
    merged = pd.read_parquet(tmp_path / "merged.parquet")
    assert (rows, epochs) == (12, 1) and (merged["index"] == 3).sum() == 3
    assert is_mixed(pq.read_schema(tmp_path / "merged.parquet"))
    part = list_parts(root)[1].path
    shutil.copy(part, part.with_name("part-000099.parquet"))  # step 1 of rank 0 twice
    with pytest.raises(CgTrainError, match="holds a sample twice"):
        merge_paths(root, tmp_path / "again.parquet")

    # per-sample dynamics (export-td, noise detectors) never read mixed rows: the eval passes, or a clear refusal
    for prefer in ("train", "eval"):
        with pytest.raises(CgTrainError, match="logs mixed images .* --paths-eval"):
            resolve_source(tmp_path, "auto", prefer)
    probs = np.full((2, 2, 3), 1 / 3)
    _write_log(tmp_path / EVAL_DIR, probs, np.array([0, 1]), k=3, skip={})
    for prefer in ("train", "eval"):
        assert resolve_source(tmp_path, "auto", prefer) == ("eval", tmp_path / EVAL_DIR)
    with pytest.raises(CgTrainError, match="logs mixed images"):
        resolve_source(tmp_path, "train")


def _batch(rng: np.random.Generator, indices: np.ndarray, k: int, classes: int = 10):
    logits = torch.tensor(rng.normal(size=(len(indices), classes)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, classes, len(indices)))
    return per_sample_stats(logits, labels, labels, torch.tensor(indices), k)


WRITE_FOREVER = """
import sys, numpy as np, torch
from pathlib import Path
from cg_train.paths.layout import path_schema
from cg_train.paths.writer import PartWriter
from cg_train.sample_stats import per_sample_stats
writer = PartWriter(Path(sys.argv[1]), 0, path_schema(10, 3), rows_per_part=500)
rng = np.random.default_rng(0)
step = 0
while True:
    logits = torch.tensor(rng.normal(size=(100, 10)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, 10, 100))
    writer.put(0, step, per_sample_stats(logits, labels, labels, torch.arange(100) + 100 * step, 3))
    step += 1
"""


def test_a_killed_writer_leaves_only_complete_readable_parts(tmp_path: Path) -> None:
    root = tmp_path / TRAIN_DIR
    kill_when([sys.executable, "-c", WRITE_FOREVER, str(root)], lambda: len(list_parts(root)) >= 4)
    parts = list_parts(root)
    table = ds.dataset(root, partitioning="hive").to_table()
    assert len(table) == 500 * len(parts)  # only whole parts are visible; a half-written one never is
    frame = pd.read_parquet(root)
    assert frame["index"].is_unique and len(frame) == len(table)
    assert duckdb.sql(f"select count(*) from read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
                      ).fetchall() == [(len(table),)]
    assert sorted(frame["step"].unique()) == list(range(5 * len(parts)))


def _recorded(root: Path) -> pd.DataFrame:
    frame = ds.dataset(root, partitioning="hive").to_table().to_pandas() if list_parts(root) else pd.DataFrame()
    return frame.sort_values(["epoch", "step", "index"]).reset_index(drop=True) if len(frame) else frame


def _record_steps(recorder: PathRecorder, epoch: int, steps: range, rank: int = 0, world: int = 1) -> None:
    for step in steps:
        rng = np.random.default_rng([epoch, rank, step])  # the same rows whenever a step is recorded
        stats = _batch(rng, np.arange(step * 8, step * 8 + 8) * world + rank, recorder.topk)
        recorder.train_writer.put(epoch, step, stats)
        recorder.train_through = (epoch, step + 1)


def test_resume_keeps_exactly_what_the_checkpoint_saw(tmp_path: Path) -> None:
    """Mid-epoch checkpoint, rows written after it, a stray temp file: resume drops them and only them."""
    def recorder(out: Path, rank: int = 0, world: int = 1) -> PathRecorder:
        return PathRecorder(out, rank, world, num_classes=10, topk=3, rows_per_part=16)

    reference = recorder(tmp_path / "reference")
    reference.load_state_dict({})
    _record_steps(reference, 0, range(10))
    reference.on_train_epoch_end(None, 0)  # type: ignore[arg-type]
    _record_steps(reference, 1, range(4))
    reference.state_dict()

    out = tmp_path / "run"
    first = recorder(out)
    first.load_state_dict({})
    _record_steps(first, 0, range(10))
    first.on_train_epoch_end(None, 0)  # type: ignore[arg-type]
    _record_steps(first, 1, range(3))
    state = first.state_dict()  # a mid-epoch checkpoint: everything before (1, 3) is on disk
    assert state == {"train_through": [1, 3], "eval_through": -1}
    assert len(_recorded(out / TRAIN_DIR)) == 13 * 8
    _record_steps(first, 1, range(3, 7))  # written after the checkpoint, then the run dies
    first.state_dict()
    (out / TRAIN_DIR / "epoch=1" / "rank=0" / ".part-000007.parquet.x1.tmp").write_bytes(b"half a part")
    assert len(_recorded(out / TRAIN_DIR)) == 17 * 8

    resumed = recorder(out)
    resumed.load_state_dict(state)
    assert len(_recorded(out / TRAIN_DIR)) == 13 * 8
    assert not list((out / TRAIN_DIR).rglob("*.tmp"))
    _record_steps(resumed, 1, range(3, 4))
    resumed.state_dict()
    pd.testing.assert_frame_equal(_recorded(out / TRAIN_DIR), _recorded(tmp_path / "reference" / TRAIN_DIR))

    resumed.load_state_dict({})  # a fresh start removes this rank's logs
    assert not list_parts(out / TRAIN_DIR)


def test_resume_with_fewer_processes_cleans_every_old_rank(tmp_path: Path) -> None:
    ranks = [PathRecorder(tmp_path, r, 2, num_classes=10, topk=2, rows_per_part=1000) for r in range(2)]
    for r, rec in enumerate(ranks):
        rec.load_state_dict({})
        _record_steps(rec, 0, range(4), rank=r, world=2)
    states = [rec.state_dict() for rec in ranks]
    assert states[0] == states[1]  # the watermark is the same on every rank
    for r, rec in enumerate(ranks):
        _record_steps(rec, 0, range(4, 6), rank=r, world=2)
        rec.state_dict()
    single = PathRecorder(tmp_path, 0, 1, num_classes=10, topk=2, rows_per_part=1000)
    single.load_state_dict(states[0])  # the engine hands rank 0's state to every process of the new run
    frame = _recorded(tmp_path / TRAIN_DIR)
    assert sorted(frame["rank"].astype(int).unique()) == [0, 1] and frame["step"].max() == 3
    assert len(frame) == 2 * 4 * 8


def _write_log(root: Path, probs: np.ndarray, observed: np.ndarray, k: int, skip: dict[int, list[int]]) -> None:
    """Write path rows for dense probabilities ``probs [N, T, K]`` through the real writer."""
    n, epochs, classes = probs.shape
    writer = PartWriter(root, 0, path_schema(classes, k), rows_per_part=7)
    for t in range(epochs):
        keep = np.setdiff1d(np.arange(n), skip.get(t, []))
        logits = torch.tensor(np.log(probs[keep, t]), dtype=torch.float32)
        label = torch.tensor(observed[keep])
        writer.put(t, 0, per_sample_stats(logits, label, label, torch.tensor(keep), k))
    writer.close()


def _run_dir(tmp_path: Path, observed: np.ndarray, true: np.ndarray) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"index": np.arange(len(observed)), "path": "x", "true_label": true, "observed_label": observed,
                  "is_corrupt": observed != true, "resampled": observed != true}).to_parquet(run / "corruption.parquet")
    return run


def test_export_td_with_full_probabilities_is_seed_002s_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n, epochs, classes = 40, 5, 6
    probs = softmax(rng.normal(size=(n * epochs, classes)) * 2).reshape(n, epochs, classes)
    true = rng.integers(0, classes, n)
    observed = np.where(rng.random(n) < 0.3, rng.integers(0, classes, n), true)
    run = _run_dir(tmp_path, observed, true)
    _write_log(run / TRAIN_DIR, probs, observed, k=classes, skip={2: [5, 6]})
    result = export_td(run, run, top_n=4, source="train")
    assert result.exact and result.filled == 2 and result.never_seen == 0
    saved = np.load(run / "training_dynamics.npz")
    td, labels = saved["td"], saved["labels"]
    assert td.shape == (n, epochs, 4) and td.dtype == np.float16 and labels.dtype == np.int16
    # seed 002's definition, written out directly: observed label first, then by mean probability
    logged = probs.astype(np.float16).astype(np.float64)
    seen = np.ones((n, epochs), bool)
    seen[[5, 6], 2] = False
    for i in range(n):
        mean = logged[i][seen[i]].mean(axis=0)  # over the epochs the sample was seen in
        others = [c for c in np.argsort(-mean, kind="stable") if c != observed[i]]
        assert labels[i].tolist() == [observed[i], *others[:3]]
        expected = logged[i][:, labels[i]]
        if i in (5, 6):
            expected[2] = expected[1]  # a missing epoch takes the previous one's values
        np.testing.assert_allclose(td[i], expected, atol=1e-3)
    meta = torch.load(run / "metadata.pth")
    assert list(meta) == ["train_indices", "valid_indices", "true_targets", "assigned_targets", "label_flipped"]
    assert meta["label_flipped"].tolist() == (observed != true).tolist()
    assert np.load(run / "metadata.npz")["epochs"].tolist() == list(range(epochs))


def test_export_td_from_top_k_estimates_the_classes_it_did_not_log(tmp_path: Path) -> None:
    # one sample, K = 5, top-2 logged; observed class 4 is never in the top 2
    probs = np.array([[[0.5, 0.3, 0.1, 0.06, 0.04]], [[0.2, 0.6, 0.1, 0.06, 0.04]]]).transpose(1, 0, 2)
    run = _run_dir(tmp_path, np.array([4]), np.array([0]))
    _write_log(run / TRAIN_DIR, probs, np.array([4]), k=2, skip={})
    export_td(run, run, top_n=4, source="train")
    saved = np.load(run / "training_dynamics.npz")
    # class 1 has the larger mean of the logged ones; classes 2 and 3 were never logged: id order
    assert saved["labels"][0].tolist() == [4, 1, 0, 2]
    residual = [(1 - 0.8 - 0.04) / 2, (1 - 0.8 - 0.04) / 2]  # unlogged mass spread over classes 2 and 3
    expected = [[0.04, 0.3, 0.5, residual[0]], [0.04, 0.6, 0.2, residual[1]]]
    np.testing.assert_allclose(saved["td"][0], expected, atol=1e-3)


def test_merge_and_export_refuse_bad_input(tmp_path: Path) -> None:
    with pytest.raises(CgTrainError, match="no path logs under"):
        merge_paths(tmp_path / TRAIN_DIR, tmp_path / "out.parquet")
    run = _run_dir(tmp_path, np.array([0, 1]), np.array([0, 1]))
    probs = np.full((2, 1, 3), 1 / 3)
    _write_log(run / TRAIN_DIR, probs, np.array([0, 1]), k=3, skip={})
    with pytest.raises(CgTrainError, match="--top-n 4 must be between 1 and the number of classes"):
        export_td(run, run, top_n=4, source="train")
    part = list_parts(run / TRAIN_DIR)[0].path
    part.rename(part.with_name("part-000099.parquet"))
    _write_log(run / TRAIN_DIR, probs, np.array([0, 1]), k=3, skip={})  # the same rows again in epoch 0
    with pytest.raises(CgTrainError, match="holds a sample twice"):
        merge_paths(run / TRAIN_DIR, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("overrides, expected", [
    (["record.paths_topk=0"], "--paths-topk (record.paths_topk)=0 must be >= 1"),
    (["record.p_smoothing=1.5"], "--p-smoothing (record.p_smoothing)=1.5 must be in [0.0, 1.0]"),
    (["record.p_smoothing_tau=0"], "--p-smoothing-tau (record.p_smoothing_tau)=0.0 must be > 0"),
    (["record.paths_rows_per_part=0"], "record.paths_rows_per_part=0 must be >= 1"),
])
def test_bad_record_settings_name_the_flag(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_names(build_config(overrides=overrides))
    assert expected in str(err.value)


def test_record_flags_reach_the_config() -> None:
    cfg, _ = parse_train_args(["/data", "--paths", "--paths-eval", "--paths-topk", "3", "--store-learned",
                               "--p-smoothing", "0.05", "--seed002-logs"])
    assert (cfg.record.paths, cfg.record.paths_eval, cfg.record.paths_topk) == (True, True, 3)
    assert cfg.record.store_learned and cfg.record.seed002_logs and cfg.record.p_smoothing == 0.05
    assert not build_config().record.paths  # everything is opt-in
