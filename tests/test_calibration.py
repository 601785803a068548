"""ECE: per-bin sums against a hand computation and against torchmetrics; the CSVs a run writes."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from analysis.cli import main as analyze_main
from analysis.reliability import ece as reliability_ece
from analysis.reliability import last_evaluation
from cg_train.engine.calibration import ECE_BINS, bin_sums, ece_from_sums
from cg_train.results import CALIBRATION_COLUMNS, RELIABILITY_COLUMNS
from conftest import assert_same_csvs, train


def test_ece_equals_a_hand_computation() -> None:
    # four samples, 3 classes; logits = log(p) so the softmax returns p exactly (up to float rounding)
    probs = torch.tensor([[0.90, 0.05, 0.05],   # conf 0.90 (bin 13: (13/15, 14/15]), correct
                          [0.20, 0.70, 0.10],   # conf 0.70 (bin 10: (10/15, 11/15]), wrong (target 0)
                          [0.25, 0.25, 0.50],   # conf 0.50 (bin 7: (7/15, 8/15]), correct
                          [0.10, 0.18, 0.72]])  # conf 0.72 (bin 10), correct
    target = torch.tensor([0, 0, 2, 2])
    sums = bin_sums(probs.log(), target)
    # bin 13: |1 - 0.90|; bin 10: |(0 + 1) - (0.70 + 0.72)|; bin 7: |1 - 0.50|; divided by 4 samples
    hand = (0.10 + abs(1 - 1.42) + 0.50) / 4
    assert math.isclose(ece_from_sums(sums), hand, rel_tol=1e-6)
    assert sums[0].tolist() == [0] * 7 + [1, 0, 0, 2, 0, 0, 1, 0]


def test_ece_matches_torchmetrics_and_adds_up_over_batches() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, 10, generator=generator) * 3
    target = torch.randint(0, 10, (1000,), generator=generator)
    reference = multiclass_calibration_error(logits.softmax(1), target, num_classes=10, n_bins=ECE_BINS, norm="l1")
    whole = bin_sums(logits, target)
    in_parts = sum(bin_sums(logits[i:i + 128], target[i:i + 128]) for i in range(0, 1000, 128))
    torch.testing.assert_close(in_parts, whole)
    assert math.isclose(ece_from_sums(whole), float(reference), rel_tol=1e-5)


def test_every_phase_gets_ece_and_reliability_rows_that_survive_resume_and_are_plotted(mnist_small: Path, tmp_path: Path) -> None:
    out, flags = tmp_path / "run", ("--lr-scheduler", "constant", "--sample-size", "100")
    assert train(mnist_small, out, "--epochs", "1", *flags) == 0
    ece, bins = pd.read_csv(out / "calibration.csv"), pd.read_csv(out / "reliability.csv")
    assert tuple(ece.columns) == CALIBRATION_COLUMNS and tuple(bins.columns) == RELIABILITY_COLUMNS
    phases = ["pristine", "train_sample", "test"]
    assert ece.groupby("epoch").phase.apply(list).tolist() == [phases] * 2
    assert len(bins) == len(ece) * ECE_BINS
    # the reliability table reproduces the ECE row by row, and its counts the phase sizes
    for (epoch, phase), group in bins.groupby(["epoch", "phase"]):
        row = ece[(ece.epoch == epoch) & (ece.phase == phase)].iloc[0]
        assert group["count"].sum() == row["count"]
        gap = (group["count"] * (group.accuracy - group.confidence).abs()).sum() / row["count"]
        assert math.isclose(gap, row.ece, rel_tol=1e-9, abs_tol=1e-12)
    test = pd.read_csv(out / "test.csv")
    assert (ece[ece.phase == "test"]["count"].to_numpy() == test["count"].to_numpy()).all()
    # a run that stopped after its first evaluation and resumed writes the same rows as the uninterrupted one
    cut = tmp_path / "cut"
    assert train(mnist_small, cut, "--epochs", "0", *flags) == 0
    assert train(mnist_small, cut, "--epochs", "1", *flags, "--resume") == 0
    assert_same_csvs(out, cut)
    for name in ("calibration.csv", "reliability.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / name), pd.read_csv(cut / name), check_exact=True)

    # cg-analyze draws the reliability diagrams from these files alone
    (tmp_path / "old").mkdir()  # a run from before reliability.csv: its curves are plotted, no diagram, no error
    for name in ("train.csv", "test.csv", "pristine.csv", "corrupt.csv", "train_sample.csv"):
        (tmp_path / "old" / name).write_bytes((out / name).read_bytes())
    assert analyze_main([str(tmp_path), "--output", str(tmp_path / "figures"), "--format", "png"]) == 0
    assert (tmp_path / "figures" / "reliability_test.png").stat().st_size > 0
    bins = last_evaluation(out / "reliability.csv")
    assert bins.epoch.unique().tolist() == [1] and len(bins) == ECE_BINS
    assert math.isclose(reliability_ece(bins), ece[ece.phase == "test"].ece.iloc[-1], rel_tol=1e-9)
