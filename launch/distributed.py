"""Hand a submitit job's tasks to torch.distributed through accelerate: one task per GPU, env:// variables.

srun (or submitit's local executor) starts every process; each one learns its place
from the scheduler (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_JOB_NODELIST) and
exports RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT, which
``Accelerator()`` reads as it would under ``accelerate launch`` or torchrun.
"""
from __future__ import annotations

import os
import zlib

from submitit import JobEnvironment

#: Rendezvous ports are taken from [PORT_BASE, PORT_BASE + PORT_SPAN) by job id, so jobs sharing a node differ.
PORT_BASE, PORT_SPAN = 20000, 20000


def rendezvous_port(job_id: str) -> int:
    return PORT_BASE + zlib.crc32(job_id.encode()) % PORT_SPAN


def distributed_env(env: JobEnvironment) -> dict[str, str]:
    """torch.distributed's environment for this task; empty for a single-task job (nothing to set up)."""
    if env.num_tasks == 1:
        return {}
    return {
        "RANK": str(env.global_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_RANK": str(env.local_rank),
        "LOCAL_WORLD_SIZE": str(env.num_tasks // env.num_nodes),
        "MASTER_ADDR": os.environ.get("MASTER_ADDR") or env.hostnames[0],
        "MASTER_PORT": os.environ.get("MASTER_PORT") or str(rendezvous_port(env.raw_job_id)),
    }
