"""Command lines that used to do something else than the user meant: resume flag, '=' in paths, folder names."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cg_train.cli import main


def printed_config(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    capsys.readouterr()
    assert main([*argv, "--print-config"]) == 0
    return OmegaConf.to_container(OmegaConf.create(capsys.readouterr().out))


def test_bare_resume_before_the_data_dir_does_not_take_it_as_the_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = printed_config(capsys, "--resume", "/imagenet", "--epochs", "3")
    assert cfg["data"]["dir"] == "/imagenet" and cfg["output"]["resume"] == "auto"
    cfg = printed_config(capsys, "/imagenet", "--resume-from", str(tmp_path / "c.pth.tar"))
    assert cfg["output"]["resume"] == str(tmp_path / "c.pth.tar")
    with pytest.raises(SystemExit) as exited:
        main(["/imagenet", f"--resume={tmp_path}/c.pth.tar"])
    assert exited.value.code == 2
    assert "use --resume-from PATH for a checkpoint file" in capsys.readouterr().err


def test_a_data_dir_with_an_equals_sign_is_not_an_override(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    point = tmp_path / "sweep" / "optim.lr=0.1"  # how cg-launch names its point folders
    point.mkdir(parents=True)
    cfg = printed_config(capsys, str(point), "optim.lr=0.2")
    assert cfg["data"]["dir"] == str(point) and cfg["optim"]["lr"] == 0.2
    monkeypatch.chdir(tmp_path / "sweep")
    assert printed_config(capsys, "optim.lr=0.1")["data"]["dir"] == "optim.lr=0.1"  # an existing folder here
    assert printed_config(capsys, "data", "train.epochs=2")["train"]["epochs"] == 2


def test_a_folder_named_like_a_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "list").mkdir()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["list", "--epochs", "3", "--output-dir", "runs"]) == 2
    assert ("'list' is a cg-train command and also a folder here, and --epochs is not a flag of the command: "
            "to train on the folder write ./list") in capsys.readouterr().err
    assert printed_config(capsys, "./list", "--epochs", "3")["data"]["dir"] == "./list"
    assert main(["list", "models"]) == 0 and "resnet18" in capsys.readouterr().out
