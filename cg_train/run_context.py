"""The types every extension of the training loop shares: the run's context and the recorder hooks.

They sit below ``augment/``, ``supervision/`` and ``recorders/`` (and import none of them), so those three
never import each other for a base class: a supervision method keeps state through the recorder hooks, an
augmentation adds a recorder, a recorder reads a batch, all through this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from accelerate.utils import gather_object

if TYPE_CHECKING:
    from accelerate import Accelerator

    from .config import Config
    from .data.bundle import DataBundle
    from .data.loaders import SkippedSample
    from .data.manifest import Batch
    from .engine.evaluate import EvalResult


@dataclass
class RunContext:
    cfg: "Config"
    output_dir: Path
    accelerator: "Accelerator"
    data: "DataBundle"

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model inside its DDP wrapper (or DeepSpeed's engine), as ``accelerator.unwrap_model`` gives it.

        accelerate's version imports DeepSpeed whenever it is installed (1.3 s of CPU, mlflow included, at a
        run's first checkpoint): a run that does not use DeepSpeed only ever has DDP around its model.
        """
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            return self.accelerator.unwrap_model(model)
        while isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        return model

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process (collective; no-op with one process)."""
        return gather_object([obj]) if self.world_size > 1 else [obj]


class Recorder:
    """Base class with no-op hooks; override what you need (a hook left as this no-op is never called)."""

    #: True: ``on_train_batch`` communicates, so it runs even on a process whose batch is empty
    #: (every image of its share unreadable); otherwise it is called for non-empty batches only.
    collective: bool = False

    def on_fit_start(self, ctx: RunContext) -> None: ...

    def on_train_batch(self, ctx: RunContext, epoch: int, step: int, batch: "Batch", logits: torch.Tensor,
                       losses: torch.Tensor) -> None:
        """Every training step, on every process; ``losses`` are per-sample and detached."""

    def on_train_log(self, ctx: RunContext, epoch: int, step: int, count: int, loss: float, lr: float) -> None:
        """Every ``print_freq`` steps with the global batch size, mean loss and learning rate (same on all
        processes; read where the trainer reads the loss anyway, so no extra host sync)."""

    def on_train_epoch_end(self, ctx: RunContext, epoch: int) -> None: ...

    def extra_eval_phases(self, ctx: RunContext, epoch: int) -> Sequence[str]:
        """Evaluation phases beyond the standard ones that this recorder needs at evaluation ``epoch``
        (e.g. ``cg_train.data.bundle.TRAIN_ALL``: every training sample, eval mode, no augmentation)."""
        return ()

    def on_eval_batch(self, ctx: RunContext, phase: str, epoch: int, batch: "Batch", logits: torch.Tensor) -> None:
        """Every evaluation batch of every phase, on every process (eval mode, float logits, no grad)."""

    def on_eval(self, ctx: RunContext, phase: str, epoch: int, result: "EvalResult") -> None:
        """After a whole evaluation phase; ``result`` is already summed over processes."""

    def on_skipped(self, ctx: RunContext, epoch: int, phase: str, skipped: list["SkippedSample"]) -> None:
        """Samples that could not be decoded in one phase, gathered from all processes."""

    def on_fit_end(self, ctx: RunContext) -> None: ...

    def on_stopped(self, ctx: RunContext) -> None:
        """A stop signal ended the run early, after its checkpoint: release what would not survive the exit
        (the same signal may have reached a recorder's helper processes too: SLURM signals the whole step)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore after resume; an empty dict means a fresh start (truncate own files)."""
