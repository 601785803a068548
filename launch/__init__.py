"""cg-launch: training runs and sweeps as submitit jobs (SLURM arrays, local processes), their status and analysis.

Nothing here trains: every job calls :func:`cg_train.engine.run`, the same function as
``cg-train`` and ``accelerate launch -m cg_train``.
"""
from cg_train.errors import CgTrainError


class LaunchError(CgTrainError):
    """A launch cannot go ahead (no such partition, scheduler unreachable, ...): one line, nothing submitted."""
