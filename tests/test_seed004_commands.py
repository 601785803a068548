"""Seed 004's commands, flag for flag, and the configs/ files that stand for them."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from cg_train.cli import parse_train_args
from cg_train.config import build_config
from conftest import REPO

CONFIGS = REPO / "configs"

#: (seed 004's training command after `python -m coherent_gradients.imagenet_main`, the config that reproduces it)
SEED_COMMANDS = [
    ("/imagenet --corrupt-fraction=0.5 --weight-decay=0.0 --output-dir=/tmp/experiments/experiment_noise_0.5",
     "imagenet_noise_0.5.yaml"),
    ("/imagenet --corrupt-fraction=0.5 --weight-decay=0.0 --output-dir=/tmp/experiments/experiment_noise_0.5_with_rm3 "
     "--momentum=0.0 --optimizer=RM3", "imagenet_noise_0.5_rm3.yaml"),
    ("/imagenet --weight-decay=0.0 --output-dir=/tmp/experiments/experiment_easy_hard --store-learned --epochs=2",
     "imagenet_easy_hard.yaml"),
    ("/tmp/easy_imagenet --weight-decay=0.0 --output-dir=/tmp/experiments/experiment_easy_examples",
     "imagenet_easy_examples.yaml"),
    # seed 004 wrote `weight-decay=0.0` without its dashes: it is read as the override weight_decay=0.0
    ("/tmp/easy_imagenet --test-imagenet-dir=/imagenet weight-decay=0.0 "
     "--output-dir=/tmp/experiments/experiment_easy_train_but_original_test", "imagenet_easy_train_original_test.yaml"),
]
#: What a config may set beyond the seed's flags without changing the experiment.
NOT_THE_EXPERIMENT = {"data": {"workers", "dir"}, "output": {"dir"}}


@pytest.mark.parametrize("command, config", SEED_COMMANDS, ids=[c for _, c in SEED_COMMANDS])
def test_seed_command_equals_its_config(command: str, config: str) -> None:
    from_flags, _ = parse_train_args(shlex.split(command))
    from_file, _ = parse_train_args([shlex.split(command)[0], "--config", str(CONFIGS / config)])
    for section in ("data", "noise", "model", "optim", "sched", "train", "record"):
        a, b = vars(getattr(from_flags, section)), vars(getattr(from_file, section))
        differ = {k for k in a if a[k] != b[k]} - NOT_THE_EXPERIMENT.get(section, set())
        assert not differ, f"{config}: {section}.{sorted(differ)} differ from seed 004's command"


def test_every_config_file_validates() -> None:
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {c for _, c in SEED_COMMANDS} <= {f.name for f in files}
    for path in files:
        build_config([str(path)], ["data.dir=/data"])  # raises ConfigError on a bad key or value


def test_demo_reproduction_configs_differ_only_in_the_optimizer() -> None:
    sgd = build_config([str(CONFIGS / "demo_noise_0.5_sgd.yaml")])
    rm3 = build_config([str(CONFIGS / "demo_noise_0.5_rm3.yaml")])
    assert (sgd.optim.optimizer, rm3.optim.optimizer) == ("SGD", "RM3") and sgd.optim.momentum == 0
    rm3.optim.optimizer = "SGD"
    assert rm3 == sgd
