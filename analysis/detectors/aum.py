"""AUM (Pleiss et al. 2020, "area under the margin"): the observed label's logit minus the largest other
logit, averaged over training; a mislabeled sample's margin stays negative, so the score is -AUM."""
from __future__ import annotations

import numpy as np

from .registry import DETECTORS
from .dynamics import Dynamics


@DETECTORS.register("aum", help="minus the area under the margin (observed logit - largest other), Pleiss et al.")
def aum(dyn: Dynamics) -> np.ndarray:
    return -dyn.column("margin").mean(axis=1).astype(np.float64)
