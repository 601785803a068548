"""What a learned detector was trained on, and whether a run it scores lies inside that.

Seed 002 trains its detector on synthetic noise of one dataset and applies it to another, so a detector
file carries a :class:`RunProfile` of every run it learned from (read from the run's own files:
``config.yaml`` and the path logs), and :func:`outside_domain` names each way a scored run differs:
more or fewer epochs than any training run, another dataset, class count, schedule, architecture, path
log source or noise type, or a noise rate far from the trained ones. ``cg-analyze noise`` prints those as
one warning line and puts it in the report; nothing is refused (transfer is the point), only flagged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, Sequence

import yaml

from .dynamics import Dynamics, true_noise_rate

UNKNOWN = "unknown"
#: how far (absolute) a scored run's noise rate may lie outside the trained rates before it is flagged
RATE_MARGIN = 0.1
#: datasets read from a folder of class folders: their name alone does not say which data it was
FOLDER_DATASETS = ("imagefolder",)


@dataclass(frozen=True)
class RunProfile:
    """One run as a detector sees it: what its training dynamics depend on."""

    run: str  # the run directory, as given
    dataset: str  # registry name, or ``imagefolder:NAME`` (the folder's name); "unknown" without config.yaml
    num_classes: int
    samples: int
    epochs: int  # epochs of path logs the detector reads
    source: str  # "train" (training passes) or "eval" (eval passes after each epoch)
    schedule: str  # lr schedule (``auto`` resolved as the trainer does)
    arch: str
    noise_type: str  # symmetric, flip, uniform, ...; "none" without synthetic noise
    noise_rate: Optional[float]  # fraction corrupt among samples with a known true label; None: none known

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def schedule_of(cfg: dict[str, Any]) -> str:
    """The schedule the run trained with; ``auto`` resolved by the trainer's own rule."""
    sched, model = cfg.get("sched") or {}, cfg.get("model") or {}
    if "scheduler" not in sched:
        return UNKNOWN
    from cg_train.optim import scheduler_name  # the rule, not a copy (cg_train.optim is no engine module)

    return scheduler_name(SimpleNamespace(sched=SimpleNamespace(scheduler=sched["scheduler"],
                                                                milestones=sched.get("milestones") or []),
                                          model=SimpleNamespace(arch=model.get("arch"))))


def dataset_of(cfg: dict[str, Any]) -> str:
    data = cfg.get("data") or {}
    name = data.get("dataset")
    if not name:
        return UNKNOWN
    return f"{name}:{Path(str(data.get('dir', ''))).name}" if name in FOLDER_DATASETS else str(name)


def profile(dyn: Dynamics) -> RunProfile:
    """``dyn``'s run as a detector sees it, from its ``config.yaml`` (when there is one) and its path logs."""
    cfg = read_config(dyn.run_dir)
    noise = cfg.get("noise") or {}
    fraction = noise.get("corrupt_fraction")
    noise_type = UNKNOWN if fraction is None else "none" if float(fraction) == 0 else str(noise.get("noise_type"))
    rate = true_noise_rate(dyn)
    return RunProfile(run=str(dyn.run_dir), dataset=dataset_of(cfg), num_classes=int(dyn.num_classes),
                      samples=int((~dyn.removed).sum()), epochs=len(dyn.epochs), source=dyn.source,
                      schedule=schedule_of(cfg), arch=str((cfg.get("model") or {}).get("arch", UNKNOWN)),
                      noise_type=noise_type, noise_rate=None if rate is None else round(rate, 4))


def describe(run: dict[str, Any]) -> str:
    """``runs/a (imagefolder:digits, simple_cnn, 20 epochs of train passes, constant lr, symmetric 0.20)``."""
    rate = run.get("noise_rate")
    noise = (f"{run.get('noise_type', UNKNOWN)} noise " + (f"{rate:.2f}" if rate is not None else "(rate unknown)"))
    return (f"{run['run']} ({run.get('dataset', UNKNOWN)}, {run.get('arch', UNKNOWN)}, {run.get('num_classes')} "
            f"classes, {run.get('epochs')} epochs of {run.get('source')} passes, {run.get('schedule', UNKNOWN)} lr, "
            f"{noise})")


def _span(values: Sequence[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if lo == hi else f"{format(lo, fmt)}-{format(hi, fmt)}"


def _choices(values: Sequence[Any]) -> str:
    return ", ".join(sorted({str(v) for v in values}))


def outside_domain(trained: Sequence[dict[str, Any]], run: RunProfile) -> list[str]:
    """Each way ``run`` lies outside the runs a detector was trained on (empty: inside), one phrase each."""
    reasons = []
    epochs = [t["epochs"] for t in trained]
    if not min(epochs) <= run.epochs <= max(epochs):
        reasons.append(f"{run.epochs} epochs (trained on {_span(epochs, 'd')})")
    for key, phrase in (("dataset", "dataset {}"), ("num_classes", "{} classes"), ("arch", "architecture {}"),
                        ("schedule", "{} lr schedule"), ("source", "{}-pass path logs")):
        known = [t.get(key, UNKNOWN) for t in trained]
        value = getattr(run, key)
        if value != UNKNOWN and value not in known:
            reasons.append(f"{phrase.format(value)} (trained on {_choices(known)})")
    types = [t.get("noise_type", UNKNOWN) for t in trained]
    if run.noise_type not in (UNKNOWN, "none") and run.noise_type not in types:
        reasons.append(f"{run.noise_type} noise (trained on {_choices(types)})")
    rates = [t["noise_rate"] for t in trained if t.get("noise_rate") is not None]
    if run.noise_rate is not None and rates and not min(rates) - RATE_MARGIN <= run.noise_rate <= max(rates) + RATE_MARGIN:
        reasons.append(f"noise rate {run.noise_rate:.2f} (trained on {_span(rates, '.2f')})")
    return reasons
