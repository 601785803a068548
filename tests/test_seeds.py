"""Seeds as an axis: the noise leaderboard, remove-and-retrain and debug tables over seeds, and their sweeps.

The runs' files are written here in the layout cg-train writes them (config.yaml from the real schema and
``to_yaml``, path logs in the on-disk format, test.csv, corruption.parquet); every mean ± std and run count
is checked against NumPy over the per-seed files (each run's ``detectors.csv`` or ``test.csv``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as analyze
from cg_train.config import build_config, to_yaml
from conftest import REPO
from test_noise_detection import synthetic_run


def write_config(run: Path, **overrides) -> None:
    """``run/config.yaml`` as cg-train writes it: the full resolved config, its own output dir, a meta section."""
    keys = [f"{key.replace('__', '.')}={value}" for key, value in overrides.items()]
    cfg = build_config(overrides=[*keys, f"output.dir={run}", "data.dir=data/demo-mnist"])
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(to_yaml(cfg, {"command": ["cg-train", str(run)], "host": run.name}))


#: (corrupt fraction, optim.lr) -> seeds; lr 0.1 at fraction 0.25 is a third setting, told apart by its config
SETTINGS = {(0.25, 0.05): [0, 1, 2], (0.4, 0.05): [0, 1], (0.25, 0.1): [3, 4, 5]}


@pytest.fixture(scope="module")
def noise_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("noise_seeds")
    for (fraction, lr), seeds in SETTINGS.items():
        for seed in seeds:
            run = root / f"corrupt_fraction={fraction},lr={lr},seed={seed}"
            synthetic_run(run, n=160, corrupt_fraction=fraction, epochs=5, seed=seed + int(100 * fraction))
            write_config(run, noise__corrupt_fraction=fraction, noise__noise_type="symmetric", optim__lr=lr,
                         train__seed=seed, record__paths="true")
    (root / ".launch" / "finished").mkdir(parents=True)  # cg-launch's own folder: never searched
    retrained = root / "retrained"  # a run without path logs: nothing to score, not a run of this table
    write_config(retrained, noise__corrupt_fraction=0.25, train__seed=0)
    pd.DataFrame({"epoch": [1], "count": 10, "loss": 1.0, "acc1": 50.0, "acc5": 90.0}).to_csv(
        retrained / "test.csv", index=False)
    return root


def test_noise_leaderboard_is_mean_and_std_over_the_per_seed_detector_csvs(noise_sweep: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    assert analyze(["noise", str(noise_sweep), "--no-figures"]) == 0
    board = pd.read_csv(noise_sweep / "noise_leaderboard.csv")
    per_run = pd.read_csv(noise_sweep / "noise_runs.csv")
    assert "retrained" not in set(per_run.run) and len(per_run.run.unique()) == 8
    # the setting columns: noise type and fraction, the one other key that differs (lr), the path-log source;
    # not the seed, nor output.dir or meta, which differ in every run
    assert list(board.columns[:6]) == ["setting", "noise_type", "corrupt_fraction", "optim.lr", "source", "detector"]
    assert board.setting.nunique() == 3 and set(board.source) == {"train"}
    checked = 0
    for (fraction, lr), seeds in SETTINGS.items():
        runs = [noise_sweep / f"corrupt_fraction={fraction},lr={lr},seed={s}" for s in seeds]
        files = [pd.read_csv(run / "noise" / "detectors.csv").set_index("detector") for run in runs]
        rows = board[(board.corrupt_fraction == fraction) & (board["optim.lr"] == lr)].set_index("detector")
        assert sorted(rows.index) == sorted(files[0].index) and len(rows) >= 5  # every in-sample detector
        assert list(rows.auroc_mean) == sorted(rows.auroc_mean, reverse=True)  # the best detector first
        for detector, row in rows.iterrows():
            for metric in ("auroc", "map", "precision_at_noise_rate"):
                values = np.array([f.loc[detector, metric] for f in files])
                np.testing.assert_allclose([row[f"{metric}_mean"], row[f"{metric}_std"]],
                                           [values.mean(), values.std(ddof=1)], rtol=0, atol=1e-12)
            assert row.runs == row.seeds == len(seeds) and row.noise_type == "symmetric"
            checked += 1
    assert checked == len(board)
    markdown = (noise_sweep / "noise_leaderboard.md").read_text()
    row = board[(board.corrupt_fraction == 0.4) & (board.detector == "aum")].iloc[0]
    assert (f"| symmetric 0.4 | 0.05 | train | aum | 2 | {row.auroc_mean:.4f} ± {row.auroc_std:.4f} | "
            f"{row.map_mean:.4f} ± {row.map_std:.4f} |") in markdown
    assert "cells average fewer than 3 runs" in markdown  # fraction 0.4 has 2 seeds
    assert "![" not in markdown and not list(noise_sweep.glob("*.png"))  # --no-figures
    assert (noise_sweep / "corrupt_fraction=0.25,lr=0.05,seed=0" / "noise" / "scores.parquet").is_file()


def test_noise_over_several_run_dirs_writes_everything_under_output(noise_sweep: Path, tmp_path: Path) -> None:
    runs = [noise_sweep / f"corrupt_fraction=0.4,lr=0.05,seed={s}" for s in (0, 1)]
    out = tmp_path / "board"
    assert analyze(["noise", *map(str, runs), "--detectors", "aum,mean_loss", "-o", str(out), "--no-figures"]) == 0
    board = pd.read_csv(out / "noise_leaderboard.csv").set_index("detector")
    assert sorted(board.index) == ["aum", "mean_loss"] and (board.runs == 2).all()
    # only the leaderboard's own keys: both runs have one setting, so no extra column
    assert "optim.lr" not in board and (board.setting == 0).all()
    aurocs = [pd.read_csv(out / run.name / "detectors.csv").set_index("detector").loc["aum", "auroc"] for run in runs]
    np.testing.assert_allclose(board.loc["aum", ["auroc_mean", "auroc_std"]], [np.mean(aurocs), np.std(aurocs, ddof=1)])
    assert (out / runs[0].name / "scores.parquet").is_file()  # each run's report, there
    # the bar chart of the leaderboard (the per-run figures are cg-analyze noise RUN_DIR's, tested there)
    from analysis.noise_seeds import figure

    keys = ["noise_type", "corrupt_fraction", "source"]
    written = figure(pd.read_csv(out / "noise_leaderboard.csv"), keys, out)
    assert [p.name for p in written] == ["noise_leaderboard.png", "noise_leaderboard.pdf"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_noise_over_a_folder_without_runs_or_with_oos_is_one_line(noise_sweep: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert analyze(["noise", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run with corruption.parquet and path logs" in err and "--paths" in err
    # K-fold predictions belong to one run's labels: over several runs, a path relative to each
    assert analyze(["noise", str(noise_sweep), "--oos", str(tmp_path / "kfold"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "relative to each run" in err and not (tmp_path / "o").exists()


#: (seed, remove ratio) -> final test top-1 of a remove-and-retrain sweep over seeds (aum; ratio 0: noisy)
RETRAIN = {(0, 0.0): 60.0, (1, 0.0): 62.0, (2, 0.0): 61.0,
           (0, 0.1): 66.0, (1, 0.1): 65.5, (2, 0.1): 68.0,
           (0, 0.2): 70.0, (1, 0.2): 71.0}


@pytest.fixture(scope="module")
def retrain_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retrain_seeds")
    rng = np.random.default_rng(0)
    for (seed, ratio), top1 in RETRAIN.items():
        run = root / f"seed={seed},remove_ratio={ratio}"
        write_config(run, noise__corrupt_fraction=0.2, noise__noise_type="symmetric", train__seed=seed,
                     noise__remove_ratio=ratio, noise__detector="aum",
                     noise__scores=f"runs/noise_seeds/seed={seed}/noise/scores.parquet")
        pd.DataFrame({"epoch": [0, 1, 2], "count": 100, "loss": 1.0, "acc1": [10.0, top1 + 1.0, top1],
                      "acc5": 99.0}).to_csv(run / "test.csv", index=False)
        corrupt = rng.random(100) < 0.2
        removed = np.zeros(100, bool)
        removed[rng.permutation(100)[:round(ratio * 100)]] = True
        pd.DataFrame({"index": np.arange(100), "is_corrupt": corrupt, "removed": removed, "true_label": 0,
                      "observed_label": np.where(corrupt, 1, 0), "path": [f"train[{i}]" for i in range(100)]}
                     ).to_parquet(run / "corruption.parquet")
    return root


def test_retrain_over_seeds_is_mean_and_std_over_the_per_seed_test_csvs(retrain_sweep: Path) -> None:
    assert analyze(["retrain", str(retrain_sweep)]) == 0
    cells = pd.read_csv(retrain_sweep / "retrain_seeds.csv").set_index("remove_ratio")
    per_run = pd.read_csv(retrain_sweep / "retrain.csv")
    assert len(per_run) == len(RETRAIN) and sorted(per_run.seed.unique()) == [0, 1, 2]
    assert list(cells.index) == [0.0, 0.1, 0.2] and "train.seed" not in cells  # noise.scores differs per seed too
    assert list(cells.detector) == ["none", "aum", "aum"]  # nothing is removed at ratio 0: the noisy baseline
    for ratio, row in cells.iterrows():
        runs = sorted(retrain_sweep.glob(f"seed=*,remove_ratio={ratio}"))
        final = np.array([pd.read_csv(run / "test.csv").acc1.iloc[-1] for run in runs])
        best = np.array([pd.read_csv(run / "test.csv").acc1.max() for run in runs])
        corrupt = [pd.read_parquet(run / "corruption.parquet") for run in runs]
        removed_corrupt = np.array([(c.removed & c.is_corrupt).sum() for c in corrupt])
        assert row.runs == row.seeds == len(runs)
        np.testing.assert_allclose([row.final_acc1_mean, row.final_acc1_std, row.best_acc1_mean, row.best_acc1_std],
                                   [final.mean(), final.std(ddof=1), best.mean(), best.std(ddof=1)])
        np.testing.assert_allclose(row.removed_corrupt_mean, removed_corrupt.mean())
    markdown = (retrain_sweep / "retrain.md").read_text()
    # (66 + 65.5 + 68) / 3 = 66.50, sample std 1.32; the one cell of 2 runs is flagged
    assert "| symmetric 0.2 | aum | 0.10 | 3 | 10 (" in markdown and "| 66.50 ± 1.32 | 67.50 ± 1.32 |" in markdown
    assert "1 of 3 cells average fewer than 3 runs" in markdown
    assert (retrain_sweep / "retrain.png").is_file()


def test_debug_over_seeds_averages_each_seeds_difference_to_its_noisy_run(retrain_sweep: Path, tmp_path: Path) -> None:
    assert analyze(["debug", str(retrain_sweep), "-o", str(tmp_path)]) == 0
    cells = pd.read_csv(tmp_path / "debug_seeds.csv").set_index("variant")
    assert list(cells.kind) == ["noisy", "removed", "removed"]
    noisy = {seed: top1 for (seed, ratio), top1 in RETRAIN.items() if ratio == 0}
    for ratio, variant in ((0.1, "aum 0.1"), (0.2, "aum 0.2")):
        gains = np.array([top1 - noisy[seed] for (seed, r), top1 in RETRAIN.items() if r == ratio])
        row = cells.loc[variant]
        assert row.runs == len(gains)
        np.testing.assert_allclose([row.vs_noisy_mean, row.vs_noisy_std], [gains.mean(), gains.std(ddof=1)])
    assert cells.loc[cells.kind == "noisy", "final_acc1_mean"].item() == pytest.approx(61.0)
    assert "| symmetric 0.2 | removed | aum 0.1 | 3 | - |" in (tmp_path / "debug.md").read_text()


@pytest.mark.parametrize("name, expected", [("noise_seeds.yaml", 6), ("noise_retrain_seeds.yaml", 12)])
def test_seed_sweeps_expand_to_three_seeds_per_setting(name: str, expected: int, tmp_path: Path) -> None:
    from launch.sweep import load_sweep

    points = load_sweep(REPO / "configs" / "sweeps" / name, tmp_path).points
    assert len(points) == expected
    settings: dict = {}
    for point in points:
        key = (point.cfg.noise.corrupt_fraction, point.cfg.noise.remove_ratio)
        settings.setdefault(key, []).append(point.cfg.train.seed)
    assert all(sorted(seeds) == [0, 1, 2] for seeds in settings.values())
    if name == "noise_retrain_seeds.yaml":  # each seed retrains from its own scored run (its own labels)
        for point in points:
            assert point.cfg.noise.scores.endswith(f"corrupt_fraction=0.2,seed={point.cfg.train.seed}/noise/"
                                                   f"scores.parquet")
    else:
        assert all(point.cfg.record.paths and point.cfg.record.paths_eval for point in points)


def test_leaderboard_settings_with_a_key_missing_in_some_runs() -> None:
    """A key one noise type sets and the others leave empty (``noise.confusions`` of instance noise) is one
    setting per value, the empty one included; means and run counts by hand."""
    from analysis.noise_seeds import leaderboard

    rows = [{"noise_type": t, "corrupt_fraction": 0.4, "noise.confusions": c, "source": "train", "detector": "aum",
             "seed": s, "auroc": a, "map": a, "precision_at_noise_rate": a}
            for t, c, s, a in [("symmetric", None, 0, 0.9), ("symmetric", None, 1, 0.8),
                               ("instance", "c.parquet", 0, 0.7), ("instance", "c.parquet", 1, 0.5)]]
    table = leaderboard(pd.DataFrame(rows), ["noise_type", "corrupt_fraction", "noise.confusions", "source"])
    assert list(table.setting) == [0, 1] and list(table.runs) == [2, 2]
    assert table.auroc_mean.tolist() == pytest.approx([0.85, 0.6])
    assert table.auroc_std.tolist() == pytest.approx([np.std([0.9, 0.8], ddof=1), np.std([0.7, 0.5], ddof=1)])

