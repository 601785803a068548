"""Supervision methods: what the network is trained toward (seeds 000, 001 and 003).

A method is one small class registered in ``METHODS`` (``--method NAME``). It
declares what it needs and turns ``(batch, student logits, extras)`` into one
loss per sample; the trainer multiplies, sums and back-propagates as for plain
cross-entropy, so every engine guarantee (1 or N processes, exact resume, path
logs on the student's logits) holds for every method.

Needs a method can declare:

* ``teacher = "checkpoint"``: frozen teacher(s) from ``--teacher CKPT[:CKPT...]``
  (any cg-train checkpoint; its arch is read from it), run in eval mode, without
  gradient, on the same augmented images as the student; ``"self"``: the same
  run's model as it was at the end of the previous epoch.
* ``table = "targets"``: a fixed per-sample table read from ``--targets``;
  ``"labels"``: a per-sample table the method learns (``new_rows``). Tables are
  sharded by sample index across processes (``cg_train.tables``).
* inner features of the student and the teacher (``student_features`` /
  ``teacher_features``), trainable side modules built from their shapes (``build``),
  a first stage (``init_losses``, ``--init-epochs``), per-rank state that rides in every
  checkpoint (``tables``, ``state_dict``): the feature-level methods, whose contract is
  written at the top of docs/feature_distillation.md ("Writing a feature method") and in
  :class:`Method`; ``feature_support.py`` does their plumbing.

:class:`Supervision` does the plumbing (teacher forward, table rows, checkpoint
state) and sits among the recorders, so its state rides in every checkpoint.
"""
from __future__ import annotations

import copy
import logging
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from ..config import split_teachers
from ..data.manifest import Batch, mix_of
from ..errors import CgTrainError, ConfigError
from ..augment import mixes_rows, parse_lw_mix
from ..models import MODELS
from ..run_context import Recorder, RunContext
from ..registry import Registry
from ..data.sharding import max_share
from ..tables import ShardedTable
from .target_checks import TargetsSummary, check_targets
from .feature_support import FeatureSupport

if TYPE_CHECKING:
    from ..config import Config, SupervisionConfig

log = logging.getLogger("cg_train")

#: Where a run keeps learned-label shards and self-distillation teachers.
LABEL_SHARDS = "tables/labels"
SELF_TEACHERS = "tables/self_kd"
#: Where a feature method keeps its per-rank tables (Method.tables): METHOD_TABLES/<method>/<name>/.
METHOD_TABLES = "tables/method"
#: The learned labels (logits; softmax gives the label), written after every training epoch.
LABELS_TABLE = "labels.npy"


@dataclass
class Extras:
    """What a method declared it needs, for this batch (float32; only the student's features carry gradients)."""

    teacher_logits: Optional[torch.Tensor] = None  # [teachers, b, K]; None while a self-teacher does not exist
    rows: Optional[torch.Tensor] = None  # [b, K] the batch's per-sample table rows
    seen: Optional[torch.Tensor] = None  # [b] False where a row was never written
    #: the student's features, in the order the method declared them (expanded: feat[1:-1] is several),
    #: float32 with gradient; under --lw-mix the original rows only
    student_features: list[torch.Tensor] = field(default_factory=list)
    teacher_features: list[torch.Tensor] = field(default_factory=list)  # the same for the teacher, no gradient
    epoch: int = 0  # the training epoch of this batch (the first stage's epochs come first: 0..init_epochs-1)
    step: int = 0  # the batch's step in that epoch (a seeded stream per (seed, epoch, step, rank) is resumable)
    stage: Optional[str] = None  # "init" during the first stage (--init-epochs), None in the training after it


class Losses(NamedTuple):
    """A method's loss with a term over this process's whole share of the batch (relational losses).

    The trainer averages per-sample losses over the *global* batch. ``batch`` is added to every
    sample of the share it was computed on, so the global mean is the per-sample mean plus the
    share-weighted mean of the processes' batch terms: on 1 process the batch term of the whole
    batch, on N processes (as RepDistiller on N GPUs) the mean of each process's term on its share.
    """

    per_sample: torch.Tensor  # [b]
    batch: torch.Tensor  # scalar


