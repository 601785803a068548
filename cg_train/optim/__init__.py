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


@dataclass(frozen=True)
class OptimizerSpec:
    build: Callable[[Iterable[torch.nn.Parameter], "OptimConfig"], torch.optim.Optimizer]
    check: Optional[Callable[["Config"], None]] = None


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer", "--optimizer (optim.optimizer)")
SCHEDULERS: Registry[Callable[..., Any]] = Registry("lr scheduler", "--lr-scheduler (sched.scheduler)")


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: "Config") -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.optim.optimizer).build(params, cfg.optim)


def check_optimizer_config(cfg: "Config") -> None:
    spec = OPTIMIZERS.get(cfg.optim.optimizer)
    if spec.check is not None:
        spec.check(cfg)


def scheduler_name(cfg: "Config") -> str:
    """The schedule ``cfg`` trains with: ``auto`` is step decay for resnet18, cosine for the others (seed 004)."""
    if cfg.sched.scheduler == "auto":
        return "step" if cfg.model.arch == "resnet18" else "cosine"
    return cfg.sched.scheduler


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: "Config") -> torch.optim.lr_scheduler.LRScheduler:
    return SCHEDULERS.get(scheduler_name(cfg))(optimizer, cfg)


OPTIMIZERS.register("SGD", help="torch SGD with momentum and weight decay")(OptimizerSpec(
    lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)))


@SCHEDULERS.register("auto", help="step for resnet18, cosine for the other models (seed 004)")
def _auto(optimizer: torch.optim.Optimizer, cfg: "Config") -> Any:
    raise ConfigError("sched.scheduler=auto is resolved by build_scheduler")  # pragma: no cover


@SCHEDULERS.register("step", help="multiply the LR by gamma every step_size epochs")
def _step(optimizer: torch.optim.Optimizer, cfg: "Config") -> Any:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.sched.step_size, gamma=cfg.sched.gamma)


@SCHEDULERS.register("cosine", help="cosine annealing to 0 over the epochs")
def _cosine(optimizer: torch.optim.Optimizer, cfg: "Config") -> Any:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.train.epochs, 1))


@SCHEDULERS.register("constant", help="keep the initial LR")
def _constant(optimizer: torch.optim.Optimizer, cfg: "Config") -> Any:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


from . import rm3  # noqa: E402,F401  (registers RM3)
