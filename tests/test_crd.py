"""``--method crd`` (cg_train/supervision/crd.py) against NumPy, and in real runs.

The loss is recomputed in NumPy from RepDistiller's definition (``ContrastMemory`` + ``ContrastLoss``) on
fixed tensors, with the negatives the method drew taken as RepDistiller's ``contrast_idx``; the memory update
is the momentum formula. Real runs: SIGTERM mid-epoch + resume gives the uninterrupted run's CSVs, weights,
heads and memory; 2 processes give 1 process's results; bf16 autocast runs; DeepSpeed is refused in one line.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cg_train.config import build_config
from cg_train.data.manifest import Batch
from cg_train.errors import ConfigError
from cg_train.supervision import METHODS, Extras, check_method

from conftest import (CPU_ENV, FAST, REPO, accelerate_command, accelerate_launch, assert_same_csvs,
                      assert_same_up_to_rounding, make_subset, read_csv, train)
from test_preemption import sigterm_after_rows, signal_group, wait_for_train_rows

N, CLASSES, S_DIM, T_DIM, FEAT, K, B = 40, 4, 6, 5, 8, 12, 5
LABELS = np.random.default_rng(1).integers(0, CLASSES, N)


class Train:
    observed_labels = LABELS

    def __len__(self) -> int:
        return N


def make_crd(blocks: int, nce_t: float = 0.1):
    cfg = build_config(overrides=["supervision.method=crd", "supervision.teacher=t.pth", f"supervision.nce_k={K}",
                                  f"supervision.nce_t={nce_t}", f"supervision.feat_dim={FEAT}",
                                  f"supervision.crd_memory_blocks={blocks}", "data.batch_size=5", "train.seed=4"])
    cls = METHODS.get("crd")
    cls.resolve_defaults(cfg)
    method = cls(cfg.supervision, CLASSES)
    method.modules = nn.ModuleDict(method.build([torch.Size([2, S_DIM])], [torch.Size([2, T_DIM])]))
    method.side = dict(method.modules.items())
    ctx = SimpleNamespace(cfg=cfg, rank=0, world_size=1, accelerator=SimpleNamespace(device=torch.device("cpu")),
                          data=SimpleNamespace(train=Train(), removed=None))
    method.setup(ctx)
    return method


def numpy_crd(method, f_s: np.ndarray, f_t: np.ndarray, idx: np.ndarray, rows: np.ndarray, weight: np.ndarray,
              mem_s: np.ndarray, mem_t: np.ndarray, z: np.ndarray | None, temperature: float):
    """(per-sample crd, Z, updated memories): RepDistiller's ContrastMemory.forward + ContrastLoss, in NumPy,
    with ``rows`` as its contrast_idx[:, 1:] (``weight`` 1 everywhere is RepDistiller's plain sum)."""
    heads = method.modules["embed"]

    def embed(f: np.ndarray, linear: nn.Linear) -> np.ndarray:
        e = f @ linear.weight.detach().numpy().T.astype(np.float64) + linear.bias.detach().numpy()
        return e / np.sqrt((e ** 2).sum(1, keepdims=True))  # Normalize(2)

    v_s, v_t = embed(f_s, heads.student), embed(f_t, heads.teacher)
    contrast_idx = np.concatenate([idx[:, None], rows], 1)  # positive first, as RepDistiller's dataset gives it
    # out_v1 (student anchor) against memory_v2 (teacher), out_v2 (teacher anchor) against memory_v1 (student)
    out_s = np.exp(np.einsum("bkd,bd->bk", mem_t[contrast_idx], v_s) / temperature)
    out_t = np.exp(np.einsum("bkd,bd->bk", mem_s[contrast_idx], v_t) / temperature)
    w = np.concatenate([np.ones((len(idx), 1)), weight], 1)
    if z is None:  # Z = out.mean() * n_data over the first batch's b x (K + 1) scores
        z = np.array([(w * out).sum() / out.size * N for out in (out_s, out_t)])
    m, pn, eps = K, 1.0 / N, 1e-7
    per_sample = np.zeros(len(idx))
    for out, z_one in ((out_s, z[0]), (out_t, z[1])):
        x = out / z_one
        log_d1 = np.log(x[:, 0] / (x[:, 0] + m * pn + eps))
        log_d0 = np.log(m * pn / (x[:, 1:] + m * pn + eps))
        per_sample -= log_d1 + (weight * log_d0).sum(1)
    new_s, new_t = mem_s.copy(), mem_t.copy()
    for memory, v in ((new_s, v_s), (new_t, v_t)):
        pos = memory[idx] * 0.5 + v * 0.5  # nce_m = 0.5
        memory[idx] = pos / np.sqrt((pos ** 2).sum(1, keepdims=True))
    return per_sample, z, new_s, new_t


@pytest.mark.parametrize("blocks", [1, 4])
def test_crd_loss_and_memory_update_equal_numpy(blocks: int) -> None:
    method = make_crd(blocks)
    mem = method.memory
    gen = torch.Generator().manual_seed(0)
    z = None
    for step in range(2):  # the second step: Z kept from the first, memory moved by it
        idx = torch.randperm(N, generator=gen)[:B]
        f_s, f_t = torch.randn(B, S_DIM, generator=gen), torch.randn(B, T_DIM, generator=gen)
        logits, teacher_logits = torch.randn(B, CLASSES, generator=gen), torch.randn(1, B, CLASSES, generator=gen)
        labels = torch.from_numpy(LABELS)[idx]
        mem_s, mem_t = (t.rows.double().numpy().copy() for t in (mem.student, mem.teacher))
        rows, weight = mem.draw_negatives(idx, epoch=3, step=step)
        assert (weight == 1).all() == (blocks == 1)
        extras = Extras(teacher_logits=teacher_logits, student_features=[f_s.requires_grad_()],
                        teacher_features=[f_t], epoch=3, step=step)
        losses = method.losses(Batch(torch.zeros(B, 1), labels, labels, idx), logits, extras)
        crd, z, new_s, new_t = numpy_crd(method, f_s.detach().double().numpy(), f_t.double().numpy(), idx.numpy(),
                                         rows.numpy(), weight.double().numpy(), mem_s, mem_t, z, 0.1)
        log_p = logits.double().numpy() - np.log(np.exp(logits.double().numpy()).sum(1, keepdims=True))
        ce = -log_p[np.arange(B), labels.numpy()]
        np.testing.assert_allclose(losses.detach().numpy(), 1.0 * ce + 0.8 * crd, rtol=2e-5)  # -r 1 -a 0 -b 0.8
        np.testing.assert_allclose(mem.z.numpy(), z, rtol=1e-5)
        np.testing.assert_allclose(mem.student.rows.numpy(), new_s, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mem.teacher.rows.numpy(), new_t, rtol=1e-5, atol=1e-6)
        losses.sum().backward()  # gradients reach the student's features and both heads
        assert f_s.grad is not None and f_s.grad.abs().sum() > 0
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.modules.parameters())
        method.modules.zero_grad()


