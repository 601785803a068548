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
from .data.augment import AUGMENTATIONS
from .data.folds import check_fold_config
from .models import MODELS
from .noise import NOISES
from .noise.instance import check_instance_config
from .optim import OPTIMIZERS, SCHEDULERS, check_optimizer_config
from .registry import Registry
from .supervision import METHODS, check_method


#: (registry, the config key whose value it owns)
REGISTRY_KEYS: list[tuple[Registry[Any], str]] = [
    (DATASETS, "data.dataset"), (LOADERS, "data.loader"), (AUGMENTATIONS, "data.augment"), (MODELS, "model.arch"),
    (NOISES, "noise.noise_type"), (OPTIMIZERS, "optim.optimizer"), (SCHEDULERS, "sched.scheduler"),
    (METHODS, "supervision.method"), (SCHEMES, "augment.da")]


def check_names(cfg: Config) -> Config:
    """Raise a one-line ConfigError for an unknown name or a choice its entry refuses; return ``cfg``.

    Each name is stored back in its registered spelling, so the auto schedule, the resume check and
    config.yaml all see one name for ``--arch ResNet18`` and ``resnet18``.
    """
    for registry, key in REGISTRY_KEYS:
        section, name = key.split(".")
        canonical = registry.canonical(getattr(getattr(cfg, section), name))  # the error names key and choices
        registry.get(canonical)  # a family entry (wrn_D_W) checks its values here, e.g. WideResNet depths
        setattr(getattr(cfg, section), name, canonical)
    check_optimizer_config(cfg)
    check_method(cfg)
    check_augment_config(cfg)
    check_fold_config(cfg.noise)
    check_instance_config(cfg.noise)
    return cfg
