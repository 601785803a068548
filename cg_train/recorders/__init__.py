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

Only recorders that override a hook are called for it: the per-step hooks
(``on_train_batch``, ``on_train_log``, ``on_eval_batch``) run through lists of
the recorders that do something there, so a recorder that is not enabled, or
one that only writes per epoch, costs a training step nothing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch

from ..registry import Registry
from ..run_context import Recorder, RunContext

if TYPE_CHECKING:
    from ..data.loaders import SkippedSample
    from ..data.manifest import Batch
    from ..engine.evaluate import EvalResult

__all__ = ["RECORDERS", "Recorder", "Recorders", "RunContext", "build_recorders"]


RecorderFactory = Callable[[RunContext], Optional[Recorder]]
RECORDERS: Registry[RecorderFactory] = Registry("recorder", "recorders")


def overrides(recorder: Recorder, hook: str) -> bool:
    """Whether ``recorder`` does anything in ``hook`` (its class replaced the base class's no-op)."""
    return getattr(type(recorder), hook) is not getattr(Recorder, hook)


class Recorders(Recorder):
    """Calls every enabled recorder's hook, in registration order; per-step hooks only where overridden."""

    def __init__(self, recorders: dict[str, Recorder]):
        self.recorders = recorders
        self.per_train_batch = [rec for rec in recorders.values() if overrides(rec, "on_train_batch")]
        self.per_train_log = [rec for rec in recorders.values() if overrides(rec, "on_train_log")]
        self.per_eval_batch = [rec for rec in recorders.values() if overrides(rec, "on_eval_batch")]

    def on_fit_start(self, ctx: RunContext) -> None:
        for rec in self.recorders.values():
            rec.on_fit_start(ctx)

    def on_train_batch(self, ctx: RunContext, epoch: int, step: int, batch: "Batch", logits: torch.Tensor,
                       losses: torch.Tensor) -> None:
        for rec in self.per_train_batch:
            if rec.collective or len(batch.indices):
                rec.on_train_batch(ctx, epoch, step, batch, logits, losses)

    def on_train_log(self, ctx: RunContext, epoch: int, step: int, count: int, loss: float, lr: float) -> None:
        for rec in self.per_train_log:
            rec.on_train_log(ctx, epoch, step, count, loss, lr)

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        for rec in self.recorders.values():
            rec.on_train_epoch_end(ctx, epoch)

    def extra_eval_phases(self, ctx: RunContext, epoch: int) -> Sequence[str]:
        wanted = [phase for rec in self.recorders.values() for phase in rec.extra_eval_phases(ctx, epoch)]
        return tuple(dict.fromkeys(wanted))  # each phase once, in order

    def on_eval_batch(self, ctx: RunContext, phase: str, epoch: int, batch: "Batch", logits: torch.Tensor) -> None:
        for rec in self.per_eval_batch:
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

    def on_stopped(self, ctx: RunContext) -> None:
        for rec in self.recorders.values():
            rec.on_stopped(ctx)

    def state_dict(self) -> dict[str, Any]:
        return {name: rec.state_dict() for name, rec in self.recorders.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, rec in self.recorders.items():
            rec.load_state_dict(state.get(name, {}))


def build_recorders(ctx: RunContext, extra: Optional[dict[str, Recorder]] = None) -> Recorders:
    """The enabled registered recorders, then ``extra`` (state-keeping parts of the engine, e.g. supervision)."""
    made = {name: RECORDERS.get(name)(ctx) for name in RECORDERS.names()}
    return Recorders({**{name: rec for name, rec in made.items() if rec is not None}, **(extra or {})})


from . import calibration, epoch_csv, heldout, learned, p_smoothing, paths, seed002, skipped, trackers  # noqa: E402,F401,I001  (register)
