"""Seed 001's nine data augmentations (DA), applied to each training batch on the device after the loader.

Why on the device: the same code then runs after ``--loader torchvision`` and
``--loader dali`` alike, mixing needs the whole batch anyway, and the teacher and
the student see one and the same tensor. Each scheme is one class registered in
``SCHEMES`` (``--da NAME``); per-image schemes work on the de-normalised [0, 1]
images and normalise again, mixing schemes use torchvision.transforms.v2's own
MixUp / CutMix parameters.

Randomness: every batch's draws come from a generator seeded by (--seed, epoch,
step, rank), so a run resumed mid-epoch draws exactly what the uninterrupted run
drew, whatever the loader or device.

Two ways to use the augmented batch (seed 001):

* replace (default): the augmented batch is the batch. A mixed row carries its
  second source in ``Batch.mix`` (partner index, partner label, weight); targets
  become ``w * onehot(y_a) + (1 - w) * onehot(y_b)``.
* ``--lw-mix a,b,c`` (method kd): the student and teacher see the batch *and* its
  augmented copy in one forward; ``Batch.mix.images`` holds the copy, and the
  per-sample recorders see the original rows only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from ..data.augment import resolve as resolve_preset
from ..data.manifest import Batch, Mix, MixedBatch, mix_of
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:
    from ..config import AugmentConfig, Config
    from ..run_context import Recorder, RunContext
    from .t_stddev import TeacherOutputs

__all__ = ["SCHEMES", "Augmenter", "Mix", "Scheme", "build_augmentation", "check_augment_config", "mixed_targets",
           "mixes_rows", "model_input", "parse_lw_mix"]


@dataclass
class Augmented:
    """One scheme's output for a batch of ``b`` images: ``m`` rows, each from one or two batch positions."""

    images: torch.Tensor  # [m, C, H, W], normalised like the input
    source: torch.Tensor  # [m] first source (batch position)
    partner: Optional[torch.Tensor] = None  # [m] second source (batch position); None: no mixing
    weight: Optional[torch.Tensor] = None  # [m] share of the first source


#: scores ``[m]`` of candidate images (cutmix_pick); built by :class:`Augmenter` from the models.
Scorer = Callable[[torch.Tensor], torch.Tensor]


class Scheme:
    """Base class: ``__call__(images, labels)`` -> :class:`Augmented`, drawing from the torch CPU generator."""

    mixes = False  # True: rows have two sources
    needs_teacher = False
    #: the loader's normalisation (its ``--augment`` preset), undone where a scheme works on pixels
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __init__(self, cfg: "AugmentConfig", num_classes: int):
        self.cfg, self.num_classes = cfg, num_classes
        self.scorer: Optional[Scorer] = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Augmented:
        raise NotImplementedError


SCHEMES: Registry[type[Scheme]] = Registry("augmentation", "--da (augment.da)")


def _stats(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, -1, 1, 1)
    return (torch.tensor(mean, device=images.device, dtype=images.dtype).view(shape),
            torch.tensor(std, device=images.device, dtype=images.dtype).view(shape))


def denormalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    mean, std = _stats(images, mean, std)
    return images * std + mean


def normalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    mean, std = _stats(images, mean, std)
    return (images - mean) / std


def _identity_rows(images: torch.Tensor) -> torch.Tensor:
    return torch.arange(len(images), device=images.device)


def _draw(n: int) -> torch.Tensor:
    """``n`` uniform numbers from the CPU generator (so the draws do not depend on the device)."""
    return torch.rand(n)


@SCHEMES.register("identity", help="no augmentation beyond the loader's")
class Identity(Scheme):
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Augmented:
        return Augmented(images, _identity_rows(images))


