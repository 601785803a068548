"""Checkpoints as single files written atomically, with the RNG state of every process."""
from __future__ import annotations

import io
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, flag_name, to_dict
from ..errors import CgTrainError
from ..io import atomic_path, atomic_write_bytes
from ..optim import scheduler_name

LATEST = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"
INITIAL = "initial_state.pth.tar"

#: Config keys a resumed run may change: they decide neither which samples a step sees nor the model's
#: trajectory (docs/preemption.md lists them). ``train.epochs`` may grow too unless the schedule is cosine.
MAY_CHANGE = ("data.dir", "data.workers", "data.dali_threads", "data.dali_prefetch", "data.listing_cache",
              "speed.dali_readers", "speed.keep_freed_memory",
              "train.print_freq", "train.progress", "train.cpu", "output.dir", "output.resume",
              "supervision.accept_weak_targets", "output.log_with", "output.tracker_project")


def save(path: Path, state: dict[str, Any]) -> None:
    """Serialised in memory first: a full disk then fails in a plain write that knows the size it needed."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def load(path: Path, what: str = "--resume") -> dict[str, Any]:
    """The checkpoint at ``path``; ``what`` names the flag or command in the one-line error."""
    if not path.is_file():
        raise CgTrainError(f"{what}: checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise CgTrainError(f"{what}: {path} is not a readable cg-train checkpoint ({exc})") from None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def plan_changes(saved: dict[str, Any], cfg: Config, saved_world: int, world: int, batchnorm: bool) -> list[str]:
    """What differs between a checkpoint's config and ``cfg`` that would replay another plan, one item a key.

    Keys unknown to either side (a checkpoint of an older version) are not compared. The
    number of processes matters only for a model with BatchNorm (per-process statistics);
    otherwise it changes the summation order, not the plan.
    """
    may_change = set(MAY_CHANGE) | ({"train.epochs"} if scheduler_name(cfg) != "cosine" else set())
    now = to_dict(cfg)
    changes = [f"{flag_name(f'{section}.{key}')} {old!r} -> {now[section][key]!r}"
               for section, values in saved.items() if section in now
               for key, old in values.items()
               if key in now[section] and f"{section}.{key}" not in may_change and old != now[section][key]]
    if batchnorm and saved_world != world:
        changes.append(f"number of processes {saved_world} -> {world} (the model has BatchNorm)")
    return changes
