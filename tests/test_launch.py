"""cg-launch without a cluster: sweep files checked before anything is submitted, point names, and real
submitit jobs (a LocalExecutor array, the debug executor) that train exactly what cg-train trains."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import REPO, assert_same_csvs, train
from launch.cli import main as launch_main
from launch.records import LaunchDir
from launch.status import format_status, launch_status
from launch.sweep import load_sweep

BASE = """\
base:
  data: {{dir: {data}, workers: 0, batch_size: 32, sample_size: 40}}
  model: {{arch: simple_cnn}}
  optim: {{lr: 0.05, momentum: 0.9, weight_decay: 0.0}}
  train: {{epochs: 1, progress: false}}
"""
#: the same run as BASE, through cg-train's command line
TRAIN_ARGS = ["--sample-size", "40", "--epochs", "1"]


def write_sweep(path: Path, data: Path, body: str) -> Path:
    path.write_text(BASE.format(data=data) + textwrap.dedent(body))
    return path


@pytest.mark.parametrize("body, expected", [
    ("axes:\n  noise.corupt_fraction: [0.0, 0.5]\n",
     "unknown config key 'noise.corupt_fraction' in axes (did you mean 'noise.corrupt_fraction'?)"),
    ("axes:\n  train.seed: []\n", "axis 'train.seed' is empty: give it at least one value"),
    ("axes:\n  train.seed: 3\n", "axis 'train.seed' must be a list of values"),
    ("axis:\n  train.seed: [0]\n", "unknown key 'axis' (did you mean 'axes'?)"),
    ("axes:\n  output.dir: [a, b]\n", "axis 'output.dir' is set by cg-launch"),
    ("axes:\n  noise.corrupt_fraction: [0.5, 1.5]\n",
     "sweep.yaml (point corrupt_fraction=1.5): --corrupt-fraction (noise.corrupt_fraction)=1.5 must be in"),
    ("axes:\n  optim.lr: [fast]\n", "bad value for optim.lr"),
    ("axes:\n  optim.optimizer: [SGD, Adamm]\n", "unknown optimizer 'Adamm'"),
    ("launch:\n  partiton: gpu\n", "unknown launch option 'partiton' (did you mean 'partition'?)"),
    ("launch:\n  time: soon\n", "time: 'soon' is not of type int"),
    ("axes:\n  data.dir: [/no/such/data]\n", "data.dir /no/such/data does not exist"),
])
def test_bad_sweep_is_one_line_and_submits_nothing(mnist_small: Path, tmp_path: Path, body: str, expected: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sweep = write_sweep(tmp_path / "sweep.yaml", mnist_small, body)
    assert launch_main(["sweep", str(sweep), "--dir", str(tmp_path / "out"), "--executor", "local"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cg-launch: error: ") and expected in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_point_names_come_from_the_axis_values_only(mnist_small: Path, tmp_path: Path) -> None:
    body = """\
    axes:
      noise.corrupt_fraction: [0.0, 0.5]
      optim.optimizer: [SGD]
      train.seed: [0, 1]
      noise.noise_type: [uniform]
    """
    sweep = write_sweep(tmp_path / "sweep.yaml", mnist_small, body)
    points = load_sweep(sweep, tmp_path / "out").points
    assert [p.name for p in points] == [
        f"corrupt_fraction={f},optimizer=SGD,seed={s},noise_type=uniform" for f in ("0.0", "0.5") for s in (0, 1)]
    assert [p.name for p in load_sweep(sweep, tmp_path / "elsewhere").points] == [p.name for p in points]
    last = points[-1].cfg
    assert (last.noise.corrupt_fraction, last.train.seed, last.output.resume) == (0.5, 1, "auto")
    assert last.output.dir == str((tmp_path / "out" / points[-1].name).absolute())
    assert last.data.batch_size == 32 and last.model.arch == "simple_cnn"  # from the base


def test_local_executor_array_trains_what_cg_train_trains(mnist_small: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    sweep = write_sweep(tmp_path / "sweep.yaml", mnist_small, """\
    axes:
      train.seed: [0, 1]
    launch:
      executor: local
      gpus_per_node: 0
      parallelism: 2
    """)
    out = tmp_path / "sweep"
    assert launch_main(["sweep", str(sweep), "--dir", str(out)]) == 0
    assert capsys.readouterr().out.count("submitted as local job") == 2
    statuses = launch_status(LaunchDir(out))
    assert [(s.name, s.state) for s in statuses] == [("seed=0", "done"), ("seed=1", "done")], \
        format_status(statuses)

    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *TRAIN_ARGS, "--seed", "1") == 0
    assert_same_csvs(reference, out / "seed=1")

    # re-submitting leaves finished points alone, byte for byte
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".launch" not in p.parts}
    assert launch_main(["sweep", str(sweep), "--dir", str(out)]) == 0
    assert "seed=0: done, left alone" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".launch" not in p.parts} == before
    # ... and refuses a changed experiment in the same directory
    sweep.write_text(sweep.read_text().replace("lr: 0.05", "lr: 0.1"))
    assert launch_main(["sweep", str(sweep), "--dir", str(out)]) == 2
    assert "was submitted with another config (optim.lr: 0.05 -> 0.1)" in capsys.readouterr().err

    # sweep -> array -> figures: cg-analyze over the finished points
    assert launch_main(["collect", str(out)]) == 0
    assert "cg-analyze: 2 experiment(s): seed=0, seed=1" in capsys.readouterr().out
    assert {p.suffix for p in (out / "analysis").iterdir()} >= {".pdf", ".png"}


def test_debug_executor_runs_a_single_run_here(mnist_small: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    out = tmp_path / "run"
    args = ["run", "--executor", "debug", "--", str(mnist_small), "--arch", "simple_cnn", "--workers", "0",
            "--no-progress", "--epochs", "1", "--sample-size", "40", "--output-dir", str(out)]
    assert launch_main(args) == 0
    assert launch_main(["status", str(out)]) == 0
    table = capsys.readouterr().out
    assert "submitted as debug job" in table and "1 done" in table
    assert (out / "test.csv").is_file() and (out / ".launch" / "jobs.csv").is_file()


def test_status_and_collect_of_a_directory_nothing_was_submitted_to(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("status", "collect"):
        assert launch_main([command, str(tmp_path)]) == 2
        assert "is not a cg-launch directory" in capsys.readouterr().err


@pytest.mark.parametrize("sweep", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_example_sweeps_are_valid(sweep: Path, tmp_path: Path) -> None:
    points = load_sweep(sweep, tmp_path).points
    assert len(points) > 1 and len({p.name for p in points}) == len(points)
