"""The epoch loop, readable top to bottom (after torchvision's references/classification).

Order per epoch, as in seed 004: evaluate every phase (pristine, corrupt,
train_sample, test), then train one epoch; after the last epoch, evaluate once
more. A checkpoint is written after each evaluation and after each training
epoch, so a crash loses at most one phase of work and a resumed run neither
repeats nor skips a CSV row. On SIGTERM/SIGUSR2 (preemption) the loop stops within a
few steps at an optimizer-step boundary, even mid-epoch, checkpoints and raises
TrainingInterrupted; the resumed run continues at the next batch.
"""
from __future__ import annotations

import hashlib
import logging
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, NamedTuple, NoReturn, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from ..progress import progress_bar

from ..augment import Augmenter, mixed_targets, model_input
from ..config import to_dict
from ..data.loaders import Loader
from ..data.manifest import Batch
from ..errors import CgTrainError
from ..recorders import Recorders, RunContext
from ..supervision import Supervision
from . import checkpoint, deepspeed_backend, fast_path
from .evaluate import evaluate
from .preemption import StopSignals, TrainingInterrupted, signal_names

log = logging.getLogger("cg_train")

#: With several processes the summed stop request is read every this many steps: reading a GPU value
#: waits for the GPU, so not every step. One process reads its own (host) flag every step.
STOP_POLL_STEPS = 4


class StepStats(NamedTuple):
    """One step's sample count, loss sum and stop requests, the same on every process.

    One process: ``count`` and ``stop`` are host values (nothing to agree on, nothing to compute on the
    device); several: device scalars of the step's one all-reduce. ``loss_sum`` is a float64 device scalar.
    """

    count: Union[float, torch.Tensor]
    loss_sum: torch.Tensor
    stop: Union[bool, torch.Tensor]


@dataclass
class TrainState:
    epoch: int = 0  # training epochs completed
    step: int = 0  # next step inside ``epoch`` (non-zero only for a mid-epoch checkpoint)
    evaluated_epoch: int = -1  # last epoch whose evaluation rows are written
    best_acc1: float = -1.0  # best test top-1 so far


