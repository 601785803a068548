"""Seed 002's learned noise detector: a 2-layer LSTM over a sample's training dynamics.

Input, per sample: p(observed label) and the largest other-class probability at every epoch (seed 002's
``td`` "GT" channel and its strongest rival), **resampled to a fixed number of points over training
progress** (linear interpolation; first logged epoch at 0, last at 1), so a 10-, 20- or 40-epoch run, or one
on another schedule, gives the detector the same shape of input; output: the logit of "mislabeled". It is
trained with cross-entropy on runs with synthetic noise (where ``is_corrupt`` is known), saved as one file
together with a :class:`~.domain.RunProfile` of every run it learned from, and applied to any other run
without retraining; ``cg-analyze noise`` warns when that run lies outside those (:func:`domain_warning`).
``--init FILE`` fine-tunes a saved detector.

The detector trained on varied runs of the embedded MNIST digits (``benchmarks/lstm_detector_mnist.py``;
docs/noise_detection.md) ships as package data, so ``cg-analyze noise`` scores a new run with no training.
Detector files of the first format (raw per-epoch p(observed), no record of the training runs) still load and
score, with a warning that their domain is unknown.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from cg_train.errors import CgTrainError

from .domain import describe, outside_domain, profile
from .dynamics import SERIES, Dynamics
from .registry import DETECTORS

#: the detector shipped with the package (trained on the embedded MNIST digits)
SHIPPED = Path(__file__).with_name("lstm_mnist.pt")
#: per-epoch columns of :class:`Dynamics` the detector reads (probabilities: comparable across datasets)
FEATURES = ("p_observed", "p_other")
#: points over training progress every sequence is resampled to
LENGTH = 32
FORMAT = 2
RETRAIN = "retrain it with `cg-analyze train-detector RUN_DIR... --out FILE`"


@dataclass
class TrainReport:
    samples: int
    corrupt: int
    epochs: int
    final_loss: float


@dataclass
class Detector:
    """A loaded detector file: the model and what its input is and was trained on."""

    model: Any  # torch.nn.Module, in eval mode
    hidden: int
    features: tuple[str, ...]
    length: Optional[int]  # None: a first-format file, raw per-epoch input
    trained_on: list[dict[str, Any]]  # RunProfile.as_dict() per run; first format: {"run": dir} only
    path: Path

    @property
    def has_domain(self) -> bool:
        return self.length is not None and all("epochs" in run for run in self.trained_on)


def build_model(hidden: int = 32, layers: int = 2, channels: int = 1):
    import torch

    class LstmDetector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(channels, hidden, num_layers=layers, batch_first=True)
            self.head = torch.nn.Linear(hidden, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B] logits
            out, _ = self.lstm(x)
            return self.head(out[:, -1]).squeeze(-1)

    return LstmDetector()


def resample(values: np.ndarray, length: int, epochs: Optional[Sequence[int]] = None) -> np.ndarray:
    """``[N, T, C]`` per-epoch values -> ``[N, length, C]`` at ``length`` evenly spaced points of training
    progress, by linear interpolation; epoch ``epochs[i]`` sits at ``(epochs[i] - first) / (last - first)``
    (default: evenly spaced). A run of one epoch repeats it."""
    n, steps, channels = values.shape
    if steps == 1:
        return np.repeat(values, length, axis=1)
    known = np.arange(steps, dtype=np.float64) if epochs is None else np.asarray(epochs, np.float64)
    known = (known - known[0]) / (known[-1] - known[0])
    grid = np.linspace(0.0, 1.0, length)
    hi = np.clip(np.searchsorted(known, grid, side="right"), 1, steps - 1)
    w = ((grid - known[hi - 1]) / (known[hi] - known[hi - 1]))[None, :, None]
    return ((1 - w) * values[:, hi - 1] + w * values[:, hi]).astype(np.float32)


def sequences(dyn: Dynamics, features: Sequence[str] = FEATURES, length: Optional[int] = LENGTH) -> np.ndarray:
    """The detector's input for every sample of ``dyn``: ``[N, length, len(features)]`` (``length`` None: the
    raw per-epoch values, as first-format detector files read them)."""
    values = np.nan_to_num(dyn.series[:, :, [SERIES.index(f) for f in features]].astype(np.float32), nan=0.0)
    return values if length is None else resample(values, length, dyn.epochs)


def train_detector(runs: Sequence[Dynamics], out: Path, epochs: int = 20, init: Optional[Path] = None,
                   hidden: int = 32, lr: float = 3e-3, batch_size: int = 256, seed: int = 0,
                   length: Optional[int] = None, features: Sequence[str] = FEATURES) -> TrainReport:
    """Fit the LSTM on every sample with a known true label in ``runs``; save it, with a profile of each run,
    to ``out``. Every run weighs the same, and within a run corrupt and clean samples weigh the same, so
    no run length, size or noise rate dominates. ``length``: points of training progress (default
    :data:`LENGTH`). ``init``: fine-tune that detector (its input, length included, kept)."""
    import torch

    torch.manual_seed(seed)
    length = length or LENGTH
    if init is not None:
        start = load_detector(init)
        if start.length is None:
            raise CgTrainError(f"--init {init} is a first-format detector (raw per-epoch input): train a new one "
                               f"instead of fine-tuning it (drop --init)")
        model, hidden, length, features = start.model.train(), start.hidden, start.length, start.features
    else:
        model = build_model(hidden, channels=len(features))
    xs, ys, ws = [], [], []
    for dyn in runs:
        use = dyn.known & ~dyn.removed
        y = dyn.is_corrupt[use]
        if not y.any():
            raise CgTrainError(f"{dyn.run_dir} has no corrupt sample with a known true label: train the detector "
                               f"on runs with synthetic noise (--corrupt-fraction > 0)")
        xs.append(sequences(dyn, features, length)[use])
        ys.append(y.astype(np.float32))
        ws.append(np.where(y, 0.5 / y.sum(), 0.5 / max((~y).sum(), 1)))  # each run sums to 1, half per class
    x, y = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
    w = torch.from_numpy(np.concatenate(ws) * len(y) / len(runs)).float()  # mean weight 1
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[batch]), y[batch], weight=w[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    from cg_train.io import atomic_path

    trained_on = [profile(dyn).as_dict() for dyn in runs]
    if init is not None:  # a fine-tuned detector has seen its start's runs too
        trained_on = [*start.trained_on, *trained_on]
    with atomic_path(out) as tmp:
        torch.save({"format": FORMAT, "state_dict": model.state_dict(), "hidden": hidden, "layers": 2,
                    "features": list(features), "length": length, "trained_on": trained_on,
                    "training": {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
                                 "samples": len(y), "corrupt": int(y.sum())}}, tmp)
    return TrainReport(len(y), int(y.sum()), epochs, loss.item())


def load_detector(path: Path) -> Detector:
    import torch

    path = Path(path)
    if not path.is_file():
        raise CgTrainError(f"--detector {path} does not exist: train one with `cg-analyze train-detector RUN_DIR`")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        fmt = saved.get("format", 1)
    except Exception as exc:  # not a torch file, or not a dict
        raise CgTrainError(f"--detector {path} is not an LSTM detector file ({type(exc).__name__}): "
                           f"{RETRAIN}") from None
    if fmt > FORMAT:
        raise CgTrainError(f"--detector {path} has format {fmt}, newer than this cg-analyze reads ({FORMAT}): "
                           f"update cg-train or {RETRAIN}")
    if fmt == 1:  # raw per-epoch p(observed), run dirs only
        features, length, layers = (saved.get("feature", "p_observed"),), None, 2
        trained_on = [{"run": run} for run in saved.get("trained_on", [])]
    else:
        features, length, layers = tuple(saved["features"]), int(saved["length"]), int(saved["layers"])
        trained_on = list(saved["trained_on"])
    unknown = [f for f in features if f not in SERIES]
    if unknown:
        raise CgTrainError(f"--detector {path} reads {', '.join(unknown)}, which runs do not log: {RETRAIN}")
    model = build_model(saved["hidden"], layers, len(features))
    model.load_state_dict(saved["state_dict"])
    return Detector(model.eval(), saved["hidden"], features, length, trained_on, path)


def score_with(path: Path, dyn: Dynamics) -> np.ndarray:
    import torch

    detector = load_detector(path)
    with torch.no_grad():
        x = torch.from_numpy(sequences(dyn, detector.features, detector.length))
        return torch.cat([detector.model(b) for b in x.split(4096)]).double().numpy()


def domain_warning(path: Optional[Path], dyn: Dynamics) -> Optional[str]:
    """One line when ``dyn``'s run lies outside what the detector at ``path`` was trained on, else None."""
    detector = load_detector(path or SHIPPED)
    if not detector.has_domain:
        return (f"the lstm detector {detector.path} is a first-format file that records no training domain and "
                f"reads raw per-epoch input, which does not transfer across run lengths: {RETRAIN}")
    reasons = outside_domain(detector.trained_on, profile(dyn))
    if not reasons:
        return None
    return (f"the lstm detector is applied outside what it was trained on: {'; '.join(reasons)}; its scores may "
            f"not transfer (compare with aum / mean_loss, or train a detector on runs like this one)")


def provenance(path: Optional[Path]) -> list[str]:
    """The runs the detector at ``path`` was trained on, one description each."""
    detector = load_detector(path or SHIPPED)
    return [describe(run) if "epochs" in run else str(run["run"]) for run in detector.trained_on]


@DETECTORS.register("lstm", help="seed 002's 2-layer LSTM on p(observed) and the top other class over training "
                    "progress (the shipped MNIST detector unless --detector FILE)")
def lstm(dyn: Dynamics, detector_file: Optional[Path] = None) -> np.ndarray:
    return score_with(detector_file or SHIPPED, dyn)
