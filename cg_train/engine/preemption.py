"""Stop cleanly when asked to: SIGTERM (SLURM preemption, ``kill``) or SIGUSR2 (submitit's time-limit warning).

A signal handler must not save a checkpoint itself: it interrupts the loop at an
arbitrary bytecode, possibly inside an all-reduce. So the handler only records the
signal; the trainer looks at the record at step boundaries, every process agrees on
it (the flag rides on the all-reduce each step does anyway), and then the trainer
saves a checkpoint and raises :class:`TrainingInterrupted`. Whoever called ``run``
decides what comes next: the CLI prints how to resume, the submitit job requeues.

A cluster signals every process of a job, not just the main one: SLURM's preemption
and ``scancel --signal`` reach DataLoader workers too, whose default (torch's) SIGTERM
handler ends them, and the main process then dies of "DataLoader worker is killed by
signal". Helper processes therefore do not act on the stop signals (:func:`ignore_in_helper`)
and leave the decision to the main process; :func:`held_while_forking` closes the
window between fork and that call.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Iterator, Optional, Union

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
#: What a helper process (DataLoader worker) ignores: the stop signals, and Ctrl-C (the main process's
#: KeyboardInterrupt shuts the workers down itself)
HELPER_IGNORES = (*STOP_SIGNALS, signal.SIGINT)

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


def ignore_in_helper(*_: Any) -> None:
    """In a helper process (a DataLoader ``worker_init_fn``): let the main process decide on stop signals.

    The signals stay blocked (as :func:`held_while_forking` left them) and one thread takes
    them with ``sigwaitinfo``, which tells who sent each: a SIGTERM from the parent
    (DataLoader or multiprocessing shutting its workers down) ends the helper as before;
    any other (the cluster's, to the whole process group) is dropped, as the main process
    received it too. Plain ``SIG_IGN`` would make the parent's own shutdown hang.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HELPER_IGNORES)
    threading.Thread(target=_take_stop_signals, name="cg-train-stop-signals", daemon=True).start()


def _take_stop_signals() -> None:
    parent = os.getppid()
    while True:
        info = signal.sigwaitinfo(HELPER_IGNORES)
        if info.si_signo == signal.SIGTERM and info.si_pid == parent:
            os._exit(0)  # what torch's own worker handler does for its parent's SIGTERM


@contextmanager
def held_while_forking() -> Iterator[None]:
    """Block the stop signals in this thread while helper processes are forked (they inherit the mask).

    A signal that arrives meanwhile is delivered to this process when the block ends,
    and taken by the helpers' :func:`ignore_in_helper` thread, so no helper dies of one
    between its fork and its ``worker_init_fn``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELPER_IGNORES)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
