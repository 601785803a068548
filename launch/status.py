"""The state of every point of a launch: pending, running, done, failed, preempted (or not submitted).

Two sources, both cheap: the scheduler's live queue (``squeue`` for SLURM, the process
table for local jobs; never ``sacct``, which needs an accounting database many
clusters lack) and the files of each point (its latest checkpoint, read lazily with
mmap, and submitit's result and stderr files).
"""
from __future__ import annotations

import getpass
import os
import pickle
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from submitit.core.utils import JobPaths

from cg_train.engine import checkpoint

from . import LaunchError
from .records import JobRecord, LaunchDir

STATES = ("pending", "running", "done", "failed", "preempted", "not submitted")
#: squeue states of a job that is still in the scheduler's hands.
QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "STOPPED"}
STDERR_TAIL = 15


@dataclass
class Progress:
    """What the latest checkpoint says about a run."""
    epoch: int
    step: int
    evaluated_epoch: int
    epochs: int
    stopped_by: list[str]

    @property
    def finished(self) -> bool:
        return self.epoch >= self.epochs and self.evaluated_epoch >= self.epochs

    def __str__(self) -> str:
        text = f"epoch {self.epoch}/{self.epochs}"
        return text + (f" step {self.step}" if self.step else "")


@dataclass
class PointStatus:
    name: str
    state: str
    job: Optional[JobRecord] = None
    progress: Optional[Progress] = None
    detail: str = ""  # the scheduler's reason, the stop signal, or why it failed
    stderr_tail: list[str] = field(default_factory=list)
    alive: bool = False  # its job is queued or running: re-submitting leaves it alone


def read_progress(run_dir: Path) -> Optional[Progress]:
    path = run_dir / checkpoint.LATEST
    if not path.is_file():
        return None
    try:  # mmap: the tensors are not read, so this stays fast for ImageNet-sized checkpoints
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # being replaced right now, or not a checkpoint: no progress to report
        return None
    train = state.get("train_state", {})
    return Progress(train.get("epoch", 0), train.get("step", 0), train.get("evaluated_epoch", -1),
                    int(state.get("config", {}).get("train", {}).get("epochs", 0)), list(state.get("stopped_by", [])))


def slurm_queue() -> dict[str, tuple[str, str]]:
    """Job id (``123`` or ``123_4`` for array tasks) -> (state, reason) of this user's jobs in the queue."""
    if shutil.which("squeue") is None:
        raise LaunchError("squeue not found: run cg-launch status where SLURM's commands work (a login node)")
    result = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise LaunchError(f"squeue failed: {(result.stderr.strip().splitlines() or ['no message'])[0]}")
    jobs = {}
    for line in result.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        jobs[job_id.strip()] = (state.strip(), reason.strip())
    return jobs


def local_process_alive(job_id: str) -> bool:
    """submitit's local jobs are identified by the pid of their controller process."""
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
        stat = Path(f"/proc/{int(job_id)}/stat").read_text()
    except (OSError, ValueError):
        return False
    return b"submitit.local._local" in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z"


def submitit_result(launch: LaunchDir, job_id: str) -> Optional[tuple[str, Any]]:
    """("success", value) or ("error", traceback) once rank 0 of the job has finished; None before."""
    path = JobPaths(launch.submitit, job_id, 0).result_pickle
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        return None


def stderr_tail(launch: LaunchDir, job_id: str, lines: int = STDERR_TAIL) -> list[str]:
    path = JobPaths(launch.submitit, job_id, 0).stderr
    if not path.is_file():
        return []
    with open(path, "rb") as f:
        f.seek(max(os.fstat(f.fileno()).st_size - 64 * 1024, 0))
        text = f.read().decode("utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip()][-lines:]


def point_status(launch: LaunchDir, name: str, job: Optional[JobRecord],
                 queue: dict[str, tuple[str, str]]) -> PointStatus:
    progress = read_progress(launch.run_dir(name))
    status = PointStatus(name, "not submitted", job, progress)
    if progress is not None and progress.finished:
        status.state = "done"
        return status
    if job is None:
        return status
    stopped = ", ".join(progress.stopped_by) if progress is not None and progress.stopped_by else ""
    if job.executor == "slurm" and job.job_id in queue:
        state, reason = queue[job.job_id]
        if state in RUNNING and not (stopped and state == "COMPLETING"):
            status.state, status.detail, status.alive = "running", state.lower(), True
            return status
        if state in QUEUED or state == "COMPLETING":
            status.state = "preempted" if stopped else "pending"
            status.detail = f"stopped by {stopped}, requeued: {state.lower()} ({reason})" if stopped else reason
            status.alive = True
            return status
    if job.executor == "local" and local_process_alive(job.job_id):  # submitit restarts a requeued task itself
        status.state, status.alive = "running", True
        status.detail = f"restarted after {stopped}" if stopped else ""
        return status
    result = submitit_result(launch, job.job_id)
    errored = result is not None and result[0] == "error"
    if errored or not stopped:
        status.state = "failed"
        status.detail = "the job raised an error" if errored else "the job ended without finishing"
        status.stderr_tail = stderr_tail(launch, job.job_id)
    else:
        status.state, status.detail = "preempted", f"stopped by {stopped}, not requeued: re-submit to continue"
    return status


def launch_status(launch: LaunchDir) -> list[PointStatus]:
    """Every point ever submitted to ``launch`` (in submission order), with its current state."""
    if not launch.exists():
        raise LaunchError(f"{launch.root} is not a cg-launch directory (no .launch/points.yaml): give the "
                          f"directory a sweep or run was submitted to")
    jobs = launch.latest_jobs()
    queue = slurm_queue() if any(j.executor == "slurm" for j in jobs.values()) else {}
    return [point_status(launch, name, jobs.get(name), queue) for name in launch.read_points()]


def format_status(statuses: list[PointStatus]) -> str:
    width = max([len(s.name) for s in statuses] + [5])
    lines = [f"{'POINT':<{width}}  {'STATE':<13}  {'JOB':<14}  {'PROGRESS':<22}  DETAIL"]
    for s in statuses:
        job = s.job.job_id if s.job else "-"
        lines.append(f"{s.name:<{width}}  {s.state:<13}  {job:<14}  {str(s.progress or '-'):<22}  {s.detail}".rstrip())
        lines += [f"    | {line}" for line in s.stderr_tail]
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items() if n))
    return "\n".join(lines)
