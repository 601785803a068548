"""The noise-detector registry, below the detector modules that fill it (they import this, never the package)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from cg_train.registry import Registry

from .dynamics import Dynamics

Detector = Callable[[Dynamics], np.ndarray]
DETECTORS: Registry[Detector] = Registry("noise detector", "cg-analyze noise --detectors")


def usable_detectors(dyn: Dynamics) -> list[str]:
    """Every detector whose inputs ``dyn`` has: a detector that needs more than the path logs names the
    ``Dynamics`` attribute in its ``needs`` (``confident_learning_oos``: ``oos_probs``, from ``--oos``)."""
    return [name for name in DETECTORS.names()
            if getattr(dyn, getattr(DETECTORS.get(name), "needs", "probs"), None) is not None]
