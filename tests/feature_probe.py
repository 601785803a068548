"""Run under `accelerate launch`: several cg-train runs one after another in one launch, each given as
``OUT_DIR ARG ARG ...`` on one line of a spec file, and after each run whether every process ended with
the same side-module weights (``side_sync.json`` in its output directory: DDP kept them in step).

Usage: feature_probe.py SPEC_FILE

Starting N processes once for all runs keeps test_feature_kd_runs.py fast; every run goes through the
same ``cg_train.cli.main`` as the console script.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from cg_train.cli import main
from cg_train.supervision import Supervision


def record_side_modules(self: Supervision, ctx) -> None:
    """At the end of a run: the side modules' weights of every process, compared on the main one."""
    fit_end(self, ctx)
    params = [p.detach().float().flatten() for p in self.method.modules.parameters()] if self.features else []
    mine = torch.cat(params) if params else torch.zeros(0)
    everyone = [torch.zeros_like(mine) for _ in range(ctx.world_size)]
    if ctx.world_size > 1:
        dist.all_gather(everyone, mine)
    else:
        everyone = [mine]
    if ctx.is_main:
        (ctx.output_dir / "side_sync.json").write_text(json.dumps(
            {"processes": ctx.world_size, "parameters": int(mine.numel()),
             "equal": all(torch.equal(everyone[0], other) for other in everyone)}))


if __name__ == "__main__":
    runs = [shlex.split(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
    fit_end, Supervision.on_fit_end = Supervision.on_fit_end, record_side_modules
    end_training = Accelerator.end_training
    Accelerator.end_training = lambda self: None  # keep the process group for the next run
    for data, out, *flags in runs:
        AcceleratorState._reset_state()  # a fresh accelerator per run, on the same process group
        GradientState._reset_state()
        code = main([data, "--output-dir", out, *flags])
        if code:
            sys.exit(code)
    end_training(Accelerator())