def random_flip(x: torch.Tensor) -> torch.Tensor:
    flip = (_draw(len(x)) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


@SCHEMES.register("flip", help="random horizontal flip (p=0.5 per image)")
class Flip(Scheme):
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Augmented:
        return Augmented(random_flip(images), _identity_rows(images))


def random_crop(x: torch.Tensor, padding: int, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Per-image random crop of the zero-padded (black) image back to its size, as CIFAR's RandomCrop(pad);
    ``mean``/``std``: how ``x`` was normalised."""
    if padding == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(denormalize(x, mean, std), (padding,) * 4)
    offsets = (torch.rand(len(x), 2) * (2 * padding + 1)).long().to(x.device)
    rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(-1, 1, h, 1)  # one gather for the batch
    cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(-1, 1, 1, w)
    c = x.shape[1]
    crops = padded.gather(2, rows.expand(-1, c, h, padded.shape[-1])).gather(3, cols.expand(-1, c, h, w))
    return normalize(crops, mean, std)


@SCHEMES.register("flip_crop", help="random crop of the --crop-padding zero-padded image, then random flip")
class FlipCrop(Scheme):
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Augmented:
        return Augmented(random_flip(random_crop(images, self.cfg.crop_padding, self.mean, self.std)),
                         _identity_rows(images))


@SCHEMES.register("cutout", help="Cutout (DeVries & Taylor): a --cut-size square at a random centre set to 0")
class Cutout(Scheme):
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Augmented:
        b, _, h, w = images.shape
        centre = (torch.rand(b, 2) * torch.tensor([h, w])).long().to(images.device)
        half = self.cfg.cut_size // 2
        ys = torch.arange(h, device=images.device).view(1, h, 1)
        xs = torch.arange(w, device=images.device).view(1, 1, w)
        cy, cx = centre[:, 0].view(b, 1, 1), centre[:, 1].view(b, 1, 1)
        inside = (ys >= cy - half) & (ys < cy - half + self.cfg.cut_size) & \
                 (xs >= cx - half) & (xs < cx - half + self.cfg.cut_size)
        return Augmented(images * (~inside).unsqueeze(1).to(images.dtype), _identity_rows(images))


@SCHEMES.register("autoaugment", help="torchvision.transforms.v2.AutoAugment per image (--autoaugment-policy)")
class AutoAugment(Scheme):
    def __init__(self, cfg: "AugmentConfig", num_classes: int):
        super().__init__(cfg, num_classes)
        self.transform = v2.AutoAugment(v2.AutoAugmentPolicy(cfg.autoaugment_policy))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Augmented:
        as_bytes = (denormalize(images, self.mean, self.std).clamp(0, 1) * 255).round().to(torch.uint8)
        out = torch.stack([self.transform(image) for image in as_bytes])  # one policy draw per image
        return Augmented(normalize(out.to(images.dtype) / 255, self.mean, self.std), _identity_rows(images))


class _TorchvisionMix(Scheme):
    """torchvision v2 MixUp / CutMix: row i is mixed with row i-1 (torchvision pairs consecutive images)."""

    mixes = True
    kind: type = v2.MixUp

    def __init__(self, cfg: "AugmentConfig", num_classes: int):
        super().__init__(cfg, num_classes)
        self.transform = self.kind(alpha=cfg.mix_alpha, num_classes=num_classes)

    def mix(self, images: torch.Tensor, labels: torch.Tensor) -> Augmented:
        params = {"labels": labels, "batch_size": len(images), **self.transform.make_params([images])}
        mixed = self.transform.transform(images, params)
        lam = params.get("lam_adjusted", params.get("lam"))  # CutMix: 1 - pasted area / image area
        rows = _identity_rows(images)
        return Augmented(mixed, rows, partner=rows.roll(1), weight=torch.full((len(images),), float(lam),
                                                                                device=images.device))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Augmented:
        if len(images) < 2:
            return Augmented(images, _identity_rows(images))
        return self.mix(images, labels)


@SCHEMES.register("mixup", help="torchvision v2 MixUp, lambda ~ Beta(--mix-alpha)")
class MixUp(_TorchvisionMix):
    kind = v2.MixUp


@SCHEMES.register("cutmix", help="torchvision v2 CutMix, lambda ~ Beta(--mix-alpha), label weight = area kept")
class CutMix(_TorchvisionMix):
    kind = v2.CutMix


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row entropy of softmax(logits), in nats."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(1)


def pick_top(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Positions of the ``n`` highest scores (seed 001's 'sort' scheme), highest first."""
    return scores.argsort(descending=True, stable=True)[:min(n, len(scores))]


@SCHEMES.register("cutmix_pick", help="CutMixPick: --mix-n-run CutMix draws, keep the --n-pick with the highest "
                                      "--cutmix-pick-criterion (s_ent, t_ent, kld)")
class CutMixPick(CutMix):
    criterion: Optional[str] = None  # fixed by a subclass; None: --cutmix-pick-criterion

    @property
    def chosen_criterion(self) -> str:
        return self.criterion or self.cfg.pick_criterion

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> Augmented:
        if len(images) < 2:
            return Augmented(images, _identity_rows(images))
        pool = [self.mix(images, labels) for _ in range(self.cfg.mix_n_run)]
        candidates = torch.cat([p.images for p in pool])
        if self.scorer is None:
            raise RuntimeError("cutmix_pick needs a scorer (set by Augmenter)")
        keep = pick_top(self.scorer(candidates), self.cfg.n_pick)
        return Augmented(candidates[keep], torch.cat([p.source for p in pool])[keep],
                         torch.cat([p.partner for p in pool])[keep], torch.cat([p.weight for p in pool])[keep])


@SCHEMES.register("cutmix_pick_s_ent", help="CutMixPick (S. ent.): keep the mixed images of highest student entropy")
class CutMixPickStudent(CutMixPick):
    criterion = "s_ent"


@SCHEMES.register("cutmix_pick_t_ent", help="CutMixPick (T. ent.): keep the mixed images of highest teacher entropy")
class CutMixPickTeacher(CutMixPick):
    criterion = "t_ent"


def criterion_scores(criterion: str, student: Callable[[torch.Tensor], torch.Tensor],
                     teacher: Optional[Callable[[torch.Tensor], torch.Tensor]], temperature: float) -> Scorer:
    """Seed 001's picking criteria: student entropy, teacher entropy, KL(teacher/T || student/T)."""
    def score(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if criterion == "s_ent":
                return entropy(student(images))
            if criterion == "t_ent":
                return entropy(teacher(images))
            log_t = F.log_softmax(teacher(images).float() / temperature, dim=1)
            log_s = F.log_softmax(student(images).float() / temperature, dim=1)
            return (log_t.exp() * (log_t - log_s)).sum(1)
    return score


def parse_lw_mix(text: Optional[str]) -> Optional[tuple[float, float, float]]:
    """``"1,0,1"`` or ``"[1,0,1]"`` -> (1.0, 0.0, 1.0); None stays None."""
    if text is None:
        return None
    parts = str(text).strip().strip("[]()").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0:
        raise ConfigError(f"--lw-mix (augment.lw_mix)={text!r} must be three weights a,b,c >= 0, e.g. 1,0,1")
    return values  # type: ignore[return-value]


def mixes_rows(cfg: "Config") -> bool:
    """True when the training rows the recorders see are mixed images: a mixing ``--da`` without ``--lw-mix``."""
    return SCHEMES.get(cfg.augment.da).mixes and parse_lw_mix(cfg.augment.lw_mix) is None


def check_augment_config(cfg: "Config") -> None:
    """Refuse combinations that would silently mis-attribute or mis-weigh a sample (one line each)."""
    aug = cfg.augment
    scheme = SCHEMES.get(aug.da)
    method = cfg.supervision.method  # (which methods take --lw-mix is theirs to say: supervision.Method.check)
    teacher_needed = (issubclass(scheme, CutMixPick) and (scheme.criterion or aug.pick_criterion) != "s_ent") or \
        aug.check_ce_var
    if teacher_needed and not cfg.supervision.teacher:
        raise ConfigError(f"--da {aug.da} --cutmix-pick-criterion {aug.pick_criterion} / --check-ce-var need a "
                          f"teacher: add --teacher CKPT")
    if aug.check_ce_var and method != "kd":
        raise ConfigError(f"--check-ce-var measures the teacher of --method kd, not --method {method}: add "
                          f"--method kd --teacher CKPT")
    if aug.check_ce_var and not aug.fix_student:
        raise ConfigError("--check-ce-var measures a fixed student: add --fix-student (and --lr 0, as seed 001)")
    if mixes_rows(cfg):  # --paths records both sources and the weight of every mixed row (paths/layout.py)
        # (a table --method refuses mixed rows in its own check: supervision.Method.check)
        if cfg.record.p_smoothing > 0:
            raise ConfigError(f"--p-smoothing averages one sample's predictions but --da {aug.da} mixes two per "
                              f"image: use --lw-mix (records the unmixed rows) or an unmixed --da")


def mixed_targets(batch: Batch, num_classes: int) -> torch.Tensor:
    """Hard labels for an unmixed batch; ``w * onehot(y_a) + (1 - w) * onehot(y_b)`` for a mixed one."""
    mix = mix_of(batch)
    if mix is None or mix.images is not None:
        return batch.observed_labels
    own = F.one_hot(batch.observed_labels, num_classes).float()
    other = F.one_hot(mix.partner_label, num_classes).float()
    w = mix.weight.float().unsqueeze(1)
    return w * own + (1 - w) * other


def stream_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """One generator seed per (run seed, epoch, step, rank): resume draws what the full run drew."""
    return (((seed * 1_000_003 + epoch) * 1_000_033 + step) * 1_009 + rank) % (2 ** 63 - 1)


class Augmenter:
    """Applies ``--da`` to a batch on the device; builds the CutMixPick scorer from the student and teacher."""

    def __init__(self, cfg: "Config", num_classes: int, rank: int, student: torch.nn.Module,
                 teachers: list[torch.nn.Module]):
        self.cfg, self.rank = cfg, rank
        self.scheme = SCHEMES.get(cfg.augment.da)(cfg.augment, num_classes)
        preset = resolve_preset(cfg.data.augment, cfg.data.random_augmentations)  # the loader's mean/std
        self.scheme.mean, self.scheme.std = preset.mean, preset.std
        self.lw_mix = parse_lw_mix(cfg.augment.lw_mix)
        self.active = self.lw_mix is not None or not isinstance(self.scheme, Identity)
        if isinstance(self.scheme, CutMixPick):
            self.scheme.scorer = criterion_scores(self.scheme.chosen_criterion, self._eval(student),
                                                  self._eval(teachers[0]) if teachers else None,
                                                  cfg.supervision.temperature)

    @staticmethod
    def _eval(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """Score candidates in eval mode, so picking does not move BatchNorm statistics."""
        def forward(images: torch.Tensor) -> torch.Tensor:
            was_training = model.training
            model.eval()
            try:
                return model(images).float()
            finally:
                model.train(was_training)
        return forward

    def __call__(self, batch: Batch, epoch: int, step: int) -> Batch:
        if not self.active or len(batch.indices) == 0:
            return batch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.cfg.train.seed, epoch, step, self.rank))
            out = self.scheme(batch.images, batch.observed_labels)
        partner = out.partner if out.partner is not None else out.source
        weight = out.weight if out.weight is not None else torch.ones(len(out.source), device=out.images.device)
        partner_index = torch.where(weight < 1, batch.indices[partner], torch.full_like(batch.indices[partner], -1))
        mix = Mix(weight, partner_index, batch.observed_labels[partner])
        if self.lw_mix is not None:  # the student sees both; recorders see the original rows
            mix.images, mix.source, mix.partner = out.images, out.source, partner
            mix.source_label = batch.observed_labels[out.source]
            return MixedBatch(*batch, mix)
        src = out.source
        rows = (out.images, batch.observed_labels[src], batch.true_labels[src], batch.indices[src])
        return MixedBatch(*rows, mix) if self.scheme.mixes else Batch(*rows)


def model_input(batch: Batch) -> torch.Tensor:
    """What the student and teacher see: the batch, followed by its augmented copy under --lw-mix."""
    mix = mix_of(batch)
    if mix is not None and mix.images is not None:
        return torch.cat([batch.images, mix.images])
    return batch.images


def build_augmentation(ctx: "RunContext", model: torch.nn.Module, supervision: "TeacherOutputs"
                       ) -> tuple[Optional[Augmenter], dict[str, "Recorder"]]:
    """The run's :class:`Augmenter` (None for plain identity) and its recorders (T. stddev); ``supervision``
    lends its teachers (CutMixPick's scorer) and its last outputs (T. stddev)."""
    cfg = ctx.cfg
    augmenter = Augmenter(cfg, ctx.data.train.num_classes, ctx.rank, model, supervision.teachers)
    recorders: dict[str, "Recorder"] = {}
    if cfg.augment.check_ce_var:
        from .t_stddev import TStddevRecorder

        recorders["t_stddev"] = TStddevRecorder(ctx, supervision)
    return (augmenter if augmenter.active else None), recorders
