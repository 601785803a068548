"""cg-launch against a real SLURM cluster: the one-node cluster of launch/local_slurm.sh (slurmctld, slurmd,
munge), started once for these tests and stopped afterwards.

A 4-point job array throttled to 2, with failing points (their stderr in `cg-launch status`) re-submitted
without touching the finished ones; a 2-task job (one process per "GPU", rank and world size from SLURM)
preempted mid-epoch (every process of the step signalled, DataLoader workers included), requeued by
submitit and resumed to the same CSVs as an uninterrupted run.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from conftest import CPU_ENV, FAST, REPO, accelerate_command, assert_same_csvs, make_subset, read_csv
from launch.cli import main as launch_main
from launch.records import LaunchDir
from launch.status import PointStatus, format_status, launch_status

pytestmark = pytest.mark.xdist_group("slurm")  # one cluster per test session: all these tests on one worker

SCRIPT = REPO / "launch" / "local_slurm.sh"
CPU_JOB = ["--executor", "slurm", "--gpus-per-node", "0", "--time", "15"]
#: what conftest.accelerate_launch passes: 2 CPU processes (gloo) on this machine
CPU_LAUNCH = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SLURM_CONF of a running one-node cluster. Never installs anything: a test worker must not run apt-get
    (two workers raced for dpkg's lock); `make test` installs the packages once, before pytest."""
    missing = [c for c in ("slurmctld", "slurmd", "sbatch", "munged", "mungekey") if shutil.which(c) is None]
    if missing:
        how = ("run `make test`, or `launch/system_packages.sh slurm`, to install them first" if os.geteuid() == 0
               else "installing them needs root: `sudo launch/system_packages.sh slurm`")
        pytest.skip(f"SLURM/munge are not installed ({', '.join(missing)} not found): {how}")
    root = tmp_path_factory.mktemp("slurm")
    # without conftest's OMP_NUM_THREADS=1: the script sizes the node with nproc, which honours it
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    started = subprocess.run([str(SCRIPT), "start", str(root)], capture_output=True, text=True, timeout=900,
                             env=env)
    assert started.returncode == 0, f"{SCRIPT} start failed:\n{started.stderr}"
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(root / "slurm.conf")
    try:
        yield os.environ["SLURM_CONF"]
    finally:
        subprocess.run([str(SCRIPT), "stop", str(root)], timeout=120)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


def wait_until_settled(out: Path, running_at_most: int = 0) -> list[PointStatus]:
    """Poll `cg-launch status` until no job is queued or running; optionally check the array throttle."""
    while True:
        statuses = launch_status(LaunchDir(out))
        if running_at_most:
            assert sum(s.state == "running" for s in statuses) <= running_at_most, format_status(statuses)
        if not any(s.alive for s in statuses):
            return statuses
        time.sleep(1)


