"""How jobs are run: executor, SLURM resources, array parallelism. One dataclass for flags and sweep files.

The same fields are ``cg-launch`` flags (``--gpus-per-node 8``) and keys of a sweep
file's ``launch:`` section (``gpus_per_node: 8``); flags win over the file.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from cg_train.cli import field_type
from cg_train.errors import ConfigError

EXECUTORS = ("slurm", "local", "debug")


@dataclass
class LaunchOptions:
    executor: str = field(default="slurm", metadata={"help": "slurm: sbatch job arrays; local: processes on this "
                          "machine (at most --parallelism at once, cg-launch waits); debug: in this process, "
                          "one point after the other", "choices": EXECUTORS})
    partition: Optional[str] = field(default=None, metadata={"help": "SLURM partition (default: the cluster's "
                                     "default partition)", "metavar": "NAME"})
    time: int = field(default=1440, metadata={"help": "time limit of one job in minutes; a run that needs "
                      "longer is checkpointed before the limit and requeued", "metavar": "MINUTES"})
    nodes: int = field(default=1, metadata={"help": "nodes per run (multi-node DDP: one task per GPU)", "metavar": "N"})
    gpus_per_node: int = field(default=1, metadata={"help": "GPUs per node (0 for CPU jobs)", "metavar": "N"})
    tasks_per_node: Optional[int] = field(default=None, metadata={"help": "processes per node (default: one per "
                                          "GPU, or 1 without GPUs)", "metavar": "N"})
    cpus_per_task: Optional[int] = field(default=None, metadata={"help": "CPU cores per process (data-loading "
                                         "workers + 1)", "metavar": "N"})
    mem_gb: Optional[float] = field(default=None, metadata={"help": "memory per node in GB", "metavar": "GB"})
    parallelism: Optional[int] = field(default=None, metadata={"help": "how many points run at once (the SLURM "
                                       "array throttle, slurm_array_parallelism; default: all)", "metavar": "N"})
    signal_delay: int = field(default=120, metadata={"help": "seconds before the time limit at which SIGUSR2 asks "
                              "the run to checkpoint and requeue", "metavar": "SECONDS"})
    max_requeues: int = field(default=10, metadata={"help": "how often a run may hit the time limit and be "
                              "requeued (preemptions do not count)", "metavar": "N"})
    job_name: Optional[str] = field(default=None, metadata={"help": "SLURM job name (default: cg-train-<dir>)", "metavar": "NAME"})
    setup: list[str] = field(default_factory=list, metadata={"help": "shell line run before the job, e.g. "
                             "'source ~/venv/bin/activate' (repeatable)", "repeat": True, "metavar": "LINE"})
    sbatch: list[str] = field(default_factory=list, metadata={"help": "any other sbatch option as KEY=VALUE, "
                              "e.g. account=myproj, qos=high, constraint=a100 (repeatable)", "repeat": True,
                              "metavar": "KEY=VALUE"})

    @property
    def processes_per_node(self) -> int:
        return self.tasks_per_node or max(self.gpus_per_node, 1)

    def sbatch_options(self) -> dict[str, str]:
        options = {}
        for item in self.sbatch:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--sbatch {item!r} must look like KEY=VALUE (e.g. account=myproj)")
            options[key.strip().lstrip("-")] = value
        return options


def value_type(f: dataclasses.Field) -> type:
    """int, float, str or list of a field (``Optional[X]`` is ``X``)."""
    kind = field_type(LaunchOptions, f.name)
    return typing.get_origin(kind) or kind


def add_launch_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per LaunchOptions field; unset flags stay absent so sweep-file values can fill them."""
    group = parser.add_argument_group("launch options (also the keys of a sweep file's launch: section)")
    for f in dataclasses.fields(LaunchOptions):
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f.metadata["help"]}
        if f.metadata.get("repeat"):
            kwargs["action"] = "append"
        else:
            kwargs["type"] = value_type(f)
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def resolve_options(flags: Mapping[str, Any], file_values: Mapping[str, Any], source: str) -> LaunchOptions:
    """Flags over the sweep file's ``launch:`` section over the defaults; unknown keys are one-line errors."""
    fields = {f.name: f for f in dataclasses.fields(LaunchOptions)}
    for key, value in file_values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source} unknown launch option {key!r}{hint}; see `cg-launch sweep --help`")
        if not fits(value, value_type(fields[key])):
            raise ConfigError(f"{source} {key}: {value!r} is not of type {value_type(fields[key]).__name__}")
    values = {**file_values, **{k: v for k, v in flags.items() if k in fields}}
    for key in (name for name, f in fields.items() if f.metadata.get("repeat")):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    opts = LaunchOptions(**values)
    check_options(opts)
    return opts


def fits(value: Any, kind: type) -> bool:
    """Whether a YAML value suits a field of type ``kind`` (an int is a float; one string is a list)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    return isinstance(value, kind) or (kind is float and isinstance(value, int)) or \
        (kind is list and isinstance(value, str))


def check_options(opts: LaunchOptions) -> None:
    if opts.executor not in EXECUTORS:
        raise ConfigError(f"executor {opts.executor!r} must be one of {', '.join(EXECUTORS)}")
    for name in ("time", "nodes", "tasks_per_node", "cpus_per_task", "parallelism"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    if opts.gpus_per_node < 0 or opts.signal_delay < 0 or opts.max_requeues < 0:
        raise ConfigError("--gpus-per-node, --signal-delay and --max-requeues cannot be negative")
    if opts.executor != "slurm" and opts.nodes > 1:
        raise ConfigError(f"--executor {opts.executor} runs on this machine only: use --nodes 1 or --executor slurm")
    opts.sbatch_options()
