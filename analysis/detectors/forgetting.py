"""Forgetting events (Toneva et al. 2019): how often a sample goes from classified-as-its-label to not.

A sample never classified as its observed label counts as forgotten at every epoch (Toneva et al. treat it as
infinitely forgettable), so it ranks above every sample that was learned at least once.
"""
from __future__ import annotations

import numpy as np

from .registry import DETECTORS
from .dynamics import Dynamics


@DETECTORS.register("forgetting", help="forgetting events (learned -> misclassified), never-learned samples "
                    "first, Toneva et al.")
def forgetting(dyn: Dynamics) -> np.ndarray:
    correct = dyn.column("correct") > 0.5
    events = (correct[:, :-1] & ~correct[:, 1:]).sum(axis=1).astype(np.float64)
    never = ~correct.any(axis=1)
    # tie-break by the fraction of epochs misclassified, so equal counts are still ordered
    wrong = 1.0 - correct.mean(axis=1)
    return np.where(never, correct.shape[1] + 1.0, events) + wrong
