"""``--loader synthetic``: random images already on the device, no file read and no decode.

What a step costs with an infinitely fast loader: the model's own ceiling, the baseline
that ``benchmarks/throughput.py`` divides a real loader's images/s by (as NVIDIA's
DeepLearningExamples' ``--data-backend synthetic``). Batches follow the same sharding
plan and carry the manifest's real labels and indices, so every recorder works unchanged;
only the pixels are noise (a fixed tensor, so nothing is generated per step).
"""
from __future__ import annotations

from typing import Iterator

import torch

from ..manifest import Batch
from . import LOADERS, LoaderSpec, SkippedSample, epoch_plan, per_process_eval_batch


class SyntheticLoader:
    def __init__(self, spec: LoaderSpec):
        self.spec = spec
        self.skipped: list[SkippedSample] = []
        self.observed = torch.from_numpy(spec.manifest.observed_labels)
        self.true = torch.from_numpy(spec.manifest.true_labels)
        generator = torch.Generator().manual_seed(spec.seed)
        largest = per_process_eval_batch(spec)  # ceil(batch / processes): any step of either phase
        images = torch.randn(largest, 3, spec.crop_size, spec.crop_size, generator=generator)
        memory_format = torch.channels_last if spec.channels_last else torch.contiguous_format
        self.images = images.to(spec.device).contiguous(memory_format=memory_format)
        self._steps: list = []

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self._steps = epoch_plan(self.spec, epoch)[start_step:]

    def __len__(self) -> int:
        return len(self._steps)

    def __iter__(self) -> Iterator[Batch]:
        for step in self._steps:
            kept = torch.from_numpy(step)
            yield Batch(self.images[:len(step)], self.observed[kept], self.true[kept], kept)


@LOADERS.register("synthetic", help="random images already on the device, no decoding: the model's "
                                    "throughput ceiling (benchmarks)")
def build_synthetic_loader(spec: LoaderSpec) -> SyntheticLoader:
    return SyntheticLoader(spec)
