"""Names of seed 004's per-epoch CSVs and their columns.

The engine writes these files and ``analysis`` (``cg-analyze``) reads them back, so
both take the names from here; the module imports nothing heavy, so the analysis
tools stay free of torch.
"""
from __future__ import annotations

#: Evaluation phases in the order seed 004 runs them (and names its CSVs).
EVAL_PHASES = ("pristine", "corrupt", "train_sample", "test")
#: ``train.csv``: one row every ``print_freq`` steps (global batch, mean loss).
TRAIN_COLUMNS = ("epoch", "step", "count", "loss")
#: ``<phase>.csv``: one row per evaluation (accuracies in percent).
EVAL_COLUMNS = ("epoch", "count", "loss", "acc1", "acc5")
#: Every seed 004 CSV of a run, ``train.csv`` first.
RESULT_CSVS = tuple(f"{name}.csv" for name in ("train", *EVAL_PHASES))

#: ``calibration.csv``: one row per evaluation of every phase (ECE as a fraction, 15 equal-width bins).
CALIBRATION_CSV = "calibration.csv"
CALIBRATION_COLUMNS = ("epoch", "phase", "count", "ece")
#: ``reliability.csv``: the same evaluations bin by bin, what a reliability diagram plots
#: (``confidence`` and ``accuracy`` are the bin's means, empty for an empty bin).
RELIABILITY_CSV = "reliability.csv"
RELIABILITY_COLUMNS = ("epoch", "phase", "bin", "lower", "upper", "count", "confidence", "accuracy")
