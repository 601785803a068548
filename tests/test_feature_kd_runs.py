"""Feature-level methods end to end on real MNIST JPEGs: every method on 2 gloo processes under bf16 autocast with
a BatchNorm student, 1 process against 2 for the methods whose result does not depend on the split, DeepSpeed,
--lw-mix / --da / --channels-last combinations, and SIGTERM mid-epoch in FitNet's hint stage and after it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import (ACCELERATE, REPO, accelerate_launch, assert_same_csvs, assert_same_up_to_rounding,
                      free_port, make_subset, read_csv, train)
from test_preemption import wait_for_train_rows

METHODS = ("fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst")
STAGED = ("fitnet", "ab", "ft", "fsp")
#: what every run here shares (FAST's simple_cnn is replaced per test)
BASE = ["--batch-size", "32", "--workers", "0", "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "0",
        "--no-progress", "--image-size", "16", "--sample-size", "16", "--seed", "5", "--corrupt-fraction", "0.2"]
RESNET = ["--arch", "cifar_resnet8"]  # BatchNorm
CNN = ["--arch", "simple_cnn"]  # no BatchNorm: 1 and 2 processes agree up to rounding


@pytest.fixture(scope="module")
def digits(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 train / 40 val of the MNIST JPEGs: 2 steps of 32 per epoch, the last a partial one."""
    return make_subset(mnist_small, tmp_path_factory.mktemp("digits") / "mnist", 6, 4)


def teacher_run(data: Path, out: Path, arch: list[str]) -> Path:
    assert train(data, out, *BASE, *arch, "--epochs", "1") == 0
    return out / "model_best.pth.tar"