def label_digest(ctx: RunContext) -> str:
    """Fingerprint of the training labels: a resume must see the same data and corruption."""
    digest = hashlib.sha256()
    for array in (ctx.data.train.true_labels, ctx.data.train.observed_labels):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class Trainer:
    def __init__(self, ctx: RunContext, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, recorders: Recorders, crop_size: int,
                 stop: Optional[StopSignals] = None, supervision: Optional[Supervision] = None,
                 augment: Optional[Augmenter] = None):
        self.ctx, self.cfg, self.accelerator = ctx, ctx.cfg, ctx.accelerator
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.recorders, self.crop_size = recorders, crop_size
        # what runs per step only when active: --method's losses (None: plain cross-entropy, computed
        # inline), --da (None: none); recorders without per-step hooks are not in Recorders' per-step lists
        self.supervision = supervision if supervision is not None and supervision.active else None
        self.augment = augment
        self.backward, self.optimizer_step, self.zero_grad = fast_path.step_calls(self.accelerator, optimizer)
        self.fixed = self.cfg.augment.fix_student  # --fix-student: forward only, nothing is updated
        self.stop = stop if stop is not None else StopSignals(signals=())
        self.stopped_by: list[str] = []  # set when a checkpoint is saved because of a stop signal
        self.state = TrainState()
        self.digest = label_digest(ctx)
        # the resolved config, fixed from here on: converted once (OmegaConf takes ~50 ms), saved in every checkpoint
        self.config_dict = to_dict(self.cfg)

    @property
    def progress(self) -> bool:
        return self.cfg.train.progress and self.ctx.is_main

    # ------------------------------------------------------------------ loop
    @property
    def epochs(self) -> int:
        """--epochs, after a supervision method's first stage (--init-epochs) if it has one."""
        return self.cfg.train.epochs + (self.supervision.stage_epochs if self.supervision is not None else 0)

    def fit(self) -> None:
        epochs = self.epochs
        if self.state.epoch > epochs:
            raise CgTrainError(f"the checkpoint has already trained {self.state.epoch} epochs, more than "
                               f"--epochs {epochs}: raise --epochs or use another --output-dir")
        for epoch in range(self.state.epoch, epochs):
            if self.state.evaluated_epoch < epoch:
                self.evaluate_all(epoch)
                self.stop_if_requested()
            self.train_epoch(epoch)
            if not self.fixed:  # --fix-student: no optimizer step, so no schedule step either
                self.scheduler.step()
            self.state.epoch, self.state.step = epoch + 1, 0
            self.recorders.on_train_epoch_end(self.ctx, epoch)
            self.save_checkpoint()
            self.stop_if_requested()
        if self.state.evaluated_epoch < epochs:
            self.evaluate_all(epochs)
        self.recorders.on_fit_end(self.ctx)

    def train_epoch(self, epoch: int) -> None:
        self.model.train(not self.fixed)
        loader = self.ctx.data.train_loader
        loader.set_epoch(epoch, start_step=self.state.step)
        total = self.state.step + len(loader)
        count, loss_sum = 0.0, torch.zeros((), dtype=torch.float64, device=self.accelerator.device)
        poll = 1 if self.ctx.world_size == 1 else STOP_POLL_STEPS  # a host flag costs nothing to read
        bar = progress_bar(total, f"epoch {epoch} train", self.progress, initial=self.state.step)
        stopping = False
        started = time.perf_counter()
        for step, batch in enumerate(loader, start=self.state.step):
            batch = batch.to(self.accelerator.device)
            if self.augment is not None:
                batch = self.augment(batch, epoch, step)
            logits, losses, stats = self.train_step(batch, step, total)
            count += stats.count
            loss_sum += stats.loss_sum
            self.recorders.on_train_batch(self.ctx, epoch, step, batch, logits, losses)
            if step % self.cfg.train.print_freq == 0:
                self.log_train(epoch, step, stats, bar)
            bar.update()
            if not stopping and step % poll == 0:
                stopping = bool(stats.stop)  # the same (summed) flag on every process
            if stopping and self.ends_accumulation_group(step, total):
                bar.close()
                self.interrupt(next_step=step + 1)
        bar.close()
        self.report_skipped(epoch, "train", loader)
        count, loss_sum = float(count), loss_sum.item()  # waits for the last step, so the time below is the epoch's
        seconds = time.perf_counter() - started
        log.info("epoch %d: trained on %d samples, mean loss %.4f, lr %.4g, %.1f s (%.1f img/s)", epoch,
                 int(count), loss_sum / max(count, 1), self.optimizer.param_groups[0]["lr"], seconds,
                 count / max(seconds, 1e-9))

    def log_train(self, epoch: int, step: int, stats: StepStats, bar: Any) -> None:
        """Every --print-freq steps: the global batch's size and mean loss to the recorders and the bar."""
        count, loss_sum = float(stats.count), stats.loss_sum.item()  # a deliberate read, outside the step
        loss, lr = loss_sum / max(count, 1), self.optimizer.param_groups[0]["lr"]
        self.recorders.on_train_log(self.ctx, epoch, step, int(count), loss, lr)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}")

    def train_step(self, batch: Batch, step: int, total: int) -> tuple[torch.Tensor, torch.Tensor, StepStats]:
        """Forward/backward one mini-batch; step the optimizer at the end of an accumulation group.

        The loss is scaled so that averaging gradients over W processes gives the
        mean over the *global* batch, even when processes hold unequal shares:
        1 process and W processes then take the same optimizer step. With several
        processes the stats (count, loss sum, stop requests) are summed in one
        all-reduce, so every process sees the same stop decision at no extra
        communication; one process has nothing to agree on and keeps count and
        stop request on the host.
        """
        accelerator, world = self.accelerator, self.ctx.world_size
        images, targets, weight = batch.images, batch.observed_labels, 1.0
        if self.augment is not None:  # --lw-mix: the batch and its augmented copy; a mixing --da: soft targets
            images, targets = model_input(batch), mixed_targets(batch, self.ctx.data.train.num_classes)
        if len(batch.indices) == 0:
            # Every image of this process's share was unreadable: a weightless dummy keeps DDP in step.
            images = torch.zeros(1, 3, self.crop_size, self.crop_size, device=accelerator.device)
            targets = torch.zeros(1, dtype=torch.int64, device=accelerator.device)
            weight = 0.0
        group_start, group_len = self.accumulation_group(step, total)
        sync = step - group_start == group_len - 1
        with nullcontext() if sync else accelerator.no_sync(self.model), torch.set_grad_enabled(not self.fixed):
            logits = self.model(images)
            if self.supervision is None:
                losses = F.cross_entropy(logits.float(), targets, reduction="none")
            else:
                losses = self.supervision(batch, images, targets, logits, self.state.epoch, step)
            if weight != 1.0:
                losses = losses * weight
            loss_sum = losses.detach().sum().double()
            if world == 1:
                stats = StepStats(float(len(batch.indices)), loss_sum, self.stop.requested)
                scale = 1.0 / max(stats.count, 1.0)
            else:
                # fill kernels, not torch.tensor([...], device=cuda): a pageable copy would wait for the forward
                summed = accelerator.reduce(torch.stack([
                    losses.new_full((), len(batch.indices), dtype=torch.float64), loss_sum,
                    losses.new_full((), float(self.stop.requested), dtype=torch.float64)]), reduction="sum")
                stats = StepStats(summed[0], summed[1], summed[2])
                scale = world / summed[0].clamp(min=1.0).float()
            loss = losses.sum() * scale / group_len
            if not self.fixed:
                self.backward(loss)
        if sync and not self.fixed:
            self.optimizer_step()
            self.zero_grad()
        return logits[:len(losses)].detach(), losses.detach(), stats  # --lw-mix: the original rows

    def accumulation_group(self, step: int, total: int) -> tuple[int, int]:
        """(first step, length) of the gradient-accumulation group holding ``step``; the last may be short."""
        accum = self.cfg.train.grad_accum_steps
        group_start = step - step % accum
        return group_start, min(accum, total - group_start)

    def ends_accumulation_group(self, step: int, total: int) -> bool:
        group_start, group_len = self.accumulation_group(step, total)
        return step == group_start + group_len - 1

    # ------------------------------------------------------------------ preemption
    def stop_if_requested(self) -> None:
        """At an epoch or evaluation boundary: stop if any process was signalled."""
        flag = torch.tensor([float(self.stop.requested)], device=self.accelerator.device)
        if self.ctx.world_size > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        if flag.item():
            self.interrupt(next_step=self.state.step)

    def interrupt(self, next_step: int) -> NoReturn:
        """Checkpoint so that a resumed run starts at ``next_step`` of the current epoch, then stop."""
        self.state.step = next_step
        self.stopped_by = signal_names(self.stop.received) or ["signal to another process"]
        self.save_checkpoint()
        self.recorders.on_stopped(self.ctx)
        stop = TrainingInterrupted(list(self.stop.received), self.state.epoch, next_step,
                                   str(self.ctx.output_dir / checkpoint.LATEST))
        log.info("%s: continue with --resume", stop)
        raise stop

    def evaluate_all(self, epoch: int) -> None:
        model = self.ctx.unwrap(self.model)
        is_best = False
        loaders = dict(self.ctx.data.eval_loaders)
        for phase in self.recorders.extra_eval_phases(self.ctx, epoch):
            loaders[phase] = self.ctx.data.extra_loader(phase)
        for phase, loader in loaders.items():
            result = evaluate(model, loader, self.accelerator, epoch, desc=f"epoch {epoch} eval {phase}",
                              on_batch=partial(self.recorders.on_eval_batch, self.ctx, phase, epoch),
                              progress=self.progress)
            self.report_skipped(epoch, phase, loader)
            self.recorders.on_eval(self.ctx, phase, epoch, result)
            log.info("epoch %d %-12s loss %.4f  acc1 %6.2f  acc5 %6.2f  (%d samples)", epoch, phase,
                     result.loss, result.acc1, result.acc5, result.count)
            if phase == "test" and result.count and result.acc1 > self.state.best_acc1:
                self.state.best_acc1, is_best = result.acc1, True
        self.state.evaluated_epoch = epoch
        self.save_checkpoint(is_best=is_best)

    def report_skipped(self, epoch: int, phase: str, loader: Loader) -> None:
        skipped = [sample for share in self.ctx.gather(list(loader.skipped)) for sample in share]
        self.recorders.on_skipped(self.ctx, epoch, phase, skipped)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        per_rank = {"rng": checkpoint.rng_state(), "recorders": self.recorders.state_dict()}
        sharded = deepspeed_backend.shards_optimizer(self.accelerator)
        if sharded:  # ZeRO: each process holds its own part of the optimizer state
            per_rank["optimizer"] = self.optimizer.state_dict()
        ranks = self.ctx.gather(per_rank)
        return {
            "arch": self.cfg.model.arch,
            "state_dict": self.ctx.unwrap(self.model).state_dict(),
            "optimizer": None if sharded else self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "train_state": asdict(self.state),
            "epoch": self.state.epoch,
            "best_acc1": self.state.best_acc1,
            "label_digest": self.digest,
            "ranks": ranks,
            "config": self.config_dict,
            "stopped_by": self.stopped_by,
            # fp16: the loss scale and its growth tracker decide which steps are skipped after a resume
            "grad_scaler": None if self.accelerator.scaler is None else self.accelerator.scaler.state_dict(),
        }

    def save_checkpoint(self, is_best: bool = False, name: str = checkpoint.LATEST) -> None:
        state = self.checkpoint_state()
        if self.ctx.is_main:
            path = self.ctx.output_dir / name
            checkpoint.save(path, state)
            if is_best:
                checkpoint.copy(path, self.ctx.output_dir / checkpoint.BEST)
        self.accelerator.wait_for_everyone()

    def start_fresh(self) -> None:
        """Empty every recorder's files and save ``initial_state.pth.tar`` (the untrained model)."""
        self.recorders.load_state_dict({})
        self.save_checkpoint(name=checkpoint.INITIAL)

    def check_resumable(self, state: dict[str, Any], path: Any) -> None:
        """Refuse a checkpoint of other data or another plan before anything is written."""
        batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.model.modules())
        changes = checkpoint.plan_changes(state.get("config", {}), self.cfg, len(state["ranks"]),
                                          self.ctx.world_size, batchnorm)
        if changes:
            raise CgTrainError(f"--resume: {path} was trained with other settings that decide the sample plan or "
                               f"the model's trajectory: {'; '.join(changes)}; resume with the ones it was "
                               f"trained with or use a new --output-dir")
        if state.get("label_digest") != self.digest:
            raise CgTrainError(f"--resume: {path} was trained on other labels (dataset, --corrupt-fraction, "
                               f"--noise-type, --seed or the --labels table differ): resume with the same ones or "
                               f"use a new --output-dir")
        if state.get("arch") != self.cfg.model.arch:
            raise CgTrainError(f"--resume: {path} holds a {state.get('arch')} model, not --arch "
                               f"{self.cfg.model.arch}: resume with the same --arch or use a new --output-dir")
        sharded = state.get("optimizer", {}) is None
        if sharded != deepspeed_backend.shards_optimizer(self.accelerator) or \
                sharded and len(state["ranks"]) != self.ctx.world_size:
            saved = f"DeepSpeed ZeRO on {len(state['ranks'])} process(es)" if sharded else "an unsharded optimizer"
            raise CgTrainError(f"--resume: {path} holds {saved}: resume with the same --deepspeed config and "
                               f"number of processes")

    def load_checkpoint(self, state: dict[str, Any], path: Any) -> None:
        self.check_resumable(state, path)
        self.ctx.unwrap(self.model).load_state_dict(state["state_dict"])
        ranks = state["ranks"]
        if state["optimizer"] is None:  # ZeRO: every process picks its own part from the list
            self.optimizer.load_state_dict([r["optimizer"] for r in ranks])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.accelerator.scaler is not None and state.get("grad_scaler"):
            self.accelerator.scaler.load_state_dict(state["grad_scaler"])
        self.state = TrainState(**state["train_state"])
        mine = ranks[self.ctx.rank] if len(ranks) == self.ctx.world_size else ranks[0]
        checkpoint.set_rng_state(mine["rng"])
        self.recorders.load_state_dict(mine["recorders"])
        log.info("resumed from %s: %d epoch(s) and %d step(s) trained, next evaluation at epoch %d", path,
                 self.state.epoch, self.state.step, self.state.evaluated_epoch + 1)
