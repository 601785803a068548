"""Recorders: everything a run writes about itself, hooked into the engine.

A recorder sees the batch, the logits/losses and epoch bookkeeping, nothing
else (it never reaches into a loader or the model). The engine calls the hooks
on every process; a recorder decides which process writes (usually the main
one for small files, every rank for per-sample logs). ``state_dict`` goes into
each checkpoint, so a resumed run continues its files without duplicates.

A recorder that needs predictions the run does not make anyway (e.g. the whole
training set in eval mode) names an extra evaluation phase in
``extra_eval_phases``; the trainer runs it with the other evaluations and hands
every batch to ``on_eval_batch``. So a recorder never builds a loader or calls
the model itself.

``state_dict`` is called on every process at every checkpoint (also mid-epoch):
it must return what is durably on disk at that moment, and ``load_state_dict``
must drop whatever was written after it, so that a killed and resumed run has no
lost and no duplicated rows. Constructors write nothing (they run before the
output directory is checked).

A factory registered in ``RECORDERS`` returns a recorder, or None when the
config does not ask for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch
from accelerate.utils import gather_object

from ..registry import Registry

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..config import Config
    from ..data.bundle import DataBundle
    from ..data.loaders import SkippedSample
    from ..data.manifest import Batch
    from ..engine.evaluate import EvalResult


@dataclass
class RunContext:
    cfg: "Config"
    output_dir: Path
    accelerator: "Accelerator"
    data: "DataBundle"

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process (collective; no-op with one process)."""
        return gather_object([obj]) if self.world_size > 1 else [obj]


class Recorder:
    """Base class with no-op hooks; override what you need."""

    #: True: ``on_train_batch`` communicates, so it runs even on a process whose batch is empty
    #: (every image of its share unreadable); otherwise it is called for non-empty batches only.
    collective: bool = False

    def on_fit_start(self, ctx: RunContext) -> None: ...

    def on_train_batch(self, ctx: RunContext, epoch: int, step: int, batch: "Batch", logits: torch.Tensor,
                       losses: torch.Tensor) -> None:
        """Every training step, on every process; ``losses`` are per-sample and detached."""

    def on_train_log(self, ctx: RunContext, epoch: int, step: int, count: int, loss: float) -> None:
        """Every ``print_freq`` steps with the global batch size and mean loss (same on all processes)."""

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None: ...

    def extra_eval_phases(self, ctx: RunContext, epoch: int) -> Sequence[str]:
        """Evaluation phases beyond the standard ones that this recorder needs at evaluation ``epoch``
        (e.g. ``cg_train.data.bundle.TRAIN_ALL``: every training sample, eval mode, no augmentation)."""
        return ()

    def on_eval_batch(self, ctx: RunContext, phase: str, epoch: int, batch: "Batch", logits: torch.Tensor) -> None:
        """Every evaluation batch of every phase, on every process (eval mode, float logits, no grad)."""

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: "EvalResult") -> None:
        """After a whole evaluation phase; ``result`` is already summed over processes."""

    def on_skipped(self, ctx: RunContext, epoch: int, phase: str, skipped: list["SkippedSample"]) -> None:
        """Samples that could not be decoded in one phase, gathered from all processes."""

    def on_fit_end(self, ctx: RunContext) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore after resume; an empty dict means a fresh start (truncate own files)."""


RecorderFactory = Callable[[RunContext], Optional[Recorder]]
RECORDERS: Registry[RecorderFactory] = Registry("recorder", "recorders")


class Recorders(Recorder):
    """Calls every enabled recorder's hook, in registration order."""

    def __init__(self, recorders: dict[str, Recorder]):
        self.recorders = recorders

    def on_fit_start(self, ctx: RunContext) -> None:
        for rec in self.recorders.values():
            rec.on_fit_start(ctx)

    def on_train_batch(self, ctx: RunContext, epoch: int, step: int, batch: "Batch", logits: torch.Tensor,
                       losses: torch.Tensor) -> None:
        for rec in self.recorders.values():
            if len(batch.indices) or rec.collective:
                rec.on_train_batch(ctx, epoch, step, batch, logits, losses)

    def on_train_log(self, ctx: RunContext, epoch: int, step: int, count: int, loss: float) -> None:
        for rec in self.recorders.values():
            rec.on_train_log(ctx, epoch, step, count, loss)

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        for rec in self.recorders.values():
            rec.on_train_epoch_end(ctx, epoch)

    def extra_eval_phases(self, ctx: RunContext, epoch: int) -> Sequence[str]:
        wanted = [phase for rec in self.recorders.values() for phase in rec.extra_eval_phases(ctx, epoch)]
        return tuple(dict.fromkeys(wanted))  # each phase once, in order

    def on_eval_batch(self, ctx: RunContext, phase: str, epoch: int, batch: "Batch", logits: torch.Tensor) -> None:
        for rec in self.recorders.values():
            rec.on_eval_batch(ctx, phase, epoch, batch, logits)

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: "EvalResult") -> None:
        for rec in self.recorders.values():
            rec.on_eval(ctx, phase, epoch, result)

    def on_skipped(self, ctx: RunContext, epoch: int, phase: str, skipped: list["SkippedSample"]) -> None:
        for rec in self.recorders.values():
            rec.on_skipped(ctx, epoch, phase, skipped)

    def on_fit_end(self, ctx: RunContext) -> None:
        for rec in self.recorders.values():
            rec.on_fit_end(ctx)

    def state_dict(self) -> dict[str, Any]:
        return {name: rec.state_dict() for name, rec in self.recorders.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, rec in self.recorders.items():
            rec.load_state_dict(state.get(name, {}))


def build_recorders(ctx: RunContext, extra: Optional[dict[str, Recorder]] = None) -> Recorders:
    """The enabled registered recorders, then ``extra`` (state-keeping parts of the engine, e.g. supervision)."""
    made = {name: RECORDERS.get(name)(ctx) for name in RECORDERS.names()}
    return Recorders({**{name: rec for name, rec in made.items() if rec is not None}, **(extra or {})})


from . import calibration, epoch_csv, learned, p_smoothing, paths, seed002, skipped  # noqa: E402,F401,I001  (register)
