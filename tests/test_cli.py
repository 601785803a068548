"""The command line as a user meets it: a fresh `python -m cg_train` process each time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cg_train.cli import main
from cg_train.data.demo import prepare_demo
from conftest import run_cli


def test_help_lists_seed_flags_and_subcommands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--corrupt-fraction", "--weight-decay", "--output-dir", "--optimizer", "--test-imagenet-dir",
                 "--random-augmentations", "--sample-size", "--resume", "--arch", "--epochs", "prepare-demo"):
        assert flag in result.stdout, flag


@pytest.mark.parametrize("args, expected, process", [
    (["/no/such/dir"], "data directory /no/such/dir does not exist", True),  # the console entry point itself
    (["{data}", "--corrupt-fraction", "1.5"], "--corrupt-fraction (noise.corrupt_fraction)=1.5 must be in", False),
    (["{data}", "--optimizer", "adam_typo"], "unknown optimizer 'adam_typo'", False),
    ([], "no dataset given: pass DATA_DIR", False),
])
def test_bad_input_is_one_line_without_traceback(mnist_small: Path, tmp_path: Path, args: list[str], expected: str,
                                                  process: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """One case through a real ``cg-train`` process (what a user's shell sees); the rest through ``main``, the
    same code path that process runs, without paying a torch import each."""
    args = [*(a.format(data=mnist_small) for a in args), "--output-dir", str(tmp_path / "out")]
    if process:
        result = run_cli(*args)
        code, stderr = result.returncode, result.stderr
    else:
        capsys.readouterr()
        code, stderr = main(args), capsys.readouterr().err
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cg-train: error: ") and expected in lines[0], stderr
    assert not (tmp_path / "out").exists()  # nothing was written


def test_list_shows_registries(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("imagefolder", "torchvision", "resnet18", "vgg13_bn", "inception_v3", "cifar_resnet20", "SGD",
                 "uniform", "flip", "epoch_csv"):
        assert name in out, name


def test_prepare_demo_writes_real_mnist_jpegs(demo_root: Path, tmp_path: Path) -> None:
    for split, per_class in (("train", 400), ("val", 100)):
        assert sorted(p.name for p in (demo_root / split).iterdir()) == [str(d) for d in range(10)]
        counts = [len(list((demo_root / split / str(d)).glob("*.jpg"))) for d in range(10)]
        assert counts == [per_class] * 10
    image = Image.open(next((demo_root / "train" / "8").iterdir()))
    assert image.format == "JPEG" and image.size == (28, 28)
    pixels = np.asarray(image)
    assert pixels.max() > 200 and (pixels < 30).mean() > 0.5  # a bright digit on a dark background
    assert prepare_demo(demo_root) == demo_root  # idempotent
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "precious.txt").write_text("keep me")
    assert main(["prepare-demo", str(tmp_path / "taken")]) == 2
    assert (tmp_path / "taken" / "precious.txt").read_text() == "keep me"
