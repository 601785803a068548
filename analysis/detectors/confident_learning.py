"""Confident learning (Northcutt et al. 2021) through the ``cleanlab`` library.

The predicted probabilities are the path logs' per-epoch predictions averaged over
training (``Dynamics.probs``). With ``--paths`` (training passes) each epoch's
prediction is made before that epoch's step on the sample, but the model has
seen it in earlier epochs: these are *not* cross-validated out-of-sample
probabilities, which cleanlab recommends. The score is 1 - cleanlab's label
quality (self-confidence); the flagged set is ``cleanlab.filter.find_label_issues``.
"""
from __future__ import annotations

import numpy as np

from . import DETECTORS
from .dynamics import Dynamics


def normalized(probs: np.ndarray) -> np.ndarray:
    probs = np.clip(probs, 1e-12, None)
    return probs / probs.sum(axis=1, keepdims=True)


@DETECTORS.register("confident_learning", help="1 - cleanlab's label quality on the epoch-averaged predictions")
def confident_learning(dyn: Dynamics) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    return 1.0 - get_label_quality_scores(dyn.observed, normalized(dyn.probs))


def flagged(dyn: Dynamics) -> np.ndarray:
    """bool [N]: cleanlab's ``find_label_issues`` (prune by noise rate) on the same probabilities."""
    from cleanlab.filter import find_label_issues

    return find_label_issues(dyn.observed, normalized(dyn.probs))
