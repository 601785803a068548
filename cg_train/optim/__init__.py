"""Optimizer and LR-schedule registries.

An optimizer entry is ``build(params, cfg.optim) -> torch.optim.Optimizer`` plus an
optional ``check(cfg)`` run at start-up (e.g. RM3 refuses momentum).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import torch

from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:
    from ..config import Config, OptimConfig


Build = Callable[[Iterable[torch.nn.Parameter], "OptimConfig"], torch.optim.Optimizer]


@dataclass(frozen=True)
class OptimizerSpec:
    build: Build
    check: Optional[Callable[["Config"], None]] = None
    fused: Optional[Build] = None  # the one-kernel variant, for --fused-optimizer


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer", "--optimizer (optim.optimizer)")
SCHEDULERS: Registry[Callable[..., Any]] = Registry("lr scheduler", "--lr-scheduler (sched.scheduler)")


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: "Config") -> torch.optim.Optimizer:
    spec = OPTIMIZERS.get(cfg.optim.optimizer)
    build = spec.fused if cfg.speed.fused_optimizer else spec.build
    assert build is not None  # check_optimizer_config refused it at start-up
    return build(params, cfg.optim)


def check_optimizer_config(cfg: "Config") -> None:
    spec = OPTIMIZERS.get(cfg.optim.optimizer)
    if spec.check is not None:
        spec.check(cfg)
    if cfg.speed.fused_optimizer and spec.fused is None:
        raise ConfigError(f"--fused-optimizer: optimizer {cfg.optim.optimizer} has no fused variant; drop "
                          f"--fused-optimizer or use --optimizer SGD")


def scheduler_name(cfg: "Config") -> str:
    """The schedule ``cfg`` trains with: ``auto`` is multistep with milestones, else step decay for resnet18 and
    cosine for the others (seed 004)."""
    if cfg.sched.scheduler == "auto":  # --lr-milestones asks for multistep
        return "multistep" if cfg.sched.milestones else "step" if cfg.model.arch == "resnet18" else "cosine"
    return cfg.sched.scheduler


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: "Config") -> torch.optim.lr_scheduler.LRScheduler:
    name = scheduler_name(cfg)
    if cfg.sched.milestones and name != "multistep":
        raise ConfigError(f"--lr-milestones needs --lr-scheduler multistep (or auto), not {name}")
    return SCHEDULERS.get(name)(optimizer, cfg)


OPTIMIZERS.register("SGD", help="torch SGD with momentum and weight decay (foreach; fused with "
                                 "--fused-optimizer)")(OptimizerSpec(
    lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay),
    fused=lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                            fused=True)))


@SCHEDULERS.register("auto", help="multistep with --lr-milestones, else step for resnet18 and cosine for the "
                     "other models (seed 004)")
def _auto(optimizer: torch.optim.Optimizer, cfg: "Config") -> Any:
    raise ConfigError("sched.scheduler=auto is resolved by build_scheduler")  # pragma: no cover


@SCHEDULERS.register("step", help="multiply the LR by gamma every step_size epochs")
def _step(optimizer: torch.optim.Optimizer, cfg: "Config") -> Any:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.sched.step_size, gamma=cfg.sched.gamma)


@SCHEDULERS.register("multistep", help="multiply the LR by gamma after each of the --lr-milestones epochs")
def _multistep(optimizer: torch.optim.Optimizer, cfg: "Config") -> Any:
    if not cfg.sched.milestones:
        raise ConfigError("--lr-scheduler multistep needs --lr-milestones (e.g. 150,180,210)")
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.sched.milestones),
                                                gamma=cfg.sched.gamma)


@SCHEDULERS.register("cosine", help="cosine annealing to 0 over the epochs")
def _cosine(optimizer: torch.optim.Optimizer, cfg: "Config") -> Any:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.train.epochs, 1))


@SCHEDULERS.register("constant", help="keep the initial LR")
def _constant(optimizer: torch.optim.Optimizer, cfg: "Config") -> Any:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


from . import rm3  # noqa: E402,F401  (registers RM3)
