"""Stop cleanly when asked to: SIGTERM (SLURM preemption, ``kill``) or SIGUSR2 (submitit's time-limit warning).

A signal handler must not save a checkpoint itself: it interrupts the loop at an
arbitrary bytecode, possibly inside an all-reduce. So the handler only records the
signal; the trainer looks at the record at step boundaries, every process agrees on
it (the flag rides on the all-reduce each step does anyway), and then the trainer
saves a checkpoint and raises :class:`TrainingInterrupted`. Whoever called ``run``
decides what comes next: the CLI prints how to resume, the submitit job requeues.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional, Union

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]


def signal_names(signals: list[int]) -> list[str]:
    """``[15]`` -> ``["SIGTERM"]``: how checkpoints and messages name the signals that stopped a run."""
    return [signal.Signals(s).name for s in signals]


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint that continues at the next batch."""

    def __init__(self, signals: list[int], epoch: int, step: int, checkpoint: str):
        self.signals, self.epoch, self.step, self.checkpoint = signals, epoch, step, checkpoint
        names = "+".join(signal_names(signals)) or "a signal to another process"
        super().__init__(f"stopped by {names} at epoch {epoch}, step {step}; checkpoint {checkpoint}")

    @property
    def exit_code(self) -> int:
        """128 + the signal, as a shell reports a process ended by that signal."""
        return 128 + (self.signals[0] if self.signals else signal.SIGTERM)


class StopSignals:
    """While active (``with StopSignals() as stop``), the stop signals are recorded, not acted on.

    Leaving the block restores the handlers that were there before, so a caller
    (submitit's job runner) gets its own handlers back once the checkpoint is safe.
    Outside the main thread signals cannot be caught and nothing is installed.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = signals
        self.received: list[int] = []
        self.previous: dict[int, Handler] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self.previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def _record(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum not in self.received:
            self.received.append(signum)

    @property
    def requested(self) -> bool:
        return bool(self.received)
