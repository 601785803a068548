"""DeepSpeed ZeRO stage 1/2 as an optional backend, through accelerate's DeepSpeed plugin.

``--deepspeed launch/deepspeed/zero2.json`` (train.deepspeed) makes every process train
through a DeepSpeedEngine; so does ``accelerate launch --use_deepspeed`` on GPUs. ZeRO-1
shards the optimizer state over the processes, ZeRO-2 the gradients too. That pays off
when optimizer state and gradients dominate memory: large models (ViT-L/H, big ConvNeXts)
with Adam-type optimizers. For ResNets with SGD the state is one momentum buffer and
DDP is as fast or faster: keep the default. Stage 3 (sharded parameters) is refused: the
evaluation and the checkpoints here use the whole model on every process.

Checkpoints stay single files: under ZeRO each process's optimizer shard is gathered
into the checkpoint's per-process entries, so resuming needs the same number of processes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..config import Config


def read_deepspeed_config(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--deepspeed: {path} does not exist (see launch/deepspeed/zero1.json, zero2.json)")
    try:
        config = json.loads(file.read_text())
    except ValueError as exc:
        raise ConfigError(f"--deepspeed: {path} is not valid JSON: {exc}") from None
    stage = config.get("zero_optimization", {}).get("stage", 0) if isinstance(config, dict) else None
    if stage not in (0, 1, 2):
        raise ConfigError(f"--deepspeed: {path} asks for ZeRO stage {stage}; cg-train supports stages 0, 1 and 2")
    return config


def accelerator_kwargs(cfg: "Config", cpu: bool) -> dict[str, Any]:
    """Accelerator arguments for ``cfg.train.deepspeed``. Never ``cpu=True``: accelerate would silently
    drop DeepSpeed; on CPU the process group uses gloo instead (DeepSpeed picks its CPU accelerator)."""
    config = read_deepspeed_config(cfg.train.deepspeed)
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise ConfigError("--deepspeed needs DeepSpeed: pip install 'cg-train[deepspeed]' (DS_BUILD_OPS=0 builds "
                          "it without compiling CUDA kernels)") from None
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    handlers = [InitProcessGroupKwargs(backend="gloo")] if cpu else []
    return {"deepspeed_plugin": DeepSpeedPlugin(hf_ds_config=config), "kwargs_handlers": handlers}


def uses_deepspeed(accelerator: "Accelerator") -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def shards_optimizer(accelerator: "Accelerator") -> bool:
    """Whether each process holds only its own part of the optimizer state (ZeRO stage >= 1)."""
    return uses_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage >= 1


def configure(accelerator: "Accelerator", cfg: "Config") -> None:
    """Fill in what DeepSpeed cannot infer (no DataLoader goes through ``prepare``); refuse what it cannot do."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin.zero_stage not in (0, 1, 2):
        raise ConfigError(f"DeepSpeed ZeRO stage {plugin.zero_stage} is not supported: use stage 1 or 2 "
                          f"(launch/deepspeed/zero1.json, zero2.json)")
    if cfg.train.grad_accum_steps != 1:
        raise ConfigError("--grad-accum-steps > 1 is not supported with DeepSpeed: raise --batch-size instead, "
                          "or train with DDP")
    per_process = -(-cfg.data.batch_size // accelerator.num_processes)
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = per_process