def scontrol_job(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout


def wait_for_job(job_id: str) -> str:
    """The final JobState of a plain sbatch job (polled quickly; `sbatch --wait` backs off to 10 s)."""
    while True:
        state = scontrol_job(job_id).split("JobState=", 1)[1].split()[0]
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return state
        time.sleep(0.5)


def test_missing_partition_is_refused_before_submitting(slurm_cluster: str, mnist_small: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", *CPU_JOB, "--partition", "gpu", "--", str(mnist_small), "--output-dir", str(tmp_path / "run")]
    assert launch_main(args) == 2
    assert "partition 'gpu' does not exist on this cluster: use one of debug" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_array_of_four_with_parallelism_two_and_resubmission(slurm_cluster: str, mnist_small: Path,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    good, flaky = mnist_small, make_subset(mnist_small, tmp_path / "flaky", 30, 10)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"""\
base:
  data: {{workers: 0, batch_size: 32, sample_size: 40}}
  model: {{arch: simple_cnn}}
  train: {{epochs: 1, progress: false}}
axes:
  data.dir: [{good}, {flaky}]
  train.seed: [0, 1]
launch:
  parallelism: 2
""")
    out = tmp_path / "sweep"
    assert launch_main(["sweep", str(sweep), "--dir", str(out), *CPU_JOB]) == 0
    jobs = LaunchDir(out).latest_jobs()
    assert len(jobs) == 4 and len({j.job_id.split("_")[0] for j in jobs.values()}) == 1  # one array
    assert "ArrayTaskThrottle=2" in scontrol_job(next(iter(jobs.values())).job_id.split("_")[0])
    shutil.rmtree(flaky)  # the last two points start after the first two, and fail

    statuses = wait_until_settled(out, running_at_most=2)
    assert [s.state for s in statuses] == ["done", "done", "failed", "failed"], format_status(statuses)
    assert f"    | cg_train.errors.DataError: data directory {flaky} does not exist" in format_status(statuses)

    before = {p: p.read_bytes() for s in statuses[:2] for p in (out / s.name).iterdir() if p.is_file()}
    make_subset(mnist_small, flaky, 30, 10)
    capsys.readouterr()
    assert launch_main(["sweep", str(sweep), "--dir", str(out), *CPU_JOB]) == 0
    printed = capsys.readouterr().out
    assert printed.count("done, left alone") == 2 and printed.count("submitted as slurm job") == 2, printed
    statuses = wait_until_settled(out, running_at_most=2)
    assert [s.state for s in statuses] == ["done"] * 4, format_status(statuses)
    assert {p: p.read_bytes() for p in before} == before  # the finished points were not touched


def test_two_task_job_preempted_mid_epoch_is_requeued_and_resumes_exactly(
        slurm_cluster: str, mnist_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic as the accelerate-launched reference
    args = [*FAST, "--epochs", "2", "--corrupt-fraction", "0.5", "--sample-size", "40", "--print-freq", "1",
            "--batch-size", "10", "--seed", "11"]
    # the uninterrupted 2-process reference runs while SLURM schedules, preempts and requeues the job below
    # (those waits leave the CPUs idle); it is waited for, and must have succeeded, before the comparison
    reference = tmp_path / "reference"
    with open(tmp_path / "reference.out", "w") as ref_out:
        ref = subprocess.Popen(accelerate_command(*CPU_LAUNCH, "-m", "cg_train", str(mnist_small), "--output-dir",
                                                  str(reference), *args),
                               cwd=REPO, env={**os.environ, **CPU_ENV}, stdout=ref_out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        preempt_requeue_and_finish(mnist_small, tmp_path / "run", args, reference, ref)
    finally:
        if ref.poll() is None:  # the test failed first: no launcher or rank left behind
            os.killpg(ref.pid, signal.SIGKILL)
            ref.wait()


def preempt_requeue_and_finish(mnist_small: Path, out: Path, args: list[str], reference: Path,
                               ref: subprocess.Popen) -> None:
    # with DataLoader workers: scancel signals every process of the step, the workers included
    assert launch_main(["run", *CPU_JOB, "--tasks-per-node", "2", "--", str(mnist_small), "--output-dir",
                        str(out), *args, "--workers", "2"]) == 0
    job_id = LaunchDir(out).latest_job(".").job_id
    while not (out / "train.csv").exists() or (read_csv(out / "train.csv").epoch == 0).sum() < 3:
        assert launch_status(LaunchDir(out))[0].alive, format_status(launch_status(LaunchDir(out)))
        time.sleep(0.1)
    # what submitit's job._interrupt() sends (SIGTERM, then its USR2), while the tasks are frozen, so the
    # stop lands a few steps into epoch 0 whatever the machine's speed
    for sig in ("STOP", "TERM", "USR2", "CONT"):
        subprocess.run(["scancel", f"--signal={sig}", job_id], check=True)
    while not ("Restarts=1" in (job := scontrol_job(job_id)) and "JobState=PENDING" in job):
        time.sleep(0.2)
    subprocess.run(["scontrol", "hold", job_id], check=True)  # requeued and pending: hold it to look at it
    preempted = launch_status(LaunchDir(out))[0]
    assert preempted.state == "preempted" and preempted.alive, format_status([preempted])
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False, map_location="cpu")
    assert ckpt["stopped_by"] and len(ckpt["ranks"]) == 2  # both ranks' RNG and recorder states
    step = ckpt["train_state"]["step"]
    assert ckpt["train_state"]["epoch"] == 0 and 0 < step < 30, ckpt["train_state"]
    subprocess.run(["scontrol", "release", job_id], check=True)

    final = wait_until_settled(out)[0]
    assert final.state == "done", format_status([final])
    assert ref.wait(timeout=600) == 0, (reference.parent / "reference.out").read_text()[-3000:]
    assert_same_csvs(reference, out)
    log = (out / "log.txt").read_text()
    assert "2 process(es) on cpu" in log and f"0 epoch(s) and {step} step(s) trained" in log


def test_plain_sbatch_multinode_script_hands_slurm_variables_to_accelerate(slurm_cluster: str, mnist_small: Path,
                                                                           tmp_path: Path) -> None:
    """launch/slurm/accelerate_multinode.sbatch on this one-node cluster, 2 CPU processes per node."""
    out = tmp_path / "run"
    env = {**os.environ, "PROCESSES_PER_NODE": "2", "CG_TRAIN_REPO": str(REPO), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    job_id = subprocess.run(["sbatch", "--parsable", "--cpus-per-task", "2", "--chdir", str(tmp_path),
                             str(REPO / "launch" / "slurm" / "accelerate_multinode.sbatch"), str(mnist_small), *FAST,
                             "--epochs", "1", "--sample-size", "40", "--cpu", "--output-dir", str(out)],
                            env=env, capture_output=True, text=True, check=True).stdout.strip()
    state = wait_for_job(job_id)
    assert state == "COMPLETED", (tmp_path / f"cg-train-{job_id}.out").read_text()[-3000:]
    assert "2 process(es) on cpu" in (out / "log.txt").read_text()
    assert read_csv(out / "test.csv").epoch.tolist() == [0, 1]
