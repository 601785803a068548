"""Noise detectors (seed 002): each scores every training sample, higher = more likely mislabeled.

A detector is one module here plus one ``@DETECTORS.register`` line; it is a
function ``Dynamics -> float [N]`` (see :mod:`.dynamics`), reading a run's files
only. ``cg-analyze noise RUN_DIR`` runs all of them that it has the inputs for.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from cg_train.registry import Registry

from .dynamics import Dynamics, load_dynamics

Detector = Callable[[Dynamics], np.ndarray]
DETECTORS: Registry[Detector] = Registry("noise detector", "cg-analyze noise --detectors")

from . import aum, confident_learning, forgetting, lstm, mean_loss  # noqa: E402,F401  (register)


def usable_detectors(dyn: Dynamics) -> list[str]:
    """Every detector whose inputs ``dyn`` has: a detector that needs more than the path logs names the
    ``Dynamics`` attribute in its ``needs`` (``confident_learning_oos``: ``oos_probs``, from ``--oos``)."""
    return [name for name in DETECTORS.names()
            if getattr(dyn, getattr(DETECTORS.get(name), "needs", "probs"), None) is not None]


__all__ = ["DETECTORS", "Detector", "Dynamics", "load_dynamics", "usable_detectors"]
