"""The engine side of the feature-level methods: taps, side modules and the first stage.

:class:`FeatureSupport` is made by the supervision when ``--method`` declares features or
side modules, before the optimizer exists, and does in order:

1. installs :class:`~cg_train.models.features.FeatureTaps` on the student (capturing whenever
   gradients are enabled: the training forward the trainer runs) and on the teacher (captured
   around the teacher's forward in the supervision);
2. runs one probe forward of each model on a dummy batch (eval mode: no BatchNorm statistic
   moves), so the method builds its side modules from the features' shapes;
3. for a method with a first stage, finds which student parameters the stage's loss reaches
   (one backward of the probe): the stage's optimizer steps those and the stage's side modules;
4. once the run is prepared (:meth:`prepare`), wraps the trained side modules for DDP and puts
   the run's optimizer and scheduler behind :class:`StagedOptimizer` / :class:`StagedScheduler`,
   which hand the first stage to its own optimizer and hold the LR schedule still during it.

Side-module weights ride in the main process's supervision state of every checkpoint (one
copy, not one per process) and are broadcast to the others on resume.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, ContextManager, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..errors import CgTrainError, ConfigError
from ..models.features import FeatureTaps

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..config import Config
    from ..run_context import RunContext
    from . import Method

INIT = "init"  # the first stage's name (Extras.stage)
#: rows of the dummy batch the models are probed with at start-up
PROBE_ROWS = 2


def _memory_format(cfg: "Config") -> torch.memory_format:
    return torch.channels_last if cfg.speed.channels_last else torch.contiguous_format


class FeatureSupport:
    @staticmethod
    def check(method: type["Method"], cfg: "Config") -> None:
        """What a feature method cannot run with, one line each (called from ``Method.check``)."""
        from ..config import split_teachers

        name, sup = cfg.supervision.method, cfg.supervision
        if len(split_teachers(sup.teacher)) > 1:
            raise ConfigError(f"--method {name} compares the features of one teacher: give one --teacher CKPT")
        if cfg.augment.fix_student:
            raise ConfigError(f"--fix-student runs no backward pass, so --method {name} has nothing to train: drop "
                              f"--fix-student (it measures --method kd)")
        staged = method.init_stage and sup.init_epochs
        if cfg.train.deepspeed and (method.has_side_modules or staged):
            what = "its side modules" if method.has_side_modules else "its first stage's optimizer"
            raise ConfigError(f"--deepspeed trains one model with one optimizer, and --method {name} also trains "
                              f"{what}: train it with DDP (drop --deepspeed)"
                              + ("" if method.has_side_modules else " or with --init-epochs 0"))
        if cfg.speed.compile:
            raise ConfigError(f"--compile: --method {name} reads the student's inner features through forward "
                              f"hooks, which torch.compile would trace into every graph; drop --compile")

    def __init__(self, ctx: "RunContext", method: "Method", student: nn.Module, teacher: Optional[nn.Module],
                 crop: int):
        cfg = ctx.cfg
        sup = cfg.supervision
        self.ctx, self.method, self.student = ctx, method, student
        student_refs, teacher_refs = method.features()
        student_refs, teacher_refs = sup.student_features or student_refs, sup.teacher_features or teacher_refs
        self.student_taps = FeatureTaps(student, student_refs, "--student-features", arm="grad") \
            if student_refs else None
        self.teacher_taps = FeatureTaps(teacher, teacher_refs, "--teacher-features") \
            if teacher_refs and teacher is not None else None
        self.stage_epochs = int(sup.init_epochs or 0) if method.init_stage else 0
        self.in_stage = False  # set per batch by the supervision (start_step); StagedOptimizer reads it
        self.uses = True  # the current stage reads the features
        self.summary: list[str] = []  # what was resolved, for the run's log (logged once it has its file)
        probe = self._probe_input(cfg, crop)
        student_shapes, teacher_shapes = self._shapes(probe)
        device = ctx.accelerator.device
        method.modules = nn.ModuleDict(method.build(student_shapes, teacher_shapes))
        method.modules.to(memory_format=_memory_format(cfg))
        method.side = dict(method.modules.items())
        self.stage_params: list[nn.Parameter] = []
        if self.stage_epochs:
            self.stage_params = self._reached_by_stage(probe)
        method.modules.to(device)
        self.summary.insert(0, "--method {}: student {}; teacher {}{}".format(
            sup.method, "; ".join(self.student_taps.describe()) if self.student_taps else "-",
            "; ".join(self.teacher_taps.describe()) if self.teacher_taps else "-",
            f"; side modules {sum(p.numel() for p in method.modules.parameters())} parameters"
            if len(method.modules) else ""))

    # ------------------------------------------------------------------ start-up probe
    def _probe_input(self, cfg: "Config", crop: int) -> torch.Tensor:
        device = next(self.student.parameters()).device
        generator = torch.Generator().manual_seed(0)  # not the run's RNG: probing must not shift its draws
        images = torch.randn(PROBE_ROWS, 3, crop, crop, generator=generator)
        return images.to(device).contiguous(memory_format=_memory_format(cfg))

    def _shapes(self, images: torch.Tensor) -> tuple[list[torch.Size], list[torch.Size]]:
        was_training = self.student.training
        self.student.eval()
        try:
            with torch.no_grad():
                student = [f.shape for f in self.student_taps.probe(images)] if self.student_taps else []
                teacher = [f.shape for f in self.teacher_taps.probe(images.to(self._teacher_device()))] \
                    if self.teacher_taps else []
        finally:
            self.student.train(was_training)
        return student, teacher

    def _teacher_device(self) -> torch.device:
        return next(self.teacher_taps.model.parameters()).device

    def _reached_by_stage(self, images: torch.Tensor) -> list[nn.Parameter]:
        """The student parameters the first stage's loss reaches, plus that stage's side modules' (one backward of
        the probe batch, eval mode): the stage's optimizer steps these and nothing else."""
        from ..data.manifest import Batch
        from . import Extras, total_losses

        method = self.method
        labels = torch.zeros(PROBE_ROWS, dtype=torch.int64, device=images.device)
        batch = Batch(images, labels, labels, torch.arange(PROBE_ROWS, device=images.device))
        extras = Extras(stage=INIT)
        was_training = self.student.training
        self.student.eval()
        try:
            with torch.no_grad():
                if self.teacher_taps is not None:
                    with self.teacher_taps.capture():
                        self.teacher_taps.model(images.to(self._teacher_device()))
                    extras.teacher_features = [f.float().to(images.device) for f in self.teacher_taps.read()]
            with torch.enable_grad():
                logits = self.student(images)
                if self.student_taps is not None:
                    extras.student_features = [f.float() for f in self.student_taps.read()]
                loss = total_losses(method.init_losses(batch, logits, extras)).sum()
                student = [p for p in self.student.parameters() if p.requires_grad]
                side = [p for name in method.trained_modules(INIT) for p in method.modules[name].parameters()]
                grads = torch.autograd.grad(loss, student + side, allow_unused=True)
        finally:
            self.student.train(was_training)
        reached = [p for p, g in zip(student, grads) if g is not None]
        unused = [p for p, g in zip(side, grads[len(student):]) if g is None]
        if unused:
            raise CgTrainError(f"--method {self.ctx.cfg.supervision.method}: {len(unused)} parameter(s) of the side "
                               f"modules its first stage trains get no gradient from that stage's loss")
        self.summary.append(f"first stage ({self.stage_epochs} epochs): trains {len(reached)} of the student's "
                            f"{len(student)} parameter tensors and {len(side)} of its side modules'")
        return reached + side

    # ------------------------------------------------------------------ optimizer
    def param_groups(self) -> list[dict[str, Any]]:
        """The run's optimizer: the student's parameters, then (own group) the side modules the training trains."""
        groups = [{"params": [p for p in self.student.parameters()]}]
        side = [p for name in self.method.trained_modules(None) for p in self.method.modules[name].parameters()]
        if side:
            groups.append({"params": side})
        return groups

    def prepare(self, accelerator: "Accelerator", optimizer: Any, scheduler: Any) -> tuple[Any, Any]:
        """After ``accelerator.prepare`` of the student: the trained side modules go through DDP (and autocast);
        the first stage gets its optimizer. Returns the optimizer and scheduler the trainer steps."""
        from ..optim import build_optimizer

        method = self.method
        trained = dict.fromkeys([*method.trained_modules(None), *(method.trained_modules(INIT)
                                                                   if self.stage_epochs else [])])
        for name in trained:
            if any(p.requires_grad for p in method.modules[name].parameters()):
                method.side[name] = accelerator.prepare(method.modules[name])
        if not self.stage_epochs:
            return optimizer, scheduler
        stage = build_optimizer(self.stage_params, self.ctx.cfg)
        lr = self.ctx.cfg.supervision.init_lr
        lr = method.init_lr(self.ctx.cfg) if lr is None else lr
        for group in stage.param_groups:
            group["lr"] = lr
        stage = accelerator.prepare(stage)
        return StagedOptimizer(optimizer, stage, self), StagedScheduler(scheduler, self.stage_epochs)

    def stage_of(self, epoch: int) -> Optional[str]:
        return INIT if epoch < self.stage_epochs else None

    # ------------------------------------------------------------------ a training step
    def teacher_capture(self) -> ContextManager[None]:
        return self.teacher_taps.capture() if self.teacher_taps is not None else nullcontext()

    def start_step(self, epoch: int) -> Optional[str]:
        """The stage of a step of ``epoch``, and what the taps capture from now on (the student's forward of this
        step has run already: what the current stage does not read is dropped)."""
        stage = self.stage_of(epoch)
        self.in_stage = stage is not None
        self.uses = self.method.uses_features(stage)
        for taps in (self.student_taps, self.teacher_taps):
            if taps is not None:
                taps.enabled = self.uses
                if not self.uses:
                    taps.discard()
        return stage

    def read(self, rows: Optional[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(student, teacher) features of the step, float32, the first ``rows`` rows (--lw-mix: the originals)."""
        if not self.uses:
            return [], []
        cut = slice(None) if rows is None else slice(0, rows)
        student = [f.float()[cut] for f in self.student_taps.read()] if self.student_taps else []
        teacher = [f.float()[cut] for f in self.teacher_taps.read()] if self.teacher_taps else []
        return student, teacher

    def remove(self) -> None:
        """Remove every hook from both models."""
        for taps in (self.student_taps, self.teacher_taps):
            if taps is not None:
                taps.remove()

    def describe(self) -> dict[str, list[str]]:
        return {"student": self.student_taps.describe() if self.student_taps else [],
                "teacher": self.teacher_taps.describe() if self.teacher_taps else []}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The main process's copy of the side modules (identical on every process: DDP)."""
        if not len(self.method.modules) or not self.ctx.is_main:
            return {}
        return {"side_modules": {k: v.detach().cpu() for k, v in self.method.modules.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any], resuming: bool) -> None:
        """Restore the side modules on the main process and broadcast them (collective when ``resuming``)."""
        modules = self.method.modules
        if not resuming or not len(modules):
            return
        if self.ctx.is_main:
            if "side_modules" not in state:
                raise CgTrainError("--resume: the checkpoint holds no side modules for this --method: resume with "
                                   "the method it was trained with or use a new --output-dir")
            try:
                modules.load_state_dict(state["side_modules"])
            except RuntimeError as exc:
                raise CgTrainError(f"--resume: the checkpoint's side modules do not fit this run's "
                                   f"({str(exc).splitlines()[0]}): resume with the same --method, layers and "
                                   f"models") from None
        if self.ctx.world_size > 1 and dist.is_initialized():
            for tensor in modules.state_dict().values():
                dist.broadcast(tensor, src=0)


class StagedOptimizer:
    """The run's optimizer, except during the first stage, when the stage's own optimizer steps.

    Both ride in the trainer's checkpoint (``state_dict``), so a run resumes into either stage.
    """

    def __init__(self, main: Any, stage: Any, support: FeatureSupport):
        self.main, self.stage, self.support = main, stage, support

    @property
    def active(self) -> Any:
        return self.stage if self.support.in_stage else self.main

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.active.param_groups

    def step(self, closure: Any = None) -> None:
        self.active.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.main.zero_grad(set_to_none=set_to_none)
        self.stage.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"main": self.main.state_dict(), "init_stage": self.stage.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "init_stage" not in state:
            raise CgTrainError("--resume: the checkpoint has no first-stage optimizer: resume with the --init-epochs "
                               "it was trained with")
        self.main.load_state_dict(state["main"])
        self.stage.load_state_dict(state["init_stage"])


class StagedScheduler:
    """The run's LR schedule, held still for the first stage's epochs (it starts with the training after it)."""

    def __init__(self, main: Any, stage_epochs: int):
        self.main, self.stage_epochs, self.held = main, stage_epochs, 0

    def step(self) -> None:
        if self.held < self.stage_epochs:
            self.held += 1
        else:
            self.main.step()

    def state_dict(self) -> dict[str, Any]:
        return {"main": self.main.state_dict(), "held": self.held}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.main.load_state_dict(state["main"])
        self.held = int(state["held"])

    def __getattr__(self, name: str) -> Any:  # get_last_lr, last_epoch, ...
        return getattr(self.main, name)
