"""Seed 002's learned noise detector: a 2-layer LSTM over a sample's training dynamics.

Input: the sequence of p(observed label) over epochs (seed 002's ``td[:, :, 0]``,
its "GT" channel), one value per step; output: the logit of "mislabeled". It is
trained with cross-entropy on runs with synthetic noise (where ``is_corrupt`` is
known), saved as one file, and applied to any other run without retraining (any
number of epochs, any dataset); ``--init FILE`` fine-tunes a saved detector.

The detector trained on the embedded MNIST digits (20% symmetric noise,
``simple_cnn``, 10 epochs; see docs/noise_detection.md) ships as package data,
so ``cg-analyze noise`` scores a new run with no training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from cg_train.errors import CgTrainError

from .registry import DETECTORS
from .dynamics import Dynamics

#: the detector shipped with the package (trained on the embedded MNIST digits)
SHIPPED = Path(__file__).with_name("lstm_mnist.pt")
FEATURE = "p_observed"


@dataclass
class TrainReport:
    samples: int
    corrupt: int
    epochs: int
    final_loss: float


def build_model(hidden: int = 32, layers: int = 2):
    import torch

    class LstmDetector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(1, hidden, num_layers=layers, batch_first=True)
            self.head = torch.nn.Linear(hidden, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B] logits
            out, _ = self.lstm(x.unsqueeze(-1))
            return self.head(out[:, -1]).squeeze(-1)

    return LstmDetector()


def sequences(dyn: Dynamics) -> np.ndarray:
    return np.nan_to_num(dyn.column(FEATURE).astype(np.float32), nan=0.0)


def train_detector(runs: Sequence[Dynamics], out: Path, epochs: int = 20, init: Optional[Path] = None,
                   hidden: int = 32, lr: float = 3e-3, batch_size: int = 256, seed: int = 0) -> TrainReport:
    """Fit the LSTM on every sample with a known true label in ``runs``; save it to ``out``."""
    import torch

    torch.manual_seed(seed)
    data = []
    for dyn in runs:
        use = dyn.known & ~dyn.removed
        if not dyn.is_corrupt[use].any():
            raise CgTrainError(f"{dyn.run_dir} has no corrupt sample with a known true label: train the detector "
                               f"on runs with synthetic noise (--corrupt-fraction > 0)")
        data.append((torch.from_numpy(sequences(dyn)[use]), torch.from_numpy(dyn.is_corrupt[use].astype(np.float32))))
    if init is not None:
        model, hidden = load_model(init)
    else:
        model = build_model(hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        for x, y in data:  # one run's sequences share a length
            pos_weight = (len(y) - y.sum()) / y.sum().clamp(min=1)  # balance clean vs corrupt
            for batch in torch.randperm(len(x), generator=gen).split(batch_size):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[batch]), y[batch],
                                                                            pos_weight=pos_weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
    from cg_train.io import atomic_path

    with atomic_path(out) as tmp:
        torch.save({"state_dict": model.state_dict(), "hidden": hidden, "feature": FEATURE,
                    "trained_on": [str(d.run_dir) for d in runs]}, tmp)
    return TrainReport(sum(len(y) for _, y in data), int(sum(y.sum() for _, y in data)), epochs, loss.item())


def load_model(path: Path):
    import torch

    path = Path(path)
    if not path.is_file():
        raise CgTrainError(f"--detector {path} does not exist: train one with `cg-analyze train-detector RUN_DIR`")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(saved["hidden"])
    model.load_state_dict(saved["state_dict"])
    return model.eval(), saved["hidden"]


def score_with(path: Path, dyn: Dynamics) -> np.ndarray:
    import torch

    model, _ = load_model(path)
    with torch.no_grad():
        x = torch.from_numpy(sequences(dyn))
        return torch.cat([model(b) for b in x.split(4096)]).double().numpy()


@DETECTORS.register("lstm", help="seed 002's 2-layer LSTM on p(observed) over epochs (the shipped MNIST "
                    "detector unless --detector FILE)")
def lstm(dyn: Dynamics, detector_file: Optional[Path] = None) -> np.ndarray:
    return score_with(detector_file or SHIPPED, dyn)
