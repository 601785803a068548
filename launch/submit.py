"""Submit points: check everything first, skip what is finished or queued, record every job.

Re-submitting is always safe: a finished point is skipped (its results are never touched),
a queued or running one is left alone, and every other point resumes from its latest
checkpoint (``output.resume=auto``). A point whose config differs from what was submitted
before is refused, so one directory never mixes two experiments.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cg_train.config import to_dict
from cg_train.engine.deepspeed_backend import read_deepspeed_config

from . import LaunchError
from .executors import check_slurm, make_executor, submit_all
from .job import TrainJob
from .options import LaunchOptions
from .records import HERE, LaunchDir
from .status import PointStatus, launch_status
from .sweep import Point

#: Config keys that may change between submissions of one point: where and how, not what, is trained.
MAY_CHANGE = {"output": None, "data": ("workers",), "train": ("progress",)}


def comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    kept = {}
    for section, values in cfg.items():
        drop = MAY_CHANGE.get(section, ())
        if drop is not None:
            kept[section] = {k: v for k, v in values.items() if k not in drop}
    return kept


def config_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """'optim.lr: 0.1 -> 0.05' for the first key that differs, '' when none does."""
    old, new = comparable(before), comparable(after)
    for section in sorted(set(old) | set(new)):
        for key in sorted(set(old.get(section, {})) | set(new.get(section, {}))):
            a, b = old.get(section, {}).get(key), new.get(section, {}).get(key)
            if a != b:
                return f"{section}.{key}: {a!r} -> {b!r}"
    return ""


def check_points(launch: LaunchDir, points: list[Point]) -> None:
    """Same configs as any earlier submission here, and datasets that exist (before anything is submitted)."""
    recorded = launch.read_points()
    for point in points:
        change = config_change(recorded[point.name], to_dict(point.cfg)) if point.name in recorded else ""
        if change:
            raise LaunchError(f"{launch.run_dir(point.name)} was submitted with another config ({change}): "
                              f"restore the sweep or give a new launch directory")
        for key, path in (("data.dir", point.cfg.data.dir), ("data.test_dir", point.cfg.data.test_dir)):
            if key == "data.dir" and not path:
                raise LaunchError(f"point {point.name}: no dataset given (set data.dir in the base config)")
            if path and not Path(path).is_dir():
                raise LaunchError(f"point {point.name}: {key} {path} does not exist on this machine")
        if point.cfg.train.deepspeed:
            read_deepspeed_config(point.cfg.train.deepspeed)


def plan(launch: LaunchDir, points: list[Point]) -> tuple[list[Point], list[PointStatus]]:
    """(points to submit, statuses of the points left alone)."""
    current = {s.name: s for s in launch_status(launch)} if launch.exists() else {}
    todo, kept = [], []
    for point in points:
        status = current.get(point.name)
        if status is not None and (status.state == "done" or status.alive):
            kept.append(status)
        else:
            todo.append(point)
    return todo, kept


def submit_points(launch: LaunchDir, points: list[Point], opts: LaunchOptions) -> int:
    """Check, then submit what needs to run; print one line per point. Returns the number submitted."""
    check_points(launch, points)
    if opts.executor == "slurm":
        check_slurm(opts)
    todo, kept = plan(launch, points)
    for status in kept:
        job = f" as job {status.job.job_id}" if status.job and status.state != "done" else ""
        print(f"{status.name}: {status.state}{job}, left alone")
    if not todo:
        print(f"nothing to submit in {launch.root}")
        return 0
    recorded = launch.read_points()
    launch.write_points({**recorded, **{p.name: to_dict(p.cfg) for p in points}})
    executor = make_executor(opts, launch.submitit, job_name=f"cg-train-{launch.root.name}")

    def record(i: int, job: Any) -> None:
        launch.add_jobs([(todo[i].name, str(job.job_id))], opts.executor)
        print(f"{todo[i].name}: submitted as {opts.executor} job {job.job_id} -> {launch.run_dir(todo[i].name)}")

    submit_all(executor, opts, [TrainJob(p.cfg) for p in todo], record)
    if points[0].name != HERE:
        print(f"follow it with: cg-launch status {launch.root}")
    return len(todo)
