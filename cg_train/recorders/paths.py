"""Learning paths: every training sample's prediction at every step, as Parquet (seeds 000/002).

``--paths`` logs each training step from the logits the step computed anyway
(no extra forward pass) to ``paths/``; ``--paths-eval`` asks the trainer for an
eval-mode pass over the whole training set at every evaluation (epoch E = the
model after E training epochs) and logs it to ``paths_eval/``, with the
evaluation batch number in ``step``. Statistics are computed on the device, and a
background thread per rank writes them (:mod:`cg_train.paths.writer`); ranks never
exchange rows.

Resume contract: ``state_dict`` flushes synchronously and returns a watermark
that is the same on every rank — training rows are on disk up to
``(epoch, step)`` and eval rows up to evaluation ``eval_through``.
``load_state_dict`` deletes every part past the watermark (and temporary files),
so a killed and resumed run has each row exactly once, whatever moment it was
killed at and even if the number of processes changed. Each rank cleans the
rank directories ``R`` with ``R % world_size == rank``, so no rank deletes files
another live rank is writing.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..augment import mixes_rows
from ..data.bundle import TRAIN_ALL
from ..data.manifest import Batch, Mix
from ..paths.layout import EVAL_DIR, TRAIN_DIR, list_parts, path_schema, rank_dirs
from ..paths.writer import PartWriter
from ..sample_stats import per_sample_stats
from . import RECORDERS, Recorder, RunContext

log = logging.getLogger("cg_train")


class PathRecorder(Recorder):
    def __init__(self, output_dir: Path, rank: int, world_size: int, num_classes: int, topk: int,
                 rows_per_part: int, train: bool = True, eval_pass: bool = False, mixed: bool = False):
        self.output_dir, self.rank, self.world_size = Path(output_dir), rank, world_size
        self.topk = min(topk, num_classes)
        self.mixed = mixed  # training rows are mixed images: log both sources and the weight
        self.train_writer = PartWriter(self.output_dir / TRAIN_DIR, rank, path_schema(num_classes, self.topk, mixed),
                                       rows_per_part) if train else None
        self.eval_writer = PartWriter(self.output_dir / EVAL_DIR, rank, path_schema(num_classes, self.topk),
                                      rows_per_part) if eval_pass else None
        self.train_through = (0, 0)  # training rows before (epoch, step) are recorded
        self.eval_through = -1  # eval passes up to this evaluation epoch are recorded
        self._eval_batch = 0

    @property
    def writers(self) -> list[PartWriter]:
        return [w for w in (self.train_writer, self.eval_writer) if w is not None]

    # ------------------------------------------------------------------ hooks
    def on_train_batch(self, ctx: RunContext, epoch: int, step: int, batch: Batch, logits: torch.Tensor,
                       losses: torch.Tensor) -> None:
        if self.train_writer is None:
            return
        stats = per_sample_stats(logits, batch.observed_labels, batch.true_labels, batch.indices, self.topk, losses,
                                 mix=Mix.of(batch) if self.mixed else None)
        self.train_writer.put(epoch, step, stats)
        self.train_through = (epoch, step + 1)

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None:
        self.train_through = (epoch + 1, 0)

    def extra_eval_phases(self, ctx: RunContext, epoch: int) -> Sequence[str]:
        return (TRAIN_ALL,) if self.eval_writer is not None else ()

    def on_eval_batch(self, ctx: RunContext, phase: str, epoch: int, batch: Batch, logits: torch.Tensor) -> None:
        if phase != TRAIN_ALL or self.eval_writer is None:
            return
        stats = per_sample_stats(logits, batch.observed_labels, batch.true_labels, batch.indices, self.topk)
        self.eval_writer.put(epoch, self._eval_batch, stats)
        self._eval_batch += 1

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: Any) -> None:
        if phase == TRAIN_ALL and self.eval_writer is not None:
            self.eval_writer.flush()  # one eval pass = one snapshot; keep it whole on disk before moving on
            self.eval_through, self._eval_batch = epoch, 0

    def on_fit_end(self, ctx: RunContext) -> None:
        for writer in self.writers:
            writer.close()

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        for writer in self.writers:
            writer.flush()
        return {"train_through": list(self.train_through), "eval_through": self.eval_through}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:  # fresh start: nothing of an earlier attempt survives
            self.train_through, self.eval_through = (0, 0), -1
            for root in (self.output_dir / TRAIN_DIR, self.output_dir / EVAL_DIR):
                for _, rank, rank_dir in list(rank_dirs(root)):
                    if self._owns(rank):
                        shutil.rmtree(rank_dir)
                        _remove_if_empty(rank_dir.parent)
            return
        self.train_through = tuple(state["train_through"])  # type: ignore[assignment]
        self.eval_through = int(state["eval_through"])
        self._drop_after(self.output_dir / TRAIN_DIR, lambda p: (p.epoch, p.first_step) >= self.train_through)
        self._drop_after(self.output_dir / EVAL_DIR, lambda p: p.epoch > self.eval_through)

    def _owns(self, rank: int) -> bool:
        return rank % self.world_size == self.rank

    def _drop_after(self, root: Path, written_later: Any) -> None:
        dropped = 0
        for part in list_parts(root):
            if self._owns(part.rank) and written_later(part):
                part.path.unlink()
                dropped += 1
        for _, rank, rank_dir in list(rank_dirs(root)):
            if self._owns(rank):
                for tmp in rank_dir.glob(".*.tmp"):  # a part that was being written when the run died
                    tmp.unlink()
                _remove_if_empty(rank_dir)
                _remove_if_empty(rank_dir.parent)
        if dropped:
            log.info("%s: dropped %d part(s) written after the checkpoint", root.name, dropped)


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:  # not empty, or already gone
        pass


@RECORDERS.register("paths", help="--paths / --paths-eval: per-sample learning paths as Parquet")
def build_paths(ctx: RunContext) -> Optional[Recorder]:
    rec = ctx.cfg.record
    if not (rec.paths or rec.paths_eval):
        return None
    return PathRecorder(ctx.output_dir, ctx.rank, ctx.world_size, ctx.data.train.num_classes, rec.paths_topk,
                        rec.paths_rows_per_part, train=rec.paths, eval_pass=rec.paths_eval, mixed=mixes_rows(ctx.cfg))