def test_a_fresh_start_reinitialises_the_memory_and_z() -> None:
    method = make_crd(4)
    initial = method.memory.student.rows.clone()
    method.memory.student.clear()  # what the supervision does to the tables on a fresh start
    method.memory.z = torch.ones(2)
    method.load_state_dict({})
    torch.testing.assert_close(method.memory.student.rows, initial)
    assert method.memory.z is None
    method.load_state_dict({"z": [2.0, 3.0]})
    assert method.memory.z.tolist() == [2.0, 3.0] and method.state_dict() == {"z": [2.0, 3.0]}


@pytest.mark.parametrize("overrides, expected", [
    (["train.deepspeed=ds.json"], "--deepspeed trains one model"),
    (["supervision.nce_k=32"], "--nce-k 32 is smaller than --crd-memory-blocks 64"),
    (["supervision.crd_negatives=same"], "--crd-negatives"),
    (["supervision.nce_m=1.0"], "--nce-m"),
])
def test_bad_crd_settings_are_refused_in_one_line(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_method(build_config(overrides=["supervision.method=crd", "supervision.teacher=t.pth", *overrides]))
    assert expected in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- real runs

CRD = ["--method", "crd", "--nce-k", "96", "--crd-memory-blocks", "8", "--feat-dim", "16"]


@pytest.fixture(scope="module")
def crd_teacher(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crd_teacher") / "run"
    assert train(mnist_small, out, "--epochs", "1", "--sample-size", "10") == 0
    return out / "model_best.pth.tar"


def memory_files(run: Path) -> dict[str, np.ndarray]:
    """The last generation of each memory shard and of the heads, and Z, from the run's final checkpoint."""
    ckpt = torch.load(run / "checkpoint.pth.tar", weights_only=False, map_location="cpu")
    out: dict[str, np.ndarray] = {f"model.{k}": v.numpy() for k, v in ckpt["state_dict"].items()}
    for rank, per_rank in enumerate(ckpt["ranks"]):
        sup = next(s for s in per_rank["recorders"].values() if isinstance(s, dict) and "method_tables" in s)
        for name, state in sup["method_tables"].items():
            stem = f"gen{state['generation']:06d}.rank{rank:05d}-of-{state['world']:05d}"
            out[f"{name}.{rank}"] = np.load(run / "tables/method/crd" / name / f"{stem}.rows.npy")
        out[f"z.{rank}"] = np.array(sup["method_state"]["z"])
        for k, v in sup.get("side_modules", {}).items():
            out[f"heads.{k}"] = v.numpy()
    return out


def test_sigterm_mid_epoch_and_resume_give_the_same_csvs_weights_heads_and_memory(
        crd_teacher: Path, mnist_small: Path, tmp_path: Path) -> None:
    args = [*FAST, "--epochs", "2", "--sample-size", "10", "--batch-size", "20", "--print-freq", "1",
            "--seed", "2", "--workers", "1", "--teacher", str(crd_teacher), *CRD]
    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *args) == 0
    stopped = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "cg_train", str(mnist_small), "--output-dir", str(stopped), *args]
    returncode, err = sigterm_after_rows(cmd, stopped, rows=3, epoch=0)
    assert returncode == 128 + signal.SIGTERM, err
    state = torch.load(stopped / "checkpoint.pth.tar", weights_only=False, map_location="cpu")["train_state"]
    assert state["epoch"] == 0 and 0 < state["step"] < 15, state  # mid-epoch (300 samples, batch 20)
    assert train(mnist_small, stopped, *args, "--resume") == 0
    assert_same_csvs(reference, stopped)
    want, got = memory_files(reference), memory_files(stopped)
    assert want.keys() == got.keys() and {"student_memory.0", "teacher_memory.0", "z.0"} <= set(want)
    assert any(k.startswith("heads.") for k in want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_two_processes_give_one_process_results_and_a_stopped_two_process_run_resumes_on_one(
        crd_teacher: Path, mnist_small: Path, tmp_path: Path) -> None:
    """2 processes = 1 process (simple_cnn has no BatchNorm); 2 processes SIGTERMed mid-epoch then resumed on 1
    (the shards are re-read in the new layout, the negatives do not depend on the process count) = 1 process."""
    args = [*FAST, "--epochs", "1", "--sample-size", "10", "--batch-size", "30", "--seed", "1", "--print-freq", "1",
            "--corrupt-fraction", "0.4", "--teacher", str(crd_teacher), *CRD]
    assert train(mnist_small, tmp_path / "one", *args) == 0
    accelerate_launch("-m", "cg_train", str(mnist_small), "--output-dir", str(tmp_path / "two"), *args)
    stopped = tmp_path / "stopped"
    cmd = accelerate_command("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                             "--dynamo_backend", "no", "-m", "cg_train", str(mnist_small), "--output-dir",
                             str(stopped), *args)
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **CPU_ENV}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_train_rows(stopped, epoch=0, rows=3, proc=proc)
    signal_group(proc, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert "cg-train: stopped by SIGTERM at epoch 0, step" in err, err
    ckpt = torch.load(stopped / "checkpoint.pth.tar", weights_only=False, map_location="cpu")
    assert len(ckpt["ranks"]) == 2 and 3 <= ckpt["train_state"]["step"] < 10, ckpt["train_state"]
    assert train(mnist_small, stopped, *args, "--resume") == 0

    one = memory_files(tmp_path / "one")
    for run in ("two", "stopped"):
        assert_same_up_to_rounding(tmp_path / "one", tmp_path / run)
    two, resumed = memory_files(tmp_path / "two"), memory_files(stopped)
    for name in ("student_memory", "teacher_memory"):
        assert len(two[f"{name}.0"]) + len(two[f"{name}.1"]) == len(one[f"{name}.0"]) == 300
        assert len(two[f"{name}.0"]) == 4 * 38  # 4 of the 8 blocks of ceil(300 / 8) rows each
        for got in (np.concatenate([two[f"{name}.0"], two[f"{name}.1"]]), resumed[f"{name}.0"]):
            np.testing.assert_allclose(got, one[f"{name}.0"], atol=2e-4)
    np.testing.assert_array_equal(two["z.0"], two["z.1"])
    for got in (two["z.0"], resumed["z.0"]):
        np.testing.assert_allclose(got, one["z.0"], rtol=1e-4)


def test_crd_trains_on_two_processes_under_bf16_and_with_empty_shares(crd_teacher: Path, mnist_small: Path,
                                                                      tmp_path: Path) -> None:
    """One launch of 2 processes: a BatchNorm student under bf16 autocast; and batch 2 with unreadable images, so
    a process sometimes has an empty share (a dummy row of index -1 still runs the heads and the collectives)."""
    import json
    import shutil

    # 100 of the digits (batch 2: 50 steps), copied (not linked) before three are damaged
    broken = tmp_path / "broken"
    shutil.copytree(make_subset(mnist_small, tmp_path / "hundred", 10, 5), broken)
    for digit in ("1", "4", "7"):
        next(iter(sorted((broken / "train" / digit).iterdir()))).write_bytes(b"not a JPEG")
    common = [*FAST, "--epochs", "1", "--sample-size", "10", "--teacher", str(crd_teacher), *CRD]
    runs = {"bf16": [str(mnist_small), *common, "--arch", "cifar_resnet8", "--mixed-precision", "bf16"],
            "empty_share": [str(broken), *common, "--batch-size", "2", "--sample-size", "0"]}
    spec = tmp_path / "spec.txt"
    spec.write_text("\n".join(" ".join([data, str(tmp_path / name), *flags]) for name, (data, *flags) in runs.items()))
    accelerate_launch("tests/feature_probe.py", str(spec))
    for name in runs:
        out = tmp_path / name
        files = memory_files(out)
        assert {"student_memory.0", "student_memory.1", "z.1"} <= set(files), name
        assert all(np.isfinite(v).all() for v in files.values()), name
        for csv in ("train", "test"):
            assert np.isfinite(read_csv(out / f"{csv}.csv").loss).all(), (name, csv)
        sync = json.loads((out / "side_sync.json").read_text())
        assert sync["processes"] == 2 and sync["equal"], sync  # DDP kept the heads in step
    assert "mixed_precision: bf16" in (tmp_path / "bf16" / "config.yaml").read_text()