LossOutput = Union[torch.Tensor, Losses]


def total_losses(out: LossOutput) -> torch.Tensor:
    """Per-sample losses with a batch term spread over the share (see :class:`Losses`)."""
    return out.per_sample + out.batch if isinstance(out, Losses) else out


#: Defaults of the supervision keys that are None until a method fills them (Method.defaults overrides).
DEFAULTS: dict[str, Any] = {"ce_weight": 0.1, "kd_weight": 0.9, "feature_weight": 0.0, "init_epochs": 0}


class Method:
    """Base class: per-sample losses from the batch, the student's logits and the declared extras.

    Feature-level methods (docs/feature_distillation.md, "Writing a feature method") also declare
    ``student_features`` / ``teacher_features`` (references such as ``feat[1:-1]``, ``embedding``,
    ``layers.2.add``; ``cg_train.models.features``), build their trainable side modules in
    :meth:`build`, may keep per-rank state (:attr:`tables`, :meth:`state_dict`) and may have a
    first stage (:meth:`init_losses`).
    """

    teacher: Optional[str] = None  # None, "checkpoint" or "self"
    table: Optional[str] = None  # None, "targets" or "labels"
    #: the teachers only give a sample's initial learned label: skipped once every trained sample has one
    teacher_for_first_visits: bool = False
    #: the losses are exactly ``F.cross_entropy(logits.float(), targets, reduction="none")`` and nothing else
    #: runs: the trainer computes them itself and never calls the method (``Supervision.active`` is False)
    plain_cross_entropy: bool = False
    #: feature references the method compares (overridden by --student-features / --teacher-features)
    student_features: tuple[str, ...] = ()
    teacher_features: tuple[str, ...] = ()
    #: this method builds trainable side modules (DeepSpeed trains one model only, so it refuses them)
    has_side_modules: bool = False
    #: a first stage of --init-epochs epochs with its own loss (init_losses) and optimizer
    init_stage: bool = False
    #: works with --lw-mix (the logit terms on x and x_aug, the rest on x)
    lw_mix_ok: bool = False
    #: per-method values of the None-by-default supervision keys (ce_weight, kd_weight, feature_weight, ...)
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg: "SupervisionConfig", num_classes: int):
        self.cfg, self.num_classes = cfg, num_classes
        #: per-rank state saved as one shard per process at every checkpoint (e.g. ShardedTable); created in setup
        self.tables: dict[str, ShardedTable] = {}
        #: the side modules by name as built (``build``), and as to call them in a training step: through
        #: DDP for the ones a stage trains (set by the supervision once the run is prepared)
        self.modules: nn.ModuleDict = nn.ModuleDict()
        self.side: dict[str, nn.Module] = {}

    @classmethod
    def is_feature_method(cls) -> bool:
        return bool(cls.student_features or cls.teacher_features or cls.has_side_modules)

    @classmethod
    def resolve_defaults(cls, cfg: "Config") -> None:
        """Fill the supervision keys left None with this method's defaults (stored in config.yaml)."""
        sup = cfg.supervision
        for key, value in {**DEFAULTS, **cls.defaults}.items():
            if getattr(sup, key) is None:
                setattr(sup, key, value)

    @classmethod
    def check(cls, cfg: "Config") -> None:
        """Refuse a config this method cannot run with (one line naming the flag)."""
        name = cfg.supervision.method
        cls.resolve_defaults(cfg)
        sup = cfg.supervision
        if parse_lw_mix(cfg.augment.lw_mix) is not None and not cls.lw_mix_ok:
            raise ConfigError(f"--lw-mix needs --method kd (seed 001's KD losses) or a feature method, not "
                              f"--method {name}")
        features = cls.is_feature_method()
        if not features and (sup.student_features or sup.teacher_features):
            raise ConfigError(f"--student-features/--teacher-features choose a feature method's layers; --method "
                              f"{name} compares none")
        if not features and sup.feature_weight:
            raise ConfigError(f"--feature-weight weighs a feature method's term; --method {name} has none")
        if not cls.init_stage and sup.init_epochs:
            raise ConfigError(f"--init-epochs {sup.init_epochs}: --method {name} has no first stage (fitnet, ab, "
                              f"ft and fsp have one)")
        if features:
            FeatureSupport.check(cls, cfg)
        if cls.teacher == "checkpoint" and not cfg.supervision.teacher:
            raise ConfigError(f"--method {name} needs --teacher CKPT (a cg-train checkpoint, e.g. "
                              f"TEACHER_RUN/model_best.pth.tar)")
        if cls.table == "targets" and not cfg.supervision.targets:
            raise ConfigError(f"--method {name} needs --targets TABLE.npy (a teacher run's p_smoothing_best.npy)")
        if cls.table is not None and mixes_rows(cfg):
            raise ConfigError(f"--da {cfg.augment.da} mixes two samples per image but --method {name} keeps one "
                              f"table row per sample: use an unmixed --da, or --method kd with --lw-mix")

    def losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> LossOutput:
        """Per-sample losses ``[b]``, or :class:`Losses` with a batch term (relational methods)."""
        raise NotImplementedError

    def new_rows(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        """``table = "labels"``: the batch's rows after this step (stored for the next visit)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ feature methods
    def features(self) -> tuple[Sequence[str], Sequence[str]]:
        """(student, teacher) feature references; override when they depend on the config (fitnet's hint)."""
        return self.student_features, self.teacher_features

    def build(self, student: list[torch.Size], teacher: list[torch.Size]) -> dict[str, nn.Module]:
        """Trainable side modules from the features' shapes (``[2, C, H, W]`` or ``[2, D]``: one probe forward of
        each model at start-up, eval mode). The engine moves them to the device (channels_last too), puts their
        parameters in the optimizer, wraps the trained ones for DDP (``self.side[name]``: call each at most once
        per step, every parameter used), saves them in every checkpoint and restores them on resume."""
        return {}

    def trained_modules(self, stage: Optional[str]) -> Sequence[str]:
        """Names of the side modules ``stage`` trains (None: the training after the first stage)."""
        return list(self.modules) if stage is None else []

    def setup(self, ctx: RunContext) -> None:
        """Create per-rank state once the run's context is known (e.g. a ShardedTable in ``self.tables``)."""

    def init_losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> LossOutput:
        """``init_stage``: the loss of the first stage. Its optimizer steps the side modules of
        ``trained_modules("init")`` and the student parameters this loss reaches (found at start-up)."""
        raise NotImplementedError

    def init_lr(self, cfg: "Config") -> float:
        """The first stage's constant learning rate (``--init-lr``, else this)."""
        return cfg.optim.lr

    def runs_teacher(self, stage: Optional[str]) -> bool:
        """Whether ``stage`` needs the teacher's forward pass at all (its logits or features)."""
        return True

    def uses_features(self, stage: Optional[str]) -> bool:
        """Whether ``stage`` (None: the training after the first stage) reads the declared features (the taps
        capture nothing where it does not)."""
        return True

    def state_dict(self) -> dict[str, Any]:
        """Small per-rank state for every checkpoint (mid-epoch too); ``tables`` are saved separately."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s state on resume (an empty dict: a fresh start)."""


METHODS: Registry[type[Method]] = Registry("supervision method", "--method (supervision.method)")


def check_method(cfg: "Config") -> None:
    METHODS.get(cfg.supervision.method).check(cfg)


def teacher_paths(cfg: "SupervisionConfig") -> list[Path]:
    return [Path(p) for p in split_teachers(cfg.teacher)]


def load_teacher(path: Path, num_classes: int, device: torch.device) -> torch.nn.Module:
    """A frozen model from any cg-train checkpoint (its arch read from the checkpoint), in eval mode."""
    from ..models import build_model

    if not path.is_file():
        raise CgTrainError(f"--teacher: checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        arch, weights = state["arch"], state["state_dict"]
    except Exception as exc:  # truncated or foreign file
        raise CgTrainError(f"--teacher: {path} is not a readable cg-train checkpoint ({exc})") from None
    model = build_model(arch, num_classes)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CgTrainError(f"--teacher: {path} ({arch}) does not fit this run's {num_classes} classes: "
                           f"{str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}"
                           ) from None
    return model.eval().requires_grad_(False).to(device)


class Supervision(Recorder):
    """Computes the per-sample losses of the chosen method; keeps its teachers, tables and feature plumbing."""

    collective = True  # a table method exchanges rows even when this process's batch is empty

    def __init__(self, ctx: RunContext, model: torch.nn.Module, crop: Optional[int] = None):
        """``model``: the student, before ``accelerator.prepare`` (side modules are built from it and must exist
        before the optimizer); ``crop``: its input size (default: the model's), for the feature probe."""
        cfg = ctx.cfg.supervision
        self.ctx, self.model, self.is_main = ctx, model, ctx.is_main
        n, k = len(ctx.data.train), ctx.data.train.num_classes
        self.method: Method = METHODS.get(cfg.method)(cfg, k)
        self.method.check(ctx.cfg)
        lw_mix = parse_lw_mix(ctx.cfg.augment.lw_mix)
        if lw_mix is not None:  # --lw-mix: seed 001's KD loss on x and x_aug (kd only; checked with the config)
            self.method.lw_mix, self.method.t_output = lw_mix, ctx.cfg.augment.t_output_as_target_for_input_mix
        device = ctx.accelerator.device
        self.teachers: list[torch.nn.Module] = []
        if self.method.teacher == "checkpoint":
            self.teachers = [load_teacher(p, k, device) for p in teacher_paths(cfg)]
        self.teacher_epoch: Optional[int] = None  # self-distillation: the epochs its teacher had trained
        self.table: Optional[ShardedTable] = None
        if self.method.table is not None:
            self.table = ShardedTable(n, k, ctx.rank, ctx.world_size, device,
                                      step_rows=max_share(ctx.cfg.data.batch_size, ctx.world_size))
        self.targets_summary: Optional[TargetsSummary] = None  # what the --targets table holds (logged, recorded)
        if self.method.table == "targets":
            self.table.load_npy(Path(cfg.targets), "--targets")
            self.targets_summary = check_targets(ctx, self.table, Path(cfg.targets))  # refuses a weak table
        self.features: Optional[FeatureSupport] = None  # taps, side modules, first stage (feature methods)
        if self.method.is_feature_method():
            crop = crop or ctx.cfg.data.image_size or MODELS.get(ctx.cfg.model.arch).crop_size
            self.features = FeatureSupport(ctx, self.method, model, self.teachers[0] if self.teachers else None,
                                           crop)
        self.method.setup(ctx)
        self.generation = 0
        self.labels_complete = False  # every trained sample has a learned label (Method.teacher_for_first_visits)
        self.last_teacher_logits: Optional[torch.Tensor] = None
        self.last_logits: Optional[torch.Tensor] = None

    @property
    def active(self) -> bool:
        """False for plain cross-entropy: then the trainer computes the losses inline and this object only
        keeps its checkpoint state (nothing of it runs per step)."""
        return not self.method.plain_cross_entropy or bool(self.teachers) or self.table is not None

    # ------------------------------------------------------------------ set-up with the optimizer
    @property
    def stage_epochs(self) -> int:
        """Epochs of the method's first stage (--init-epochs); the trainer runs them before --epochs."""
        return self.features.stage_epochs if self.features is not None else 0

    def param_groups(self) -> Any:
        """What the run's optimizer trains: the student's parameters, and its own group of side-module ones."""
        return self.model.parameters() if self.features is None else self.features.param_groups()

    def prepare(self, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> tuple[Any, Any]:
        """After ``accelerator.prepare``: wrap side modules for DDP; the optimizer and scheduler to step (a method
        with a first stage hands that stage to its own optimizer and holds the schedule still)."""
        self.model = model
        if self.features is None:
            return optimizer, scheduler
        return self.features.prepare(self.ctx.accelerator, optimizer, scheduler)

    # ------------------------------------------------------------------ the loss
    def __call__(self, batch: Batch, images: torch.Tensor, targets: torch.Tensor,
                 logits: torch.Tensor, epoch: int = 0, step: int = 0) -> torch.Tensor:
        """Per-sample losses; ``images``/``targets`` are what the student saw (a dummy for an empty share)."""
        if self.method.teacher is None and self.table is None and self.features is None:
            return total_losses(self.method.losses(batch._replace(observed_labels=targets), logits, Extras()))
        extras = Extras(epoch=epoch, step=step)
        if self.features is not None:
            extras.stage = self.features.start_step(epoch)
        if self.teachers and self.method.runs_teacher(extras.stage) and \
                not (self.method.teacher_for_first_visits and self.labels_complete):
            with torch.no_grad(), self.ctx.accelerator.autocast(), self._teacher_capture():
                extras.teacher_logits = torch.stack([t(images).float() for t in self.teachers])
        self.last_teacher_logits, self.last_logits = extras.teacher_logits, logits.detach()  # for --check-ce-var
        if mix_of(batch) is not None and mix_of(batch).images is None:  # a mixing --da: mixed soft targets
            batch = batch._replace(observed_labels=targets)
        if self.features is not None:
            lw_mix = mix_of(batch) is not None and mix_of(batch).images is not None
            extras.student_features, extras.teacher_features = self.features.read(
                len(batch.indices) if lw_mix else None)
            if len(batch.indices) == 0:  # a weightless dummy row: side modules still run, so DDP stays in step
                batch = Batch(images, targets, targets, torch.full_like(targets, -1))
        if self.table is not None:
            extras.rows, extras.seen = self.table.fetch(batch.indices)
        if len(batch.indices) == 0:  # nothing of ours in this batch; the collectives above still ran
            if self.method.table == "labels":
                self.table.scatter(batch.indices, logits.detach()[:0])
            return logits.float().sum(1) * 0.0
        if extras.stage is not None:
            # the stage's loss; every student parameter stays in the graph (zero gradient where the loss does not
            # reach), so DDP's buckets are complete; the stage's optimizer steps only what the loss reaches
            losses = total_losses(self.method.init_losses(batch, logits, extras))
            return losses + 0.0 * logits[:len(losses)].float().sum(1)
        losses = total_losses(self.method.losses(batch, logits, extras))
        if self.method.table == "labels":
            self.table.scatter(batch.indices, self.method.new_rows(batch, logits, extras))
        return losses

    def on_fit_start(self, ctx: RunContext) -> None:
        if self.features is not None:
            for line in self.features.summary:
                log.info("%s", line)

    def on_fit_end(self, ctx: RunContext) -> None:
        if self.features is not None:  # the models leave the run as they came
            self.features.remove()

    def _teacher_capture(self) -> Any:
        return self.features.teacher_capture() if self.features is not None else nullcontext()
    # ------------------------------------------------------------------ self-distillation teacher
    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        if self.method.teacher == "self":
            self._set_self_teacher(copy.deepcopy(ctx.unwrap(self.model)), epoch + 1)
            if self.is_main:
                from ..engine import checkpoint

                folder = ctx.output_dir / SELF_TEACHERS
                checkpoint.save(folder / f"teacher_epoch{epoch + 1:05d}.pth",
                                {"state_dict": self.teachers[0].state_dict()})
                for old in folder.glob("teacher_epoch*.pth"):
                    if int(old.stem.removeprefix("teacher_epoch")) < epoch:
                        old.unlink(missing_ok=True)
        if self.method.table == "labels":
            self.table.write_npy(ctx.output_dir / LABELS_TABLE, self.is_main)
            self.labels_complete = self._labels_complete()

    def _labels_complete(self) -> bool:
        """Whether every sample the run trains on has its learned label (collective; once per epoch, so one
        host read per epoch). Unreadable samples stay unlabelled and keep the teachers running."""
        if not self.method.teacher_for_first_visits:
            return False
        table, removed = self.table, self.ctx.data.removed
        trained = torch.ones(table.held_rows, dtype=torch.bool, device=table.seen.device)
        if removed is not None:
            trained = torch.from_numpy(~removed[table.start:table.stop]).to(table.seen.device)
        missing = (trained & ~table.seen).sum().double()
        if self.ctx.world_size > 1:
            missing = self.ctx.accelerator.reduce(missing, reduction="sum")
        return bool(missing.item() == 0)

    def _set_self_teacher(self, model: torch.nn.Module, epoch: int) -> None:
        self.teachers = [model.eval().requires_grad_(False)]
        self.teacher_epoch = epoch

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"method": self.method.__class__.__name__, "teacher_epoch": self.teacher_epoch}
        if self.method.table == "labels" or self.method.tables:
            self.generation += 1
        if self.method.table == "labels":
            state["labels"] = self.table.save(self.ctx.output_dir / LABEL_SHARDS, self.generation, self.is_main)
        if self.features is not None:
            state["features"] = self.features.describe()
            state.update(self.features.state_dict())
        if self.method.tables:
            folder = self.ctx.output_dir / METHOD_TABLES / self.ctx.cfg.supervision.method
            state["method_tables"] = {name: table.save(folder / name, self.generation, self.is_main)
                                      for name, table in self.method.tables.items()}
            state["generation"] = self.generation
        state["method_state"] = self.method.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        out = self.ctx.output_dir
        saved = state.get("method")
        if saved is not None and saved != self.method.__class__.__name__:
            raise CgTrainError(f"--resume: the checkpoint was trained with another --method ({saved}, not "
                               f"{self.ctx.cfg.supervision.method}): resume with the same --method or use a new "
                               f"--output-dir")
        if self.features is not None:
            if state and state.get("features") != self.features.describe():
                raise CgTrainError(f"--resume: the checkpoint distilled other features ({state.get('features')}) than "
                                   f"this run's ({self.features.describe()}): resume with the same --method, "
                                   f"layers and models, or use a new --output-dir")
            self.features.load_state_dict(state, resuming=bool(state))
        self.generation = int(state.get("generation", 0))
        if self.method.tables:
            folder = out / METHOD_TABLES / self.ctx.cfg.supervision.method
            for name, table in self.method.tables.items():
                table.clear()
                if name in state.get("method_tables", {}):
                    table.load(folder / name, state["method_tables"][name], f"--method {saved} {name}")
            if not state and self.is_main:
                shutil.rmtree(folder, ignore_errors=True)
        self.method.load_state_dict(state.get("method_state", {}))
        if self.method.table == "labels":
            self.table.clear()
            if "labels" in state:
                self.table.load(out / LABEL_SHARDS, state["labels"], "learned-label")
                self.generation = int(state["labels"]["generation"])
            elif self.is_main:
                shutil.rmtree(out / LABEL_SHARDS, ignore_errors=True)
                (out / LABELS_TABLE).unlink(missing_ok=True)
            self.labels_complete = "labels" in state and self._labels_complete()
        if self.method.teacher == "self":
            self.teachers, self.teacher_epoch = [], None
            epoch = state.get("teacher_epoch")
            if epoch is not None:
                path = out / SELF_TEACHERS / f"teacher_epoch{epoch:05d}.pth"
                if not path.is_file():
                    raise CgTrainError(f"--resume: the self-distillation teacher {path} of the checkpoint is "
                                       f"missing: resume in the output directory the run was written to")
                model = copy.deepcopy(self.ctx.unwrap(self.model))
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])
                self._set_self_teacher(model, epoch)
            elif self.is_main:
                shutil.rmtree(out / SELF_TEACHERS, ignore_errors=True)
        tables = [t for t in (self.table, *self.method.tables.values()) if t is not None]
        if tables:
            tables[0].barrier()  # no process writes shards before the main one has cleared old ones


from . import ce, filter_kd, kd, sl  # noqa: E402,F401,I001  (register)
from . import ab, at, cc, crd, fitnet, fsp, ft, nst, pkt, rkd, sp, vid  # noqa: E402,F401,I001  (feature methods)
