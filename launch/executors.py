"""submitit executors built from LaunchOptions, checked against the cluster before anything is submitted."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import submitit

from . import LaunchError
from .options import LaunchOptions

#: submitit's array throttle when --parallelism is not given (SLURM's own default limit is higher)
ALL_AT_ONCE = 256
#: How often a local launch looks for a finished point before starting the next one (seconds).
LOCAL_POLL_S = 1.0


def slurm_partitions() -> tuple[list[str], Optional[str]]:
    """(partition names, the default one or None) from ``sinfo``."""
    result = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise LaunchError(f"sinfo failed, is SLURM reachable? {(result.stderr.strip().splitlines() or [''])[0]}")
    names = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    default = next((n.rstrip("*") for n in names if n.endswith("*")), None)
    return sorted({n.rstrip("*") for n in names}), default


def check_slurm(opts: LaunchOptions) -> None:
    """SLURM's commands exist and the partition does: refused here rather than by sbatch, half-way through."""
    missing = [cmd for cmd in ("sbatch", "srun", "sinfo", "squeue") if shutil.which(cmd) is None]
    if missing:
        raise LaunchError(f"{', '.join(missing)} not found: --executor slurm runs where SLURM's commands work "
                          f"(a login node); on this machine use --executor local")
    partitions, default = slurm_partitions()
    if opts.partition is None and default is None:
        raise LaunchError(f"no --partition given and the cluster has no default partition: add --partition, "
                          f"one of {', '.join(partitions)}")
    for name in (opts.partition or "").split(","):
        if name and name not in partitions:
            raise LaunchError(f"partition {name!r} does not exist on this cluster: use one of "
                              f"{', '.join(partitions)}")


def make_executor(opts: LaunchOptions, folder: Path, job_name: str) -> submitit.Executor:
    """The executor for ``opts.executor`` with every resource option applied."""
    if opts.executor == "slurm":
        executor = submitit.SlurmExecutor(folder, max_num_timeout=opts.max_requeues)
        params = dict(job_name=opts.job_name or job_name, time=opts.time, nodes=opts.nodes,
                      ntasks_per_node=opts.processes_per_node, signal_delay_s=opts.signal_delay,
                      array_parallelism=opts.parallelism or ALL_AT_ONCE, partition=opts.partition,
                      gpus_per_node=opts.gpus_per_node or None, cpus_per_task=opts.cpus_per_task,
                      mem=f"{round(opts.mem_gb * 1024)}M" if opts.mem_gb else None, setup=opts.setup or None,
                      additional_parameters=opts.sbatch_options() or None)
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return executor
    if opts.executor == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=opts.max_requeues)
        executor.update_parameters(timeout_min=opts.time, tasks_per_node=opts.processes_per_node,
                                   gpus_per_node=opts.gpus_per_node, signal_delay_s=opts.signal_delay,
                                   **({"setup": opts.setup} if opts.setup else {}))
        return executor
    return submitit.DebugExecutor(folder)


def submit_all(executor: submitit.Executor, opts: LaunchOptions, calls: list[Callable[[], object]],
               on_submit: Callable[[int, submitit.Job], None]) -> None:
    """Submit every call; ``on_submit(i, job)`` records each job as soon as it exists.

    slurm: one job array (throttled to --parallelism) and return. local: start at most
    --parallelism processes at a time and wait for all of them. debug: run each call here,
    one after the other.
    """
    if opts.executor == "slurm":
        with executor.batch():
            jobs = [executor.submit(call) for call in calls]
        for i, job in enumerate(jobs):
            on_submit(i, job)
        return
    limit = (opts.parallelism or len(calls)) if opts.executor == "local" else 1
    running: list[submitit.Job] = []
    for i, call in enumerate(calls):
        while len(running) >= limit:
            running = [job for job in running if not job.done()]
            if len(running) >= limit:
                time.sleep(LOCAL_POLL_S)
        job = executor.submit(call)
        on_submit(i, job)
        if opts.executor == "debug":
            job.result()  # runs it now, in this process (submitit opens pdb on an error)
        running.append(job)
    for job in running:
        job.wait()
