"""``--log-with tensorboard,wandb,mlflow``: the run's metrics in experiment trackers, through accelerate's tracker API.

The CSVs stay the source of truth; the trackers get the same numbers as the run goes, on the main process only:
every ``--print-freq`` steps ``train/loss``, ``train/lr``, ``train/images_per_s`` (over the steps since the last
log, from the logged batch sizes) and ``train/epoch``; after each evaluation ``<phase>/loss``, ``/acc1``, ``/acc5``
for the phases of seed 004's CSVs and ``<phase>/ece`` for every phase in ``calibration.csv``; the flattened config
(``section.key``) once, at the start of a fresh run.

One step axis, the global training step: a training log of step k of epoch e is at ``e*S + k + 1`` (the steps
done, S per epoch) and the evaluation before epoch e at ``e*S``.

Files go where each library's users expect them, by default inside ``--output-dir``: ``tensorboard/<project>/``
(``tensorboard --logdir``), ``wandb/`` (``WANDB_MODE=offline`` needs no network or account; ``WANDB_DIR`` moves it),
``mlflow.db`` + ``mlartifacts/`` (MLflow 3's default local store, sqlite, unless ``MLFLOW_TRACKING_URI`` names
another: ``mlflow ui --backend-store-uri sqlite:///OUTPUT_DIR/mlflow.db``). A fresh start empties them.

A resumed run continues the same tracker run and step axis: the wandb run id (``resume="allow"``) and the MLflow run
id are in the checkpoint and in ``trackers.json``. After a stop signal (SIGTERM/SIGUSR2: preemption) the checkpoint
holds every logged step, so the resumed run neither repeats nor skips one. After a kill without a checkpoint
(SIGKILL, a crash) the trackers hold steps the checkpoint does not know of, which the resumed run computes again
(the same values, as its CSVs show):

- TensorBoard restarts with ``purge_step`` at the checkpoint's last step (readers drop every event from there on)
  and writes that step's values again from the checkpoint: one value per step, none missing;
- MLflow commits every log before it returns, so the resumed run reads from the MLflow run which steps it holds
  and skips those;
- wandb writes through its service process, which keeps the newest records in memory (offline: up to a 32 KiB
  block) and loses them when it dies: of its parent's SIGKILL, or of a SIGTERM sent to every process of the job
  (SLURM; wandb-core exits at once on it, wandb#9963: a tracker that fails is dropped with a one-line warning and
  the run checkpoints as usual). The resumed run logs every step after the checkpoint again, so a step may appear
  in two run segments (the same value), and one the service had not written is missing from wandb (never from the
  CSVs or TensorBoard).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from ..config import to_dict
from ..errors import CgTrainError, ConfigError
from ..io import atomic_write_text
from ..results import EVAL_PHASES
from . import RECORDERS, Recorder, RunContext

log = logging.getLogger("cg_train")

STATE_FILE = "trackers.json"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB, MLFLOW_ARTIFACTS = "mlflow.db", "mlartifacts"  # MLflow 3's default store (sqlite) and artifact root


def tracker_files(out: Path) -> dict[str, list[Path]]:
    """What each tracker writes inside ``out`` (nothing where the user's environment sends it elsewhere)."""
    return {"tensorboard": [out / TENSORBOARD_DIR],
            "wandb": [] if os.environ.get("WANDB_DIR") else [out / "wandb"],
            "mlflow": [] if os.environ.get("MLFLOW_TRACKING_URI") else [out / MLFLOW_DB, out / MLFLOW_ARTIFACTS]}


def accelerator_kwargs(cfg: Any) -> dict[str, Any]:
    """``Accelerator(log_with=..., project_dir=...)`` for ``--log-with``; a missing package is a one-line error."""
    names = list(cfg.output.log_with)  # config.TRACKERS; each is also the name of the package accelerate imports
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ConfigError(f"--log-with {name}: the {name} package is not installed; install it with "
                              f"pip install 'cg-train[trackers]' (or pip install {name})")
    return {"log_with": names, "project_dir": str(Path(cfg.output.dir) / TENSORBOARD_DIR)} if names else {}


def teardown_wandb() -> None:
    """Flush and close wandb's service connection now (its exit hook then has nothing left to do); a service
    that died of a stop signal (wandb#9963) is not an error here."""
    try:
        import wandb

        wandb.teardown()
    except Exception:
        pass


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def mlflow_steps(run_id: str) -> dict[str, int]:
    """metric -> the newest step the MLflow run holds (MLflow commits every log before it returns)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return {key: max(m.step for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics}


def flat_config(cfg: Any) -> dict[str, Any]:
    """``section.key -> value`` with scalars only (what every tracker's hyperparameter store takes)."""
    return {f"{section}.{key}": value if isinstance(value, (bool, int, float, str)) else str(value)
            for section, values in to_dict(cfg).items() for key, value in values.items()}


def steps_per_epoch(ctx: RunContext) -> int:
    """Global steps per epoch (cg_train.data.sharding: a last batch smaller than the process count is dropped)."""
    removed = ctx.data.removed
    n = len(ctx.data.train) - (int(removed.sum()) if removed is not None else 0)
    full, rest = divmod(n, ctx.cfg.data.batch_size)
    return full + (rest >= ctx.world_size)


class TrackerRecorder(Recorder):
    def __init__(self, ctx: RunContext):
        self.names = list(ctx.cfg.output.log_with)
        self.out, self.is_main, self.cfg = ctx.output_dir, ctx.is_main, ctx.cfg
        self.steps = max(steps_per_epoch(ctx), 1)
        self.run_ids: dict[str, str] = {}
        self.last_step, self.at_last = -1, {}  # newest step logged, and what was logged at it
        self.fresh = True
        self.held: dict[str, int] = {}  # metric -> newest step the MLflow run holds (read from it on resume)
        self.trackers: list[Any] = []
        self.previous: Optional[tuple[int, int, int, float]] = None  # (epoch, step, count, time) of the last log

    # ------------------------------------------------------------------ start
    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self.fresh = not state
        if self.fresh:  # empty what an earlier, unfinished start of this run left
            for path in (p for name in self.names for p in tracker_files(self.out)[name]):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            (self.out / STATE_FILE).unlink(missing_ok=True)
            return
        self.run_ids = dict(state.get("run_ids", {}))
        self.last_step, self.at_last = state.get("last_step", -1), dict(state.get("at_last", {}))

    def on_fit_start(self, ctx: RunContext) -> None:
        if not self.is_main:
            return
        name = self.out.resolve().name
        if "wandb" in self.names:
            self.run_ids.setdefault("wandb", uuid.uuid4().hex[:16])
        kwargs: dict[str, dict[str, Any]] = {
            "tensorboard": {"purge_step": self.last_step} if self.last_step >= 0 else {},
            "wandb": {"id": self.run_ids.get("wandb"), "resume": "allow", "name": name,
                      **({"dir": str(self.out)} if tracker_files(self.out)["wandb"] else {})},
            "mlflow": {"run_id": self.run_ids.get("mlflow"), "run_name": name},
        }
        if "mlflow" in self.names and tracker_files(self.out)["mlflow"]:
            import mlflow

            mlflow.set_tracking_uri(f"sqlite:///{(self.out / MLFLOW_DB).resolve()}")
            kwargs["mlflow"]["logging_dir"] = str((self.out / MLFLOW_ARTIFACTS).resolve())
        self.accelerator = accelerator = ctx.accelerator
        try:
            accelerator.init_trackers(self.cfg.output.tracker_project,
                                      config=flat_config(self.cfg) if self.fresh else None,
                                      init_kwargs={n: kwargs[n] for n in self.names})
        except Exception as exc:  # a tracker's own error (no login, unreachable server): one line, not its traceback
            raise CgTrainError(f"--log-with {','.join(self.names)}: the tracker did not start: {first_line(exc)} "
                               f"(wandb without an account: WANDB_MODE=offline)") from None
        self.trackers = list(accelerator.trackers)
        if "mlflow" in self.names:
            resumed = self.run_ids.get("mlflow")
            self.run_ids["mlflow"] = accelerator.get_tracker("mlflow", unwrap=True).info.run_id
            if resumed:
                self.held = mlflow_steps(self.run_ids["mlflow"])
        tensorboard = [t for t in self.trackers if t.name == "tensorboard"]
        if tensorboard and self.at_last:  # the checkpoint's last step, dropped by purge_step: written again
            tensorboard[0].log(self.at_last, step=self.last_step)
        self.write_state()

    # ------------------------------------------------------------------ logging
    def on_train_log(self, ctx: RunContext, epoch: int, step: int, count: int, loss: float, lr: float) -> None:
        if not self.is_main:
            return
        now = time.perf_counter()
        values = {"train/loss": loss, "train/lr": lr, "train/epoch": epoch + (step + 1) / self.steps}
        if self.previous is not None and self.previous[0] == epoch and self.previous[1] < step:
            _, last, last_count, then = self.previous
            images = (step - last - 1) * last_count + count  # the steps between were full batches
            values["train/images_per_s"] = images / max(now - then, 1e-9)
        self.previous = (epoch, step, count, now)
        self.log(values, epoch * self.steps + step + 1)

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        self.previous = None  # the next interval would include the evaluation

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: Any) -> None:
        if not self.is_main:
            return
        values = {}
        if phase in EVAL_PHASES:
            values.update({f"{phase}/loss": result.loss, f"{phase}/acc1": result.acc1, f"{phase}/acc5": result.acc5})
        if result.calibration is not None:
            values[f"{phase}/ece"] = result.ece
        if values:
            self.log(values, epoch * self.steps)
        self.previous = None

    def log(self, values: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in values.items()}
        for tracker in list(self.trackers):
            new = values
            if tracker.name == "mlflow":  # what a killed earlier start logged after its last checkpoint is there
                new = {k: v for k, v in values.items() if step > self.held.get(k, -1)}
            try:
                if new:
                    tracker.log(new, step=step)
            except Exception as exc:  # e.g. wandb's service process died of the preemption signal (wandb#9963)
                self.drop(tracker, exc)
        self.at_last = {**self.at_last, **values} if step == self.last_step else dict(values)
        self.last_step = step

    def drop(self, tracker: Any, exc: Exception) -> None:
        """A tracker that failed is left out for the rest of this process; the run and its CSVs go on."""
        log.warning("--log-with %s: %s; not logging to it any more in this process (the CSVs hold every value, "
                    "--resume continues the tracker run)", tracker.name, first_line(exc))
        self.trackers.remove(tracker)
        self.accelerator.trackers.remove(tracker)  # end_training would finish it
        if tracker.name == "wandb":  # its exit hook would talk to the dead service again, with a traceback
            teardown_wandb()

    def on_stopped(self, ctx: RunContext) -> None:
        """Stopped by a signal: wandb's service may have died of it with nothing logged since (so not dropped
        above); tear it down here, where a dead one costs nothing, rather than in its exit hook's traceback."""
        if any(tracker.name == "wandb" for tracker in self.trackers):
            teardown_wandb()

    def write_state(self) -> None:
        """The tracker run ids, for people and scripts (the checkpoint holds them too)."""
        atomic_write_text(self.out / STATE_FILE, json.dumps({"run_ids": self.run_ids}) + "\n")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if not self.is_main:
            return {}
        return {"run_ids": dict(self.run_ids), "last_step": self.last_step, "at_last": dict(self.at_last)}


@RECORDERS.register("trackers", help="--log-with: metrics and config to tensorboard / wandb / mlflow via accelerate")
def build_trackers(ctx: RunContext) -> Optional[Recorder]:
    return TrackerRecorder(ctx) if ctx.cfg.output.log_with else None
