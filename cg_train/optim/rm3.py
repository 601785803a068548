"""RM3 (seed 004, arXiv:2003.07422): step along the coordinate-wise median of the last three gradients.

A coordinate moves only where at least two of three recent mini-batches agree on its direction, so
"weak" directions that a few examples push (memorising corrupt labels) are suppressed much more than
"strong" ones that many examples share.

- Each parameter keeps a ring buffer of its last 3 gradients (3 extra copies of the model: the memory
  cost), each with weight decay already added as SGD does (``g + wd * p`` at the time it was seen).
- Nothing moves until a parameter has 3 gradients; from then on every step is
  ``p -= lr * median(g[t-2], g[t-1], g[t])``, with the exact median ``max(min(a, b), min(max(a, b), c))``
  (no rounding, unlike ``a + b + c - min - max``).
- One RM3 entry per ``step()``: with ``--grad-accum-steps K`` an entry is the accumulated gradient of
  K mini-batches (the effective batch), not K separate entries.
- Under DDP ``step()`` runs after the all-reduce, so every process buffers the same gradients and
  takes the same step. The buffers and counts live in ``state_dict()``, so checkpoints resume exactly.
- Momentum is refused at start-up: RM3 is unstable with it (seed 004).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Optional

import torch

from ..errors import ConfigError
from . import OPTIMIZERS, OptimizerSpec

if TYPE_CHECKING:
    from ..config import Config, OptimConfig

HISTORY = 3


def median_of_three(a: list[torch.Tensor], b: list[torch.Tensor], c: list[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise exact median of three tensor lists (new tensors; 2 temporary copies at most)."""
    low = torch._foreach_minimum(a, b)
    high = torch._foreach_maximum(a, b)
    torch._foreach_minimum_(high, c)
    torch._foreach_maximum_(low, high)
    return low


class RM3(torch.optim.Optimizer):
    """SGD on the coordinate-wise median of the last 3 gradients; state: ``grads`` [3, *shape], ``count``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, slots, ready = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("RM3 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["grads"] = torch.zeros((HISTORY, *p.shape), dtype=p.dtype, device=p.device)
                    state["count"] = 0
                params.append(p)
                grads.append(p.grad)
                slots.append(state["grads"][state["count"] % HISTORY])
                state["count"] += 1
                if state["count"] >= HISTORY:
                    ready.append(p)
            if not params:
                continue
            torch._foreach_copy_(slots, grads)
            if group["weight_decay"] != 0:
                torch._foreach_add_(slots, params, alpha=group["weight_decay"])
            if ready:
                history = [self.state[p]["grads"] for p in ready]
                median = median_of_three(*([h[i] for h in history] for i in range(HISTORY)))
                torch._foreach_add_(ready, median, alpha=-group["lr"])
        return loss


def build_rm3(params: Iterable[torch.nn.Parameter], o: "OptimConfig") -> torch.optim.Optimizer:
    return RM3(params, lr=o.lr, weight_decay=o.weight_decay)


def check_rm3(cfg: "Config") -> None:
    if cfg.optim.momentum != 0:
        raise ConfigError(f"--optimizer RM3 needs --momentum 0 (got {cfg.optim.momentum}): RM3 is unstable "
                          f"with momentum (seed 004); add --momentum 0")


OPTIMIZERS.register("RM3", help="median of the last 3 mini-batch gradients (seed 004); needs --momentum 0; "
                                "keeps 3 gradient copies per parameter")(OptimizerSpec(build_rm3, check_rm3))
