"""Checkpoints as single files written atomically, with the RNG state of every process."""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CgTrainError
from ..io import atomic_path

LATEST = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"
INITIAL = "initial_state.pth.tar"


def save(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
