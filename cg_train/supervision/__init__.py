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

:class:`Supervision` does the plumbing (teacher forward, table rows, checkpoint
state) and sits among the recorders, so its state rides in every checkpoint.
"""
from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from ..config import split_teachers
from ..data.manifest import Batch, mix_of
from ..errors import CgTrainError, ConfigError
from ..augment import mixes_rows, parse_lw_mix
from ..run_context import Recorder, RunContext
from ..registry import Registry
from ..data.sharding import max_share
from ..tables import ShardedTable
from .target_checks import TargetsSummary, check_targets

if TYPE_CHECKING:
    from ..config import Config, SupervisionConfig

#: Where a run keeps learned-label shards and self-distillation teachers.
LABEL_SHARDS = "tables/labels"
SELF_TEACHERS = "tables/self_kd"
#: The learned labels (logits; softmax gives the label), written after every training epoch.
LABELS_TABLE = "labels.npy"


@dataclass
class Extras:
    """What a method declared it needs, for this batch (float32, no gradient)."""

    teacher_logits: Optional[torch.Tensor] = None  # [teachers, b, K]; None while a self-teacher does not exist
    rows: Optional[torch.Tensor] = None  # [b, K] the batch's per-sample table rows
    seen: Optional[torch.Tensor] = None  # [b] False where a row was never written


class Method:
    """Base class: per-sample losses from the batch, the student's logits and the declared extras."""

    teacher: Optional[str] = None  # None, "checkpoint" or "self"
    table: Optional[str] = None  # None, "targets" or "labels"
    #: the teachers only give a sample's initial learned label: skipped once every trained sample has one
    teacher_for_first_visits: bool = False
    #: the losses are exactly ``F.cross_entropy(logits.float(), targets, reduction="none")`` and nothing else
    #: runs: the trainer computes them itself and never calls the method (``Supervision.active`` is False)
    plain_cross_entropy: bool = False

    def __init__(self, cfg: "SupervisionConfig", num_classes: int):
        self.cfg, self.num_classes = cfg, num_classes

    @classmethod
    def check(cls, cfg: "Config") -> None:
        """Refuse a config this method cannot run with (one line naming the flag)."""
        name = cfg.supervision.method
        if cls.teacher == "checkpoint" and not cfg.supervision.teacher:
            raise ConfigError(f"--method {name} needs --teacher CKPT (a cg-train checkpoint, e.g. "
                              f"TEACHER_RUN/model_best.pth.tar)")
        if cls.table == "targets" and not cfg.supervision.targets:
            raise ConfigError(f"--method {name} needs --targets TABLE.npy (a teacher run's p_smoothing_best.npy)")
        if cls.table is not None and mixes_rows(cfg):
            raise ConfigError(f"--da {cfg.augment.da} mixes two samples per image but --method {name} keeps one "
                              f"table row per sample: use an unmixed --da, or --method kd with --lw-mix")

    def losses(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        raise NotImplementedError

    def new_rows(self, batch: Batch, logits: torch.Tensor, extras: Extras) -> torch.Tensor:
        """``table = "labels"``: the batch's rows after this step (stored for the next visit)."""
        raise NotImplementedError


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
    """Computes the per-sample losses of the chosen method; keeps its teachers and tables."""

    collective = True  # a table method exchanges rows even when this process's batch is empty

    def __init__(self, ctx: RunContext, model: torch.nn.Module):
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
        self.generation = 0
        self.labels_complete = False  # every trained sample has a learned label (Method.teacher_for_first_visits)
        self.last_teacher_logits: Optional[torch.Tensor] = None
        self.last_logits: Optional[torch.Tensor] = None

    @property
    def active(self) -> bool:
        """False for plain cross-entropy: then the trainer computes the losses inline and this object only
        keeps its checkpoint state (nothing of it runs per step)."""
        return not self.method.plain_cross_entropy or bool(self.teachers) or self.table is not None

    # ------------------------------------------------------------------ the loss
    def __call__(self, batch: Batch, images: torch.Tensor, targets: torch.Tensor,
                 logits: torch.Tensor) -> torch.Tensor:
        """Per-sample losses; ``images``/``targets`` are what the student saw (a dummy for an empty share)."""
        if self.method.teacher is None and self.table is None:
            return self.method.losses(batch._replace(observed_labels=targets), logits, Extras())
        extras = Extras()
        if self.teachers and not (self.method.teacher_for_first_visits and self.labels_complete):
            with torch.no_grad(), self.ctx.accelerator.autocast():
                extras.teacher_logits = torch.stack([t(images).float() for t in self.teachers])
        self.last_teacher_logits, self.last_logits = extras.teacher_logits, logits.detach()  # for --check-ce-var
        if mix_of(batch) is not None and mix_of(batch).images is None:  # a mixing --da: mixed soft targets
            batch = batch._replace(observed_labels=targets)
        if self.table is not None:
            extras.rows, extras.seen = self.table.fetch(batch.indices)
        if len(batch.indices) == 0:  # nothing of ours in this batch; the collectives above still ran
            if self.method.table == "labels":
                self.table.scatter(batch.indices, logits.detach()[:0])
            return logits.float().sum(1) * 0.0
        losses = self.method.losses(batch, logits, extras)
        if self.method.table == "labels":
            self.table.scatter(batch.indices, self.method.new_rows(batch, logits, extras))
        return losses

    # ------------------------------------------------------------------ self-distillation teacher
    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        if self.method.teacher == "self":
            self._set_self_teacher(copy.deepcopy(ctx.accelerator.unwrap_model(self.model)), epoch + 1)
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
        if self.method.table == "labels":
            self.generation += 1
            state["labels"] = self.table.save(self.ctx.output_dir / LABEL_SHARDS, self.generation, self.is_main)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        out = self.ctx.output_dir
        saved = state.get("method")
        if saved is not None and saved != self.method.__class__.__name__:
            raise CgTrainError(f"--resume: the checkpoint was trained with another --method ({saved}, not "
                               f"{self.ctx.cfg.supervision.method}): resume with the same --method or use a new "
                               f"--output-dir")
        if self.method.table == "labels":
            self.table.clear()
            self.generation = 0
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
                model = copy.deepcopy(self.ctx.accelerator.unwrap_model(self.model))
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])
                self._set_self_teacher(model, epoch)
            elif self.is_main:
                shutil.rmtree(out / SELF_TEACHERS, ignore_errors=True)
        if self.table is not None:
            self.table.barrier()  # no process writes shards before the main one has cleared old ones


def build_supervision(ctx: RunContext, model: torch.nn.Module) -> Supervision:
    return Supervision(ctx, model)


from . import ce, filter_kd, kd, sl  # noqa: E402,F401  (register)
