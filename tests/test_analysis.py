"""`cg-analyze` / `python -m analysis.cg_curves`: seed 004's four figures and a summary, never stopped by one
broken experiment."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import pandas as pd
import pytest

from analysis.cg_curves import FIGURES, plot_figure
from analysis.cli import main
from analysis.experiments import load_experiments
from conftest import REPO, run_cli, train

FIGURE_NAMES = ("loss_train_test", "acc1_train_test", "loss_pristine_corrupt", "acc1_pristine_corrupt")
HEADER = "epoch,count,loss,acc1,acc5\n"


def write_experiment(folder: Path, acc1: dict[str, list[float]]) -> None:
    """An experiment written in seed 004's CSV format with known values (loss = 1 - acc1/100)."""
    folder.mkdir(parents=True)
    for phase, values in acc1.items():
        rows = "".join(f"{e},50,{1 - a / 100:.4f},{a},{min(a + 20, 100)}\n" for e, a in enumerate(values))
        (folder / f"{phase}.csv").write_text(HEADER + rows)


@pytest.fixture(scope="module")
def experiments(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("analysis") / "experiments"
    # a real run ...
    assert train(mnist_small, root / "real_sgd", "--epochs", "0", "--corrupt-fraction", "0.5",
                 "--sample-size", "50") == 0  # real CSVs, evaluation only (epoch 0)
    # ... one with known numbers ...
    write_experiment(root / "known", {"pristine": [10, 60, 90, 85], "corrupt": [10, 5, 8, 30],
                                      "train_sample": [10, 30, 50, 55], "test": [10, 50, 80, 75]})
    # ... and a broken one: a garbled row, a cut-off last line, a missing file, a foreign CSV
    broken = root / "broken"
    write_experiment(broken, {"pristine": [10, 20, 30], "train_sample": [10, 15]})
    with open(broken / "pristine.csv", "a") as f:
        f.write("x#@!,zz,??\n3,50,0.1")
    (broken / "test.csv").write_text("step,value\n1,2\n")
    # a run that died before writing anything but its config is not an experiment at all
    (root / "died").mkdir()
    (root / "died" / "config.yaml").write_text("model: {}\n")
    return root


def test_four_figures_and_a_summary_despite_a_broken_experiment(experiments: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plots"
    assert main([str(experiments), "--output", str(out)]) == 0
    for name in FIGURE_NAMES:
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    # real_sgd is a real run: it wrote reliability.csv, so it gets a reliability diagram
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.{ext}" for n in (*FIGURE_NAMES, "reliability_test") for ext in ("pdf", "png")]
        + ["summary.csv", "summary.md"])

    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert all(line.startswith("cg-analyze: warning: broken: ") for line in warnings), warnings
    assert len(warnings) == 4
    for fragment in ("1 garbled row(s) dropped", "last line is cut off", "corrupt.csv is missing",
                     "test.csv has columns step,value"):
        assert any(fragment in line for line in warnings), fragment

    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.experiment) == {"known", "real_sgd", "broken"}
    known = summary[summary.experiment == "known"].set_index("phase")
    assert known.loc["pristine", ["last_epoch", "final_acc1", "best_acc1", "best_acc1_epoch"]].tolist() == [3, 85, 90, 2]
    assert known.loc["corrupt", "final_acc1"] == 30 and known.loc["test", "min_loss"] == pytest.approx(0.2)
    broken = summary[summary.experiment == "broken"].set_index("phase")
    assert sorted(broken.index) == ["pristine", "train_sample"] and broken.loc["pristine", "last_epoch"] == 2
    real = summary[summary.experiment == "real_sgd"].set_index("phase")
    assert real.loc["test", "last_epoch"] == 0 and len(real) == 4
    markdown = (out / "summary.md").read_text()
    assert markdown.startswith("| experiment | phase |") and "| known | pristine | 3 |" in markdown


def test_one_line_per_experiment_and_phase_with_names_in_the_legend(experiments: Path) -> None:
    loaded, _ = load_experiments(experiments)
    assert [e.name for e in loaded] == ["broken", "known", "real_sgd"]
    for stat, pair in FIGURES:
        axes = plot_figure(loaded, stat, pair).axes[0]
        labels = [text.get_text() for text in axes.get_legend().get_texts()]
        expected = [f"{e.name} [{phase}]" for e in loaded for phase in pair
                    if ("train_sample" if phase == "train" else phase) in e.curves]
        assert labels == expected and len(axes.lines) == len(expected)
    known = next(e for e in loaded if e.name == "known")
    line = plot_figure([known], "acc1", ("pristine", "corrupt")).axes[0].lines[1]
    assert line.get_ydata().tolist() == [10, 5, 8, 30] and line.get_linestyle() == "--"


def test_module_entry_point_defaults_to_the_experiments_dir(tmp_path: Path) -> None:
    write_experiment(tmp_path / "exp" / "only", {"pristine": [1, 2], "corrupt": [3, 4], "train_sample": [5, 6],
                                                 "test": [7, 8]})
    result = run_cli(str(tmp_path / "exp"), module="analysis.cg_curves")
    assert result.returncode == 0, result.stderr
    assert all((tmp_path / "exp" / f"{name}.png").is_file() for name in FIGURE_NAMES)  # seed 004: outdir = exptdir


def test_nothing_to_plot_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "missing"):
        assert main([str(target)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cg-analyze: error: "), lines
    assert main(["--no-such-flag"]) == 2  # a return code for callers, not a SystemExit


def test_console_script_points_at_main() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["cg-analyze"].partition(":")
    assert getattr(import_module(module), function) is sys.modules["analysis.cli"].console_main


def test_analysis_never_imports_the_trainer() -> None:
    code = ("import sys, analysis.cli, analysis.cg_curves, analysis.summary, analysis.experiments; "
            "bad = [m for m in sys.modules if m.startswith(('cg_train.engine', 'torch'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
