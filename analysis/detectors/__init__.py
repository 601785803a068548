"""Noise detectors (seed 002): each scores every training sample, higher = more likely mislabeled.

A detector is one module here plus one ``@DETECTORS.register`` line (the registry is
:mod:`.registry`, which the detector modules import); it is a function
``Dynamics -> float [N]`` (see :mod:`.dynamics`), reading a run's files only.
``cg-analyze noise RUN_DIR`` runs all of them that it has the inputs for.
"""
from __future__ import annotations

from . import aum, confident_learning, forgetting, lstm, mean_loss  # noqa: F401  (register)
from .dynamics import Dynamics, load_dynamics
from .registry import DETECTORS, Detector, usable_detectors

__all__ = ["DETECTORS", "Detector", "Dynamics", "load_dynamics", "usable_detectors"]
