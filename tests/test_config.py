"""The config schema: YAML + overrides + flags merge in order; bad keys fail with one line naming them."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cg_train.cli import main, parse_train_args
from cg_train.checks import check_names
from cg_train.config import Config, build_config, to_yaml
from cg_train.errors import ConfigError


def test_defaults_follow_seed_004() -> None:
    cfg = build_config()
    assert (cfg.model.arch, cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum) == ("resnet18", "SGD", 0.1, 0.9)
    assert (cfg.optim.weight_decay, cfg.data.batch_size, cfg.train.epochs, cfg.data.sample_size) == \
        (1e-4, 256, 90, 50000)
    assert cfg.noise.corrupt_fraction == 0.0 and not cfg.data.random_augmentations


def test_yaml_then_overrides_then_flags(tmp_path: Path) -> None:
    yaml = tmp_path / "exp.yaml"
    yaml.write_text("optim:\n  lr: 0.5\n  momentum: 0.0\ntrain:\n  epochs: 3\n")
    cfg, _ = parse_train_args(["/data", "--config", str(yaml), "optim.lr=0.25", "epochs=7", "--momentum", "0.5",
                               "--corrupt-fraction", "0.5", "--wd", "0"])
    assert cfg.data.dir == "/data"
    assert cfg.optim.lr == 0.25  # override beats YAML
    assert cfg.train.epochs == 7  # a unique leaf name works without its section
    assert cfg.optim.momentum == 0.5  # flag beats YAML
    assert cfg.noise.corrupt_fraction == 0.5 and cfg.optim.weight_decay == 0.0


@pytest.mark.parametrize("yaml_text, expected", [
    ("optim:\n  lrr: 0.1\n", "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("optimm:\n  lr: 0.1\n", "unknown config key 'optimm' (did you mean 'optim'?)"),
    ("optim:\n  lr: fast\n", "bad value for optim.lr"),
    ("train:\n  epochs: 1.5\n", "bad value for train.epochs"),
    ("- just\n- a list\n", "must hold a mapping"),
])
def test_bad_yaml_names_the_key(tmp_path: Path, yaml_text: str, expected: str) -> None:
    yaml = tmp_path / "bad.yaml"
    yaml.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        build_config([str(yaml)])
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, expected", [
    (["noise.corrupt_fraction=1.5"], "--corrupt-fraction (noise.corrupt_fraction)=1.5 must be in [0.0, 1.0]"),
    (["noise.corrupt_fraction=-0.1"], "must be in [0.0, 1.0]"),
    (["optim.optimizer=Adamx"], "unknown optimizer 'Adamx'"),
    (["model.arch=resnet19"], "unknown model 'resnet19' (did you mean 'resnet18'?)"),
    (["data.batch_size=0"], "--batch-size (data.batch_size)=0 must be >= 1"),
    (["train.mixed_precision=fp8"], "must be one of no, fp16, bf16"),
    (["optim.momentum=1.0"], "must be in [0.0, 1.0)"),
    (["nonsense"], "must look like section.key=value"),
])
def test_bad_values_name_the_key(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_names(build_config(overrides=overrides))
    assert expected in str(err.value)


def test_optimizer_name_is_case_insensitive() -> None:
    assert build_config(overrides=["optim.optimizer=sgd"]).optim.optimizer == "sgd"


def test_saved_config_reloads_and_ignores_meta(tmp_path: Path) -> None:
    cfg = build_config(overrides=["optim.lr=0.3", "noise.corrupt_fraction=0.25"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg, {"git": {"commit": "abc"}, "world_size": 2}))
    assert OmegaConf.load(path).meta.world_size == 2
    assert build_config([str(path)]) == cfg


def test_cli_prints_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["/data", "--corrupt-fraction", "2", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cg-train: error: --corrupt-fraction")
    with pytest.raises(SystemExit) as exit_info:
        main(["/data", "--lrr", "0.1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(did you mean --lr?)" in err


def test_print_config_is_valid_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["/data", "--arch", "cifar_resnet20", "--print-config"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.model.arch == "cifar_resnet20" and printed.data.dir == "/data"
    assert set(printed.keys()) == {f for f in Config.__dataclass_fields__}


def test_atomic_writes_get_ordinary_file_modes(tmp_path: Path) -> None:
    import os
    import stat

    from cg_train.io import FILE_MODE, atomic_write_text

    atomic_write_text(tmp_path / "atomic.txt", "same mode as open() gives, not mkstemp's 0600\n")
    (tmp_path / "plain.txt").write_text("plain\n")
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.txt").st_mode)
    assert mode == FILE_MODE == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
