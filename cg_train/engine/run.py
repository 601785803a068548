"""``run(cfg)``: everything one training job does. The CLI, ``accelerate launch`` and
submitit all call this same function.

Every check that can fail on bad input (config, data layout, model, optimizer,
output directory) runs before the first file is written.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..checks import check_names
from ..config import Config, run_metadata, to_yaml
from ..data.bundle import build_data
from ..errors import CgTrainError, ConfigError
from ..io import atomic_write_text
from ..models import MODELS, build_model
from ..noise import is_corrupt, write_corruption_record
from ..optim import build_optimizer, build_scheduler
from ..results import RESULT_CSVS
from ..recorders import RunContext, build_recorders
from ..recorders.trackers import accelerator_kwargs as tracker_kwargs
from ..supervision import Supervision
from ..augment import build_augmentation
from . import checkpoint, deepspeed_backend, fast_path, supervision_checks
from .preemption import STOP_SIGNALS, StopSignals
from .trainer import Trainer

log = logging.getLogger("cg_train")


class TqdmHandler(logging.Handler):
    """Log lines that do not tear through progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def setup_logging(is_main: bool, log_file: Optional[Path] = None) -> None:
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")
    console = TqdmHandler()
    console.setFormatter(fmt)
    log.addHandler(console)
    if log_file is not None and is_main:
        file_handler = logging.FileHandler(log_file, mode="a")  # appended: a crash cannot truncate it
        file_handler.setFormatter(fmt)
        log.addHandler(file_handler)


def resolve_mixed_precision(cfg: Config) -> str:
    """``--mixed-precision``, else ``accelerate launch --mixed_precision`` (ACCELERATE_MIXED_PRECISION), else no.

    Accelerator(mixed_precision=...) silently overrides the launcher's flag, so the two
    are reconciled here: both given and different is an error. The launcher's "no" is
    its default and counts as not given.
    """
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    mine = cfg.train.mixed_precision
    if mine is not None and launcher != "no" and mine != launcher:
        raise ConfigError(f"--mixed-precision (train.mixed_precision) is {mine} but accelerate launch was given "
                          f"--mixed_precision {launcher}: give one of them, or the same value to both")
    return mine or launcher


def make_accelerator(cfg: Config) -> Accelerator:
    cfg.train.mixed_precision = resolve_mixed_precision(cfg)  # recorded as used in config.yaml and checkpoints
    cpu = cfg.train.cpu or not torch.cuda.is_available()
    if cpu:
        # accelerate imports DeepSpeed when it is installed; naming the CPU spares every run its
        # "unable to detect a GPU" warning (an explicit DS_ACCELERATOR from the user still wins)
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if cpu and cfg.train.mixed_precision == "fp16":
        raise ConfigError("--mixed-precision fp16 needs a GPU; use bf16 on CPU")
    trackers = tracker_kwargs(cfg)  # --log-with: accelerate's experiment trackers
    if cfg.train.deepspeed:
        return Accelerator(mixed_precision=cfg.train.mixed_precision,
                           **deepspeed_backend.accelerator_kwargs(cfg, cpu), **trackers)
    return Accelerator(cpu=cpu, mixed_precision=cfg.train.mixed_precision, **trackers)


def input_sizes(cfg: Config) -> tuple[int, int]:
    """(resize, crop): the model's defaults, or the flags; resize scales with a custom crop (256/224)."""
    spec = MODELS.get(cfg.model.arch)
    crop = cfg.data.image_size or spec.crop_size
    resize = cfg.data.resize_size or round(crop * spec.resize_size / spec.crop_size)
    return resize, crop


def result_files(out: Path) -> list[str]:
    """What a finished run leaves for the user: the seed CSVs first, then the other tables and log folders."""
    csvs = [name for name in RESULT_CSVS if (out / name).exists()]
    others = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                    if p.name not in csvs and not p.name.startswith(".")
                    and (p.is_dir() or p.suffix in (".csv", ".parquet", ".npy", ".npz")))
    return csvs + others


def has_results(out: Path) -> bool:
    return (out / checkpoint.LATEST).exists() or any((out / name).exists() for name in RESULT_CSVS)


def resolve_resume(cfg: Config, out: Path) -> Optional[Path]:
    """The checkpoint to resume from, or None for a fresh start (refusing to overwrite a finished run)."""
    if cfg.output.resume is None:
        if has_results(out):
            raise CgTrainError(f"{out} already holds a run: add --resume to continue it, or choose another "
                               f"--output-dir")
        return None
    if cfg.output.resume == "auto":
        latest = out / checkpoint.LATEST
        return latest if latest.exists() else None
    path = Path(cfg.output.resume)
    if not path.is_file():
        raise CgTrainError(f"--resume: checkpoint {path} does not exist")
    return path