@pytest.fixture(scope="module")
def teachers(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    return {"resnet": teacher_run(digits, root / "resnet", RESNET), "cnn": teacher_run(digits, root / "cnn", CNN)}


def method_args(method: str, teacher: Path, init: int = 1) -> list[str]:
    return ["--method", method, "--teacher", str(teacher), "--epochs", "1",
            *(["--init-epochs", str(init)] if method in STAGED else [])]


#: the methods whose 2-process result equals the 1-process one on a model without BatchNorm (per-sample terms,
#: no BatchNorm in the side modules): vid's variational heads check that DDP averages side-module gradients
SPLIT_FREE = ("at", "vid", "nst", "ab", "fsp")


@pytest.fixture(scope="module")
def two_process_runs(digits: Path, teachers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `accelerate launch` of 2 processes for every run: each method with a BatchNorm student under bf16,
    and the split-free methods with simple_cnn in float32."""
    root = tmp_path_factory.mktemp("two")
    lines = [" ".join([str(digits), str(root / "bf16" / m), *BASE, *RESNET, "--mixed-precision", "bf16",
                       *method_args(m, teachers["resnet"])]) for m in METHODS]
    lines += [" ".join([str(digits), str(root / "fp32" / m), *BASE, *CNN, *method_args(m, teachers["cnn"])])
              for m in SPLIT_FREE]
    # batch 2 on 2 processes: each unreadable image leaves one process an empty share for that step
    broken = root / "broken"
    shutil.copytree(digits, broken)
    for digit in ("1", "4", "7"):
        next(iter(sorted((broken / "train" / digit).iterdir()))).write_bytes(b"not a JPEG")
    lines.append(" ".join([str(broken), str(root / "empty_share"), *BASE, *RESNET, *method_args("cc", teachers["resnet"]),
                           "--batch-size", "2"]))
    (root / "spec.txt").write_text("\n".join(lines))
    accelerate_launch("tests/feature_probe.py", str(root / "spec.txt"))
    return root


def side_state(run: Path, name: str = "checkpoint.pth.tar") -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / name, weights_only=False, map_location="cpu")
    return ckpt["ranks"][0]["recorders"]["supervision"].get("side_modules", {})


@pytest.mark.xdist_group("feature_kd")  # the tests of one launch share a worker (its fixture runs once)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_on_two_processes_under_bf16(two_process_runs: Path, method: str) -> None:
    run = two_process_runs / "bf16" / method
    assert "mixed_precision: bf16" in (run / "config.yaml").read_text()
    epochs = 1 + (method in STAGED)  # the first stage's epoch, then --epochs 1
    test = read_csv(run / "test.csv")
    assert test.epoch.tolist() == list(range(epochs + 1)) and np.isfinite(test.loss).all(), test
    assert np.isfinite(read_csv(run / "train.csv").loss).all()
    sync = json.loads((run / "side_sync.json").read_text())
    assert sync["processes"] == 2 and sync["equal"], sync  # DDP kept the side modules in step
    before, after = side_state(run, "initial_state.pth.tar"), side_state(run)
    assert before.keys() == after.keys()
    if sync["parameters"]:  # every side module's weights are in the checkpoint, and trained
        assert sum(p.numel() for k, p in after.items() if "running" not in k and "num_batches" not in k) \
            == sync["parameters"]
        moved = {k.split(".")[0] for k in after if not torch.equal(before[k], after[k])}
        assert moved == {k.split(".")[0] for k in after}, (method, moved)


@pytest.mark.xdist_group("feature_kd")
def test_a_process_with_an_empty_share_still_runs_the_side_modules(two_process_runs: Path) -> None:
    """cc (a batch term, DDP-wrapped embeddings): a share whose images are all unreadable gets a weightless dummy
    row through the method, so both processes call the side modules at every step and none waits forever."""
    run = two_process_runs / "empty_share"
    skipped = read_csv(run / "skipped.csv")
    assert (skipped.phase == "train").sum() == 3
    assert json.loads((run / "side_sync.json").read_text())["equal"]
    assert np.isfinite(read_csv(run / "train.csv").loss).all() and np.isfinite(read_csv(run / "test.csv").loss).all()
    assert "trained on 57 samples" in (run / "log.txt").read_text()


@pytest.mark.xdist_group("feature_kd")
@pytest.mark.parametrize("method", SPLIT_FREE)
def test_split_free_methods_give_the_one_process_results_on_two(two_process_runs: Path, digits: Path,
                                                                teachers: dict[str, Path], tmp_path: Path,
                                                                method: str) -> None:
    one = tmp_path / method
    assert train(digits, one, *BASE, *CNN, *method_args(method, teachers["cnn"])) == 0
    assert_same_up_to_rounding(one, two_process_runs / "fp32" / method)
    if method == "vid":  # the side modules end the same, so their gradients were averaged over the global batch
        for key, value in side_state(one).items():
            np.testing.assert_allclose(side_state(two_process_runs / "fp32" / method)[key], value, rtol=1e-3,
                                       atol=1e-5, err_msg=key)


@pytest.mark.xdist_group("deepspeed")  # with test_deepspeed.py: one worker builds DeepSpeed's CPU ops at a time
def test_methods_without_side_modules_train_under_deepspeed(digits: Path, teachers: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """A per-sample and a relational method under ZeRO-2 on 2 processes, the student's hooks inside the
    DeepSpeedEngine: at, sp, rkd, pkt, nst (and fsp with --init-epochs 0, then plain r*CE + a*KD) take this path;
    fitnet, cc, vid, ab, ft and any first stage are refused in one line (test_feature_kd.py)."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is the optional extra cg-train[deepspeed]")
    runs = ("at", "rkd")
    zero2 = ["--deepspeed", str(REPO / "launch" / "deepspeed" / "zero2.json")]
    (tmp_path / "spec.txt").write_text("\n".join(
        " ".join([str(digits), str(tmp_path / m), *BASE, *RESNET, *zero2, *method_args(m, teachers["resnet"], 0)])
        for m in runs))
    cmd = [*ACCELERATE, "--main_process_port", str(free_port()), "--config_file",
           str(REPO / "launch" / "accelerate" / "cpu.yaml"), "tests/feature_probe.py", str(tmp_path / "spec.txt")]
    result = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for m in runs:
        assert "DeepSpeedEngine (ZeRO stage 2)" in (tmp_path / m / "log.txt").read_text(), m
        assert np.isfinite(read_csv(tmp_path / m / "test.csv").loss).all()


def test_feature_methods_combine_with_lw_mix_da_and_channels_last(digits: Path, teachers: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    teacher = teachers["resnet"]
    # seed 001's --lw-mix: logit terms on x and x_aug, the feature term on x; a mixing --da in replace mode
    assert train(digits, tmp_path / "lw", *BASE, *RESNET, *method_args("at", teacher), "--kd-weight", "0.9",
                 "--da", "cutmix", "--lw-mix", "1,0,1") == 0
    assert train(digits, tmp_path / "mixup", *BASE, *RESNET, *method_args("cc", teacher), "--da", "mixup") == 0
    for run in ("lw", "mixup"):
        assert np.isfinite(read_csv(tmp_path / run / "train.csv").loss).all(), run
    # channels_last: other convolution kernels (and the side modules NHWC too), the same results up to rounding
    assert train(digits, tmp_path / "nchw", *BASE, *RESNET, *method_args("fitnet", teacher)) == 0
    assert train(digits, tmp_path / "nhwc", *BASE, *RESNET, *method_args("fitnet", teacher), "--channels-last") == 0
    # (the hint stage, then the first step after it: later, rounding differences grow with the training)
    for name, rows in (("train", 2), ("test", 2)):
        np.testing.assert_allclose(read_csv(tmp_path / "nhwc" / f"{name}.csv").loss[:rows],
                                   read_csv(tmp_path / "nchw" / f"{name}.csv").loss[:rows], rtol=1e-3, err_msg=name)


def test_a_run_without_a_feature_method_installs_no_hook(digits: Path, teachers: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    installed: list[str] = []
    for name in ("register_forward_hook", "register_forward_pre_hook"):
        original = getattr(torch.nn.Module, name)

        def spy(self: torch.nn.Module, *args, _original=original, _name=name, **kwargs):
            installed.append(f"{_name} on {type(self).__name__}")
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.nn.Module, name, spy)
    assert train(digits, tmp_path / "kd", *BASE, *RESNET, "--method", "kd", "--teacher", str(teachers["resnet"]),
                 "--epochs", "1") == 0
    assert installed == []
    removed: list[int] = []
    remove = torch.utils.hooks.RemovableHandle.remove
    monkeypatch.setattr(torch.utils.hooks.RemovableHandle, "remove",
                        lambda self: (removed.append(self.id), remove(self))[1])
    assert train(digits, tmp_path / "at", *BASE, *RESNET, *method_args("at", teachers["resnet"])) == 0
    assert installed and len(removed) == len(installed)  # a feature method's run installs them, and removes them


def test_a_resume_with_other_layers_or_another_method_is_refused(digits: Path, teachers: dict[str, Path],
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "at"
    args = [*BASE, *RESNET, *method_args("at", teachers["resnet"])]
    assert train(digits, out, *args) == 0
    rows = read_csv(out / "test.csv")
    for extra, expected in [(["--student-features", "feat[1]"], "--student-features"),
                            (["--feature-weight", "10"], "--feature-weight"),
                            (["--method", "nst"], "--method")]:
        capsys.readouterr()
        assert train(digits, out, *args, *extra, "--resume") == 2
        err = capsys.readouterr().err
        assert "was trained with other settings" in err and expected in err, err
    pd.testing.assert_frame_equal(read_csv(out / "test.csv"), rows)  # nothing written


# --------------------------------------------------------------------------- preemption in either stage

def sigterm_in_epoch(cmd: list[str], out: Path, epoch: int) -> None:
    """Run ``cmd`` and SIGTERM it once train.csv has 3 rows of ``epoch``; it must stop mid-epoch."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    wait_for_train_rows(out, epoch=epoch, rows=3, proc=proc)
    for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGCONT):  # frozen while the signal is queued
        os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    state = torch.load(out / "checkpoint.pth.tar", weights_only=False, map_location="cpu")["train_state"]
    assert state["epoch"] == epoch and 0 < state["step"] < 15, state


def test_sigterm_in_the_hint_stage_and_after_it_resumes_to_the_same_weights_and_csvs(
        mnist_small: Path, teachers: dict[str, Path], tmp_path: Path) -> None:
    # 300 samples, batch 20: 15 steps per epoch; epoch 0 is FitNet's hint stage, epoch 1 the training after it
    args = [*BASE, *RESNET, "--batch-size", "20", "--workers", "2", "--print-freq", "1",
            *method_args("fitnet", teachers["resnet"], init=1)]
    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *args) == 0
    stopped = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "cg_train", str(mnist_small), "--output-dir", str(stopped), *args]
    sigterm_in_epoch(cmd, stopped, epoch=0)  # in the hint stage
    sigterm_in_epoch([*cmd, "--resume"], stopped, epoch=1)  # resumed into the stage, stopped after it
    assert train(mnist_small, stopped, *args, "--resume") == 0
    assert_same_csvs(reference, stopped)
    final = [torch.load(run / "checkpoint.pth.tar", weights_only=False, map_location="cpu")
             for run in (reference, stopped)]
    for key, value in final[0]["state_dict"].items():
        torch.testing.assert_close(final[1]["state_dict"][key], value, rtol=0, atol=0, msg=key)
    for key, value in side_state(reference).items():
        torch.testing.assert_close(side_state(stopped)[key], value, rtol=0, atol=0, msg=key)
    for part in ("main", "init_stage"):  # both optimizers, momentum buffers included
        a, b = (ckpt["optimizer"][part]["state"] for ckpt in final)
        assert a.keys() == b.keys() and all(torch.equal(a[i]["momentum_buffer"], b[i]["momentum_buffer"]) for i in a)
    assert final[1]["scheduler"]["held"] == 1
    assert not pd.isna(read_csv(stopped / "test.csv").acc1).any()
