"""What a run is taught by, checked before it trains: each ``--teacher``'s test accuracy and the ``--targets`` summary.

A teacher checkpoint is evaluated once on the run's test split (one pass of the test
loader, eval mode, the run's autocast: the same numbers as ``cg-train evaluate CKPT``),
so a teacher at chance, or worse than the student is expected to be, shows in the log
and in ``supervision_checks.json`` (and config.yaml's ``meta``) before any step. The
pass leaves the RNG streams as they were; a resumed run reads the record instead of
evaluating again. The ``--targets`` summary is made (and a weak table refused) where
the table is loaded, ``cg_train.supervision.target_checks``; it is recorded here.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from ..io import atomic_write_text
from ..recorders import RunContext
from ..supervision import Supervision, teacher_paths
from . import checkpoint
from .evaluate import evaluate

log = logging.getLogger("cg_train")

CHECKS_FILE = "supervision_checks.json"


def evaluate_teachers(ctx: RunContext, supervision: Supervision, progress: bool) -> list[dict[str, Any]]:
    """Each checkpoint teacher's loss/top-1/top-5 on the test split (collective); RNG state restored after."""
    loader = ctx.data.eval_loaders.get("test")
    k = ctx.data.train.num_classes
    rng = checkpoint.rng_state()  # iterating a DataLoader draws its workers' base seed from torch's RNG
    results = []
    for path, teacher in zip(teacher_paths(ctx.cfg.supervision), supervision.teachers):
        row: dict[str, Any] = {"checkpoint": str(path), "test_count": 0, "test_loss": None, "test_acc1": None,
                               "test_acc5": None, "chance_acc1": 100.0 / k}
        if loader is not None:
            r = evaluate(teacher, loader, ctx.accelerator, 0, desc=f"teacher {path.name} test", progress=progress)
            if r.count:
                row.update(test_count=r.count, test_loss=r.loss, test_acc1=r.acc1, test_acc5=r.acc5)
        results.append(row)
    checkpoint.set_rng_state(rng)
    return results


def recorded_teachers(out: Path, cfg_teachers: list[str]) -> Optional[list[dict[str, Any]]]:
    """The teachers' results a run in ``out`` already recorded for the same checkpoints, or None."""
    try:
        saved = json.loads((out / CHECKS_FILE).read_text()).get("teachers")
    except (OSError, ValueError, AttributeError):  # none yet (a run of an older version), or damaged
        return None
    if not isinstance(saved, list) or not all(isinstance(t, dict) for t in saved) or \
            [t.get("checkpoint") for t in saved] != cfg_teachers:
        return None
    return saved


def run_checks(ctx: RunContext, supervision: Supervision, resuming: bool, progress: bool) -> dict[str, Any]:
    """The record of what this run is taught by: {"targets": summary or None, "teachers": [...]}."""
    teachers: list[dict[str, Any]] = []
    if supervision.method.teacher == "checkpoint":
        paths = [str(p) for p in teacher_paths(ctx.cfg.supervision)]
        saved = recorded_teachers(ctx.output_dir, paths) if resuming else None
        teachers = saved if saved is not None else evaluate_teachers(ctx, supervision, progress)
    summary = supervision.targets_summary
    return {"targets": summary.as_dict() if summary is not None else None, "teachers": teachers}


def report(ctx: RunContext, supervision: Supervision, checks: dict[str, Any]) -> None:
    """Log the record (a warning for a teacher at or below chance) and write ``supervision_checks.json``."""
    if checks["targets"] is None and not checks["teachers"]:
        return
    summary = supervision.targets_summary
    if summary is not None:
        log.info("%s", summary.describe())
        if summary.note:
            log.warning("--targets %s: %s", summary.table, summary.note)
    for t in checks["teachers"]:
        if t["test_acc1"] is None:
            log.info("--teacher %s: no test samples to evaluate it on", t["checkpoint"])
            continue
        log.info("--teacher %s: test top-1 %.2f, top-5 %.2f, loss %.4f (%d samples; chance %.2f)", t["checkpoint"],
                 t["test_acc1"], t["test_acc5"], t["test_loss"], t["test_count"], t["chance_acc1"])
        if t["test_acc1"] <= t["chance_acc1"]:
            log.warning("--teacher %s: test top-1 %.2f is at or below chance (%.2f): it has not learned this task; "
                        "check its run's test.csv and pass its model_best.pth.tar", t["checkpoint"], t["test_acc1"],
                        t["chance_acc1"])
    if ctx.is_main:
        atomic_write_text(ctx.output_dir / CHECKS_FILE, json.dumps(checks, indent=1) + "\n")
