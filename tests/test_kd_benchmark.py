"""The feature-distillation benchmark as a command: its sweep files and ``cg-analyze kd``'s seed-003 table.

The table is checked against a hand computation over per-seed CSVs written here; the sweep files must load,
validate and expand to vanilla, KD and every feature method for 3 seeds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.cli import main as analyze

REPO = Path(__file__).resolve().parent.parent
#: top-1 of the last test epoch and ECE (None: the run wrote no calibration.csv), per (method, seed)
RUNS = {
    ("ce", 0): (68.0, 0.10), ("ce", 1): (69.5, 0.12), ("ce", 2): (68.6, 0.11),
    ("kd", 0): (70.0, 0.05), ("kd", 1): (71.0, 0.07), ("kd", 2): (73.0, 0.06),
    ("crd", 0): (71.2, 0.03), ("crd", 1): (70.4, 0.02),
    ("at", 0): (69.0, None), ("at", 1): (70.0, None), ("at", 2): (71.5, None),
}


def write_run(root: Path, name: str, cfg: dict, top1: float, ece: float | None) -> None:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    pd.DataFrame({"epoch": [0, 1, 2], "count": 10, "loss": 1.0, "acc1": [1.0, 50.0, top1], "acc5": 100.0}
                 ).to_csv(run / "test.csv", index=False)
    if ece is not None:
        pd.DataFrame({"phase": ["train_sample", "test", "test"], "epoch": [2, 1, 2], "ece": [0.9, 0.8, ece]}
                     ).to_csv(run / "calibration.csv", index=False)


def student_cfg(method: str, seed: int, teacher: Path, **sup) -> dict:
    return {"model": {"arch": "cifar_resnet20"}, "noise": {"corrupt_fraction": 0.0}, "train": {"seed": seed},
            "supervision": {"method": method, "teacher": str(teacher / "model_best.pth.tar"), **sup}}


def test_cg_analyze_kd_prints_seed_003s_table_with_gaps_and_counts(tmp_path: Path, capsys) -> None:
    teacher = tmp_path / "teacher"
    write_run(tmp_path, "teacher", {"model": {"arch": "cifar_resnet56"}, "noise": {"corrupt_fraction": 0.0},
                                    "train": {"seed": 0}, "supervision": {"method": "ce"}}, 72.0, 0.2)
    for (method, seed), (top1, ece) in RUNS.items():
        # as the engine writes them: feature methods store -b, and -a = 0 unless combined with KD
        weights = {"feature_weight": 0.8, "kd_weight": 0.0} if method in ("crd", "at") else {}
        write_run(tmp_path / "students", f"method={method},seed={seed}", student_cfg(method, seed, teacher, **weights),
                  top1, ece)
    write_run(tmp_path / "students", "crd+kd", student_cfg("crd", 0, teacher, feature_weight=0.8, kd_weight=1.0),
              72.5, 0.04)
    cut_off = tmp_path / "students" / "cut_off"  # a run killed before its first evaluation: no row
    cut_off.mkdir()
    (cut_off / "config.yaml").write_text(yaml.safe_dump(student_cfg("kd", 9, teacher)))

    assert analyze(["kd", str(tmp_path), "-o", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "kd_table.csv")
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "out" / "kd_table.md").read_text()

    students = table[table.student == "cifar_resnet20"].set_index("method")
    assert list(students.index) == ["ce", "kd", "at", "crd", "crd+kd"]  # vanilla, KD, then RepDistiller's order
    vanilla = np.mean([RUNS["ce", s][0] for s in range(3)])
    for method in ("ce", "kd", "at", "crd"):
        top1 = np.array([v[0] for (m, _), v in RUNS.items() if m == method])
        eces = np.array([np.nan if v[1] is None else v[1] for (m, _), v in RUNS.items() if m == method])
        row = students.loc[method]
        assert row.runs == row.seeds == len(top1) and row.teacher == ("-" if method == "ce" else "cifar_resnet56")
        np.testing.assert_allclose([row.top1_mean, row.top1_std], [top1.mean(), top1.std(ddof=1)])
        if method == "ce":
            assert np.isnan(row.gap_to_vanilla)
        else:
            np.testing.assert_allclose(row.gap_to_vanilla, top1.mean() - vanilla)
        if method == "at":
            assert np.isnan(row.ece_mean)
        else:
            np.testing.assert_allclose([row.ece_mean, row.ece_std], [eces.mean(), eces.std(ddof=1)])
    assert students.loc["crd+kd", "runs"] == 1 and students.loc["crd+kd", "top1_std"] == 0.0
    np.testing.assert_allclose(students.loc["crd+kd", "gap_to_vanilla"], 72.5 - vanilla)
    # the Markdown rows, digit by digit: kd +2.63 = (70+71+73)/3 - (68+69.5+68.6)/3 = 71.333 - 68.7
    assert "| method | student | teacher | noise | runs | top-1 | gap to vanilla | ECE |" in printed
    assert "| ce | cifar_resnet20 | - | 0 | 3 | 68.70 ± 0.75 | - | 0.1100 ± 0.0100 |" in printed
    assert "| kd | cifar_resnet20 | cifar_resnet56 | 0 | 3 | 71.33 ± 1.53 | +2.63 | 0.0600 ± 0.0100 |" in printed
    assert "| at | cifar_resnet20 | cifar_resnet56 | 0 | 3 | 70.17 ± 1.26 | +1.47 | - |" in printed
    assert "| crd | cifar_resnet20 | cifar_resnet56 | 0 | 2 | 70.80 ± 0.57 | +2.10 | 0.0250 ± 0.0071 |" in printed
    # the teacher run is its own vanilla row (student cifar_resnet56)
    assert "| ce | cifar_resnet56 | - | 0 | 1 | 72.00 ± 0.00 | - | 0.2000 ± 0.0000 |" in printed
    for suffix in ("png", "pdf"):
        assert (tmp_path / "out" / f"kd_table.{suffix}").stat().st_size > 1000


def test_cg_analyze_kd_without_runs_fails_in_one_line(tmp_path: Path, capsys) -> None:
    assert analyze(["kd", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cg-analyze: error: no finished run") and err.count("\n") == 1


def test_feature_kd_sweeps_expand_to_vanilla_kd_and_every_feature_method(tmp_path: Path) -> None:
    from launch.sweep import load_sweep

    from cg_train.supervision import METHODS

    folder = REPO / "configs" / "feature_kd"
    teacher = load_sweep(folder / "teacher_cifar_resnet56.yaml", tmp_path / "teacher")
    assert [p.name for p in teacher.points] == ["run"]
    assert teacher.points[0].cfg.model.arch == "cifar_resnet56" and teacher.points[0].cfg.supervision.method == "ce"
    sweep = load_sweep(folder / "cifar_resnet56_cifar_resnet20.yaml", tmp_path / "students")
    methods = ["ce", "kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd"]
    assert [p.name for p in sweep.points] == [f"method={m},seed={s}" for m in methods for s in range(3)]
    logit_only = {"ce", "ls", "kd", "self_kd", "filter_kd", "sl", "sl_enc", "sl_ens", "sl_kd"}
    registered = {METHODS.get(name) for name in METHODS.names() if name not in logit_only | {"kdss"}}
    assert registered == {METHODS.get(m) for m in methods if m not in logit_only}  # every feature method (aliases)
    for point in sweep.points:
        cfg = point.cfg
        recipe = (cfg.model.arch, cfg.data.batch_size, cfg.optim.lr, cfg.train.epochs)
        assert recipe == ("cifar_resnet20", 64, 0.05, 240)
        assert cfg.sched.milestones == [150, 180, 210] and cfg.data.augment == "cifar"
        assert cfg.supervision.teacher == str(Path("runs/feature_kd/teacher/run/model_best.pth.tar").absolute())
        assert cfg.output.dir == str((tmp_path / "students" / point.name).absolute())


@pytest.mark.parametrize("name", ["repdistiller.yaml"])
def test_the_recipe_file_is_a_valid_config(name: str) -> None:
    from cg_train.config import build_config

    cfg = build_config([str(REPO / "configs" / "feature_kd" / name)])
    assert cfg.sched.scheduler == "multistep" and cfg.optim.weight_decay == 0.0005
