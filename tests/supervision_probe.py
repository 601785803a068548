"""Run under `accelerate launch`: one student run per method, one after another, in one launch.

Usage: supervision_probe.py DATA_DIR TEACHER_DIR OUT_ROOT METHOD [METHOD ...] -- [cg-train flags]

Starting N processes once for all methods keeps test_supervision_runs.py fast;
every run goes through the same ``cg_train.cli.main`` as the console script.
"""
from __future__ import annotations

import sys

from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from cg_train.cli import main


def student_args(method: str, teacher_dir: str) -> list[str]:
    """The tests' teachers train one epoch, so their tables are refused unless accepted (test_filter_kd_checks.py)."""
    return ["--method", method, "--teacher", f"{teacher_dir}/model_best.pth.tar",
            "--targets", f"{teacher_dir}/p_smoothing_best.npy"] + \
        ([f"--teacher={teacher_dir}/model_best.pth.tar:{teacher_dir}/initial_state.pth.tar"]
         if method == "sl_ens" else []) + (["--accept-weak-targets"] if method == "filter_kd" else [])


if __name__ == "__main__":
    data, teacher, out_root, *rest = sys.argv[1:]
    split = rest.index("--")
    methods, flags = rest[:split], rest[split + 1:]
    end_training = Accelerator.end_training
    Accelerator.end_training = lambda self: None  # keep the process group for the next method's run
    for method in methods:
        AcceleratorState._reset_state()  # a fresh accelerator per run, on the same process group
        GradientState._reset_state()
        code = main([data, "--output-dir", f"{out_root}/{method}", *student_args(method, teacher), *flags])
        if code:
            sys.exit(code)
    end_training(Accelerator())
