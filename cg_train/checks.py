"""Start-up checks that need the registries: every name-valued key, and each entry's own checks.

The schema (``config.py``) is plain data at the bottom of the package and
imports no registry (registries may import it, for types); range checks live
there. Names are checked here, above both, by asking each registry about the
key it owns, so a typo fails in one line before anything is written. The CLI,
``launch`` and :func:`cg_train.engine.run` call :func:`check_names`.
"""
from __future__ import annotations

from typing import Any

from .augment import SCHEMES, check_augment_config
from .config import Config
from .data import DATASETS, LOADERS
from .models import MODELS
from .noise import NOISES
from .optim import OPTIMIZERS, SCHEDULERS, check_optimizer_config
from .registry import Registry
from .supervision import METHODS, check_method


def registry_keys(cfg: Config) -> list[tuple[Registry[Any], str]]:
    """(registry, the value of the config key it owns)."""
    return [(DATASETS, cfg.data.dataset), (LOADERS, cfg.data.loader), (MODELS, cfg.model.arch),
            (NOISES, cfg.noise.noise_type), (OPTIMIZERS, cfg.optim.optimizer),
            (SCHEDULERS, cfg.sched.scheduler), (METHODS, cfg.supervision.method),
            (SCHEMES, cfg.augment.da)]


def check_names(cfg: Config) -> Config:
    """Raise a one-line ConfigError for an unknown name or a choice its entry refuses; return ``cfg``."""
    for registry, value in registry_keys(cfg):
        registry.get(value)  # the error names the key and the choices
    check_optimizer_config(cfg)
    check_method(cfg)
    check_augment_config(cfg)
    return cfg
