"""Run under `accelerate launch`: dump, per rank, the indices and labels this rank's loaders yield.

Usage: dist_probe.py DATA_DIR OUT_DIR [LOADER...]  (LOADER: torchvision, the default, or dali;
each writes OUT_DIR/LOADER/rank<R>.json)

Used by test_distributed.py to check, in a real multi-process run, that ranks see
disjoint data covering the whole set and compute identical label corruption. One
launch probes every loader asked for: a launch costs seconds of start-up, a probe little.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate import Accelerator

from cg_train.config import build_config
from cg_train.data.bundle import build_data


def probe(accelerator: Accelerator, data_dir: str, out_dir: Path, loader: str) -> None:
    cfg = build_config(overrides=[f"data.dir={data_dir}", "noise.corrupt_fraction=0.5", "data.batch_size=32",
                                  "data.workers=1", "data.sample_size=40", "model.arch=simple_cnn",
                                  f"data.loader={loader}"])
    data = build_data(cfg, 32, 32, accelerator.process_index, accelerator.num_processes, accelerator.device)
    report = {"world_size": accelerator.num_processes, "rank": accelerator.process_index,
              "distributed_type": str(accelerator.distributed_type),
              "observed": data.train.observed_labels.tolist(), "phases": {}}
    for epoch in (0, 1):
        data.train_loader.set_epoch(epoch)
        report["phases"][f"train@{epoch}"] = [batch.indices.tolist() for batch in data.train_loader]
    for phase, eval_loader in data.eval_loaders.items():
        eval_loader.set_epoch(0)
        report["phases"][phase] = [batch.indices.tolist() for batch in eval_loader]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"rank{accelerator.process_index}.json").write_text(json.dumps(report))


def main(data_dir: str, out_dir: str, *loaders: str) -> None:
    accelerator = Accelerator(cpu=True)
    for loader in loaders or ("torchvision",):
        probe(accelerator, data_dir, Path(out_dir, loader), loader)


if __name__ == "__main__":
    main(*sys.argv[1:])