def run(cfg: Config) -> Path:
    """Train and evaluate as ``cfg`` says; return the output directory.

    On SIGTERM/SIGUSR2 it saves a checkpoint within a few steps, at a step boundary, and raises
    :class:`~cg_train.engine.preemption.TrainingInterrupted` (see preemption.py).
    """
    with StopSignals() as stop:
        return _run(cfg, stop)


def warn_if_launcher_drops_stop_signals() -> None:
    """Under torchrun / accelerate launch, the agent ends at once on a stop signal it does not handle."""
    handled = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
    if handled is not None:
        missing = [s for s in STOP_SIGNALS if s.name not in handled.split(",")]
        if missing:
            log.warning("the launcher does not forward %s: on it the launcher ends before this run can "
                        "checkpoint; export PET_SIGNALS_TO_HANDLE=%s (docs/preemption.md)",
                        "/".join(s.name for s in missing), ",".join([handled, *(s.name for s in missing)]))


def _run(cfg: Config, stop: StopSignals) -> Path:
    check_names(cfg)  # also for callers that built cfg themselves (submitit jobs, tests)
    accelerator = make_accelerator(cfg)
    setup_logging(accelerator.is_main_process)
    warn_if_launcher_drops_stop_signals()
    out = Path(cfg.output.dir)
    set_seed(cfg.train.seed)
    fast_path.configure_backends(cfg, accelerator.device)

    resize, crop = input_sizes(cfg)
    data = build_data(cfg, resize, crop, accelerator.process_index, accelerator.num_processes,
                      accelerator.device)
    model = fast_path.prepare_model(build_model(cfg.model.arch, data.train.num_classes, cfg.model.pretrained), cfg)
    ctx = RunContext(cfg, out, accelerator, data)
    # loads teachers / --targets, builds a feature method's side modules; its state rides with the recorders'
    supervision = Supervision(ctx, model, crop)
    optimizer = build_optimizer(supervision.param_groups(), cfg)
    scheduler = build_scheduler(optimizer, cfg)
    resume_from = resolve_resume(cfg, out)
    resume_state = checkpoint.load(resume_from) if resume_from is not None else None
    if deepspeed_backend.uses_deepspeed(accelerator):
        deepspeed_backend.configure(accelerator, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    model = fast_path.maybe_compile(model, cfg, accelerator)
    optimizer, scheduler = supervision.prepare(model, optimizer, scheduler)  # side modules under DDP; a 1st stage
    augmenter, augment_recorders = build_augmentation(ctx, model, supervision)  # --da, --check-ce-var
    recorders = build_recorders(ctx, extra={"supervision": supervision, **augment_recorders})
    trainer = Trainer(ctx, model, optimizer, scheduler, recorders, crop, stop, supervision, augmenter)
    if resume_state is not None:
        trainer.check_resumable(resume_state, resume_from)
    # each --teacher's test top-1 and the --targets summary (a weak table was refused above)
    checks = supervision_checks.run_checks(ctx, supervision, resume_state is not None, trainer.progress)
    accelerator.wait_for_everyone()  # every process has passed every check before anything is written

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        meta = run_metadata(accelerator.num_processes)
        if checks["targets"] is not None or checks["teachers"]:
            meta["supervision_checks"] = checks
        atomic_write_text(out / "config.yaml", to_yaml(cfg, meta))
        write_corruption_record(str(out / "corruption.parquet"), data.train, data.resampled, data.subsets,
                                columns=data.record_columns())
    accelerator.wait_for_everyone()
    setup_logging(accelerator.is_main_process, out / "log.txt")
    log.info("cg-train: %s on %d training samples of %d classes (%d corrupt), %d test samples; "
             "%d process(es) on %s%s", cfg.model.arch, len(data.train), data.train.num_classes,
             int(is_corrupt(data.train).sum()), len(data.test), accelerator.num_processes, accelerator.device,
             f", {type(model).__name__} (ZeRO stage {accelerator.state.deepspeed_plugin.zero_stage})"
             if deepspeed_backend.uses_deepspeed(accelerator) else "")
    supervision_checks.report(ctx, supervision, checks)
    if resume_state is not None:
        trainer.load_checkpoint(resume_state, resume_from)
    else:
        trainer.start_fresh()
    recorders.on_fit_start(ctx)

    trainer.fit()
    accelerator.wait_for_everyone()
    log.info("done: results in %s (%s)", out.resolve(), ", ".join(result_files(out)))
    accelerator.end_training()
    return out
