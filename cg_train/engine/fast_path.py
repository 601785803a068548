"""The fast path (``speed.*``, docs/throughput.md): cuDNN autotuning, channels_last, torch.compile, CPU memory reuse.

Each piece is one function that ``run`` calls at one place, so the trainer stays the
plain loop. What changes the arithmetic (channels_last: other convolution kernels;
compile: fused kernels) is opt-in; a resumed run uses the same flags as the run it
continues (they are in the checkpoint's config), so it continues with the same kernels.
"""
from __future__ import annotations

import ctypes
import logging
from functools import partial
from typing import TYPE_CHECKING, Callable

import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..config import Config

log = logging.getLogger("cg_train")


#: glibc's mallopt parameters (malloc.h), and the size below which freed blocks stay in the process
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BELOW_BYTES = 1 << 30


def configure_backends(cfg: "Config", device: torch.device) -> None:
    """cuDNN picks the fastest convolution algorithm per input shape (fixed shapes: one search at start);
    on a CPU, freed tensor memory is kept for the next step."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.speed.cudnn_benchmark
    elif device.type == "cpu" and cfg.speed.keep_freed_memory and not keep_freed_memory():
        log.debug("--keep-freed-memory: no glibc mallopt here, or it refused the thresholds; malloc left as it is")


def keep_freed_memory() -> bool:
    """Let malloc keep freed blocks below 1 GiB for reuse instead of handing them back to the OS.

    A CPU training step frees and allocates the same activations, gradients and oneDNN buffers every
    step. glibc serves blocks above its mmap threshold (adaptive, at most 32 MiB) with fresh mappings
    and trims the top of its heap, so each step page-faults that memory in again: about 20,000 faults
    (80 MB) a step for resnet18 at 32 px, batch 64, about a tenth of the step on a 2-core VM.
    Arithmetic is unchanged; the process keeps its peak memory. False where there is no glibc
    ``mallopt`` (macOS, musl) or it refuses the value; the trim threshold is raised only after the
    mmap one (alone it would freeze the mmap threshold at 128 KiB: more faults, not fewer).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BELOW_BYTES))


def memory_format(cfg: "Config") -> torch.memory_format:
    return torch.channels_last if cfg.speed.channels_last else torch.contiguous_format


def prepare_model(model: torch.nn.Module, cfg: "Config") -> torch.nn.Module:
    """Before ``accelerator.prepare``: NHWC weights (inputs follow: the loaders hand out NHWC images)."""
    return model.to(memory_format=memory_format(cfg))


def compile_error(device: torch.device) -> str:
    """Why torch.compile cannot run here ("" if it can): a tiny function compiled and run on ``device``.

    Compiling needs a C++ compiler (CPU) or Triton (GPU) at run time, which many clusters' images
    lack; this finds out in seconds at start rather than at the first training step.
    """
    try:
        probe = torch.compile(lambda x: torch.relu(x) * 2 + 1, dynamic=False)
        probe(torch.ones(8, device=device))
    except Exception as exc:  # the backends raise many kinds (BackendCompilerFailed, CalledProcessError, ...)
        lines = [line for line in str(exc).splitlines() if line.strip()] or ["no message"]
        return f"{type(exc).__name__}: {lines[0][:200]}"
    return ""


def maybe_compile(model: torch.nn.Module, cfg: "Config", accelerator: "Accelerator") -> torch.nn.Module:
    """After ``accelerator.prepare``: compile the DDP-wrapped model in place (``Module.compile``: DDP's
    compiler splits the graph at gradient buckets, so communication still overlaps the backward pass,
    and parameter names, hence checkpoints, stay those of the plain model)."""
    if not cfg.speed.compile:
        return model
    if cfg.train.deepspeed:
        raise ConfigError("--compile does not combine with --deepspeed: DeepSpeed compiles through its own "
                          "config ('compile' section); drop one of the two")
    error = compile_error(accelerator.device)
    if error:
        log.warning("--compile: torch.compile does not work on this machine (%s); training without it", error)
        return model
    import torch._dynamo

    # a part of the model that fails to compile later runs eagerly (torch logs which) instead of ending the run
    torch._dynamo.config.suppress_errors = True
    model.compile()
    log.info("--compile: the model compiles during its first steps (minutes for a ResNet-50)")
    return model


def step_calls(accelerator: "Accelerator", optimizer: torch.optim.Optimizer
               ) -> tuple[Callable[[torch.Tensor], None], Callable[[], None], Callable[[], None]]:
    """(backward, optimizer step, zero_grad) for the trainer's step.

    accelerate's wrappers look up optional packages and signatures on every call (``is_lomo_available``
    twice per ``AcceleratedOptimizer.step``, ``inspect.signature`` per ``zero_grad``: about 0.12 ms of host
    time per step on an idle CPU core, several times that under load; ``benchmarks/step_costs.py
    --intrinsic``) and otherwise only call torch. Where they have nothing else to do (no
    loss scaler, no DeepSpeed/XLA/Megatron engine, no accelerate-managed accumulation: the trainer
    accumulates itself) the step calls torch directly: the same arithmetic (accelerate's ``loss / 1``
    is exact), without the lookups.
    """
    from accelerate.optimizer import AcceleratedOptimizer
    from accelerate.utils import DistributedType

    plain = (type(optimizer) is AcceleratedOptimizer and accelerator.scaler is None
             and accelerator.gradient_accumulation_steps == 1
             and accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.XLA,
                                                      DistributedType.MEGATRON_LM))
    if not plain:
        return accelerator.backward, optimizer.step, partial(optimizer.zero_grad, set_to_none=True)
    inner = optimizer.optimizer
    return torch.Tensor.backward, inner.step, partial(inner.zero_grad, set_to_none=True)
