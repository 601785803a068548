"""The callable submitit runs for one point: ``run(cfg)``, requeued when preempted or near its time limit.

On SIGTERM/SIGUSR2 the engine checkpoints within a few steps, at a step boundary, and
raises TrainingInterrupted. Only then is the signal handed to submitit's own handler (dump
this callable again, ``scontrol requeue``, exit), so the requeued job finds a
checkpoint that continues at the next batch (``output.resume=auto``).
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Optional

import submitit

from cg_train.config import Config
from cg_train.engine.run import run
from cg_train.engine.preemption import STOP_SIGNALS, StopSignals, TrainingInterrupted

from .distributed import distributed_env


class TrainJob(submitit.helpers.Checkpointable):
    def __init__(self, cfg: Config):
        self.cfg = cfg

    def __call__(self) -> Optional[str]:
        env = submitit.JobEnvironment()
        os.environ.update(distributed_env(env))
        requeue_signal = signal.Signals["SIG" + env.USR_SIG]  # USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise
        # Signals that arrive while the job is being requeued are only recorded, never acted on twice.
        with StopSignals(tuple({*STOP_SIGNALS, requeue_signal})) as after_run:
            try:
                return str(run(self.cfg))
            except TrainingInterrupted as stop:
                requeue = after_run.previous.get(requeue_signal)
                if callable(requeue):  # submitit's checkpoint-and-requeue (rank 0); returns on other ranks
                    requeue(requeue_signal, None)
                if env.global_rank != 0:
                    sys.exit(stop.exit_code)  # no result file: rank 0 speaks for the job
                raise  # not run by submitit (or no requeue possible): the job ends as stopped

    def __repr__(self) -> str:
        return f"TrainJob({Path(self.cfg.output.dir).name})"
