"""Confident learning (Northcutt et al. 2021) through the ``cleanlab`` library, in two columns.

- ``confident_learning``: the predicted probabilities are the path logs' per-epoch predictions
  averaged over training (``Dynamics.probs``). With ``--paths`` (training passes) each epoch's
  prediction is made before that epoch's step on the sample, but the model has seen it in earlier
  epochs: these are *not* out-of-sample probabilities.
- ``confident_learning_oos``: cleanlab's own recommendation, K-fold cross-validated probabilities
  (``Dynamics.oos_probs``: each sample predicted by the final model of a run that never trained on
  it; ``cg-launch kfold``, merged by ``cg-analyze kfold``, given as ``cg-analyze noise --oos``).

The score is 1 - cleanlab's label quality (self-confidence); the flagged set is
``cleanlab.filter.find_label_issues``.
"""
from __future__ import annotations

import numpy as np

from cg_train.errors import CgTrainError

from .registry import DETECTORS
from .dynamics import Dynamics


def normalized(probs: np.ndarray) -> np.ndarray:
    probs = np.clip(probs, 1e-12, None)
    return probs / probs.sum(axis=1, keepdims=True)


@DETECTORS.register("confident_learning", help="1 - cleanlab's label quality on the epoch-averaged predictions")
def confident_learning(dyn: Dynamics) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    return 1.0 - get_label_quality_scores(dyn.observed, normalized(dyn.probs))


def out_of_sample(dyn: Dynamics) -> np.ndarray:
    if dyn.oos_probs is None:
        raise CgTrainError("confident_learning_oos needs K-fold out-of-sample predictions: cg-analyze noise RUN_DIR "
                           "--oos KFOLD_DIR (a `cg-launch kfold` launch of the same labels)")
    return dyn.oos_probs


@DETECTORS.register("confident_learning_oos", help="1 - cleanlab's label quality on K-fold out-of-sample "
                    "predictions (cg-analyze noise --oos KFOLD_DIR)")
def confident_learning_oos(dyn: Dynamics) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    return 1.0 - get_label_quality_scores(dyn.observed, out_of_sample(dyn))


confident_learning_oos.needs = "oos_probs"  # type: ignore[attr-defined]  (see usable_detectors)


def flagged(dyn: Dynamics, out_of_sample_probs: bool = False) -> np.ndarray:
    """bool [N]: cleanlab's ``find_label_issues`` (prune by noise rate) on the same probabilities."""
    from cleanlab.filter import find_label_issues

    if out_of_sample_probs:
        return find_label_issues(dyn.observed, out_of_sample(dyn))
    return find_label_issues(dyn.observed, normalized(dyn.probs))
