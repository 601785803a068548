"""Mean training loss over epochs: mislabeled samples stay hard to fit (the classic small-loss criterion)."""
from __future__ import annotations

import numpy as np

from .registry import DETECTORS
from .dynamics import Dynamics


@DETECTORS.register("mean_loss", help="cross-entropy on the observed label, averaged over epochs")
def mean_loss(dyn: Dynamics) -> np.ndarray:
    return dyn.column("loss").mean(axis=1).astype(np.float64)
