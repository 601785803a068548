"""``--loader dali``: NVIDIA DALI decodes and resizes (nvJPEG on a GPU, libjpeg-turbo threads on CPU).

Why the host drives the order (``fn.external_source``) instead of ``fn.readers.file``:
a training step's samples come from :mod:`cg_train.data.sharding` (the same global
batches for any number of processes, unequal shares of one sample, a partial last
batch, a resume at any step), and a reader with a fixed batch size and its own
shuffling cannot follow that plan. So each DALI iteration is one planned step: the
host reads the files of this process's share, parses each header for the image
size, computes the crop window and flip (:mod:`cg_train.data.crops`, a pure function
of seed, epoch, index and size) and feeds bytes, windows and indices in; DALI decodes
only the window, resizes, normalises and hands the indices back with the images.

Consequences:

- A run resumed with ``set_epoch(epoch, start_step)`` sees exactly the batches and
  augmentations an uninterrupted run sees from that step on, so DALI's own
  checkpointing (``enable_checkpointing``, which saves reader positions and operator
  RNG states) has nothing to add: no DALI reader or random operator holds state.
- Bad files: DALI fails a whole batch on one undecodable image, so files whose header
  does not vouch for them (:mod:`cg_train.data.image_header`) never reach it; they,
  and every sample of a batch DALI fails on anyway, are decoded by the reference PIL
  path with the same window. What PIL cannot decode either is left out and reported
  in ``skipped``; indices never shift.
- Reading: on network storage a file read takes 0.5-2 ms, so reading a step's files one
  after another on the training thread would cap a process at 500-2,000 images/s. A
  small thread pool (``--dali-readers``) reads the files of the next steps while DALI
  decodes this one; what is fed, in which order, and how bad files are handled is
  exactly what the serial read gives (``readers=0``).
- Pipelines: every loader of a run whose graph has the same shape (file or array
  input, crop, batch, threads, device, layout) shares one DALI pipeline, so train, the
  four eval phases and ``train_all`` hold one set of DALI threads and decoder memory,
  not six. Phases run one after another; an epoch left unfinished gives the pipeline up.
"""
from __future__ import annotations

import io
import logging
import mmap
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from ...errors import CgTrainError, ConfigError
from ..augment import shift_and_flip
from ..crops import crop_windows, pad_crop_shifts
from ..image_header import trusted_size
from ..manifest import Batch
from . import LOADERS, LoaderSpec, SkippedSample, epoch_plan, per_process_eval_batch
from .torchvision import DECODE_ERRORS

log = logging.getLogger("cg_train")

#: Index of the stand-in sample fed when DALI would otherwise get an empty batch (it refuses those).
PLACEHOLDER_INDEX = -1
PLACEHOLDER_SIZE = 8
HUGE_PAGE = 2 << 20
#: Steps whose files the reader pool reads ahead of the one DALI asks for (DALI's own queue comes on top).
READ_AHEAD_STEPS = 4
#: Files per task of the reader pool: fewer hand-offs between threads than one task per file.
READ_CHUNK = 4

Read = tuple[Optional[np.ndarray], Optional[tuple[int, int]]]


def _placeholder(encoded: bool) -> np.ndarray:
    pixels = np.full((PLACEHOLDER_SIZE, PLACEHOLDER_SIZE, 3), 128, dtype=np.uint8)
    if not encoded:
        return pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def host_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """A fresh float32 CPU tensor, on transparent huge pages where Linux allows it.

    A batch is tens of MB written once per step: with 4 KiB pages the page faults of a
    plain ``torch.empty`` cost about 3x the copy itself (measured here: 24 ms vs 7 ms
    for 64x3x224x224). Fresh memory per batch, so a batch stays valid however long it is kept.
    """
    nbytes = int(np.prod(shape)) * 4
    if nbytes < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=torch.float32)
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory.madvise(mmap.MADV_HUGEPAGE)
    return torch.from_numpy(np.frombuffer(memory, dtype=np.float32).reshape(shape))


def _rgb(array: np.ndarray) -> np.ndarray:
    """An in-memory image as HWC uint8 with 3 channels (grayscale is repeated)."""
    if array.ndim == 2:
        array = array[:, :, None]
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[:, :, :3]


@dataclass
class PreparedStep:
    """One planned step as it was fed to DALI."""

    position: int  # position in this epoch's list of steps
    indices: np.ndarray  # this process's share, in plan order
    to_dali: np.ndarray  # bool per sample: decoded by DALI, else by the reference path


class StepFeeder:
    """DALI's source for one epoch: each call feeds the next planned step and remembers it.

    With a reader pool, the files of the next ``READ_AHEAD_STEPS`` steps are being read
    while the current one is prepared; results are taken in plan order, so what is fed
    does not depend on which read finishes first.
    """

    def __init__(self, loader: "DaliLoader", steps: list[np.ndarray], epoch: int,
                 pool: Optional[ThreadPoolExecutor] = None):
        self.loader, self.steps, self.epoch, self.pool = loader, steps, epoch, pool
        self.cursor = 0
        self.pending: deque[PreparedStep] = deque()
        self.reads: deque[list[Future]] = deque()  # the files of steps cursor, cursor + 1, ... in chunks

    def _read_ahead(self) -> None:
        assert self.pool is not None
        while len(self.reads) <= READ_AHEAD_STEPS and self.cursor + len(self.reads) < len(self.steps):
            indices = self.steps[self.cursor + len(self.reads)].tolist()
            chunks = [indices[i:i + READ_CHUNK] for i in range(0, len(indices), READ_CHUNK)]
            self.reads.append([self.pool.submit(self.loader._read_all, chunk) for chunk in chunks])

    def __call__(self) -> tuple:
        if self.cursor >= len(self.steps):
            raise StopIteration
        reads = None
        if self.pool is not None:
            self._read_ahead()
            reads = [read for future in self.reads.popleft() for read in future.result()]
        step, feed = self.loader.prepare(self.cursor, self.steps[self.cursor], self.epoch, reads)
        self.pending.append(step)
        self.cursor += 1
        return feed

    def restart_after(self, step: PreparedStep) -> None:
        """Forget what was prefetched; the next call feeds the step after ``step``."""
        self.close()
        self.cursor = step.position + 1
        self.pending.clear()

    def close(self) -> None:
        """Drop the reads ahead (those already running finish on their own; nobody waits for them)."""
        for futures in self.reads:
            for future in futures:
                future.cancel()
        self.reads.clear()

    @property
    def done(self) -> bool:
        return self.cursor >= len(self.steps) and not self.pending


class SharedPipeline:
    """One DALI pipeline used in turn by every loader of a run whose graph has the same shape.

    The pipeline's source is this object, which forwards to the feeder of the loader
    iterating now. DALI keeps nothing between epochs once its queue is drained and
    ``reset()``, so another loader can take over at an epoch boundary.
    """

    def __init__(self) -> None:
        self.pipe = None
        self.feeder: Optional[StepFeeder] = None  # the iteration that owns the pipeline now

    def __call__(self) -> tuple:
        assert self.feeder is not None
        return self.feeder()

    def take(self, feeder: StepFeeder) -> None:
        if self.feeder is not None:  # an iteration left unfinished, not yet closed: its batches are queued
            self.pipe = None
        self.feeder = feeder

    def release(self, feeder: StepFeeder, finished: bool) -> None:
        """End ``feeder``'s turn; an unfinished epoch leaves batches inside DALI, so the pipeline goes."""
        feeder.close()
        if self.feeder is feeder:
            self.feeder = None
            if not finished:
                self.pipe = None


class DaliLoader:
    def __init__(self, spec: LoaderSpec):
        if spec.resize_size < spec.crop_size:
            raise ConfigError(f"--loader dali needs --resize-size ({spec.resize_size}) >= --image-size "
                              f"({spec.crop_size}): torchvision would pad the crop, DALI does not")
        self.spec = spec
        manifest = spec.manifest
        self.encoded = manifest.files is not None
        self.preset = spec.augmentation
        self.randomized = spec.train and self.preset.random_resized_crop
        self.pad = self.preset.pad if spec.train else 0  # --augment cifar: shift after the resize
        self.gpu = spec.device.type == "cuda"
        self.device = spec.device if self.gpu else torch.device("cpu")
        self.threads = spec.dali_threads or max(1, spec.workers)
        self.observed = torch.from_numpy(manifest.observed_labels)
        self.true = torch.from_numpy(manifest.true_labels)
        self.placeholder = _placeholder(self.encoded)
        # the largest step of either phase: ceil(batch_size / world_size), the same for train and eval
        # (batch_size >= 1, so per_process_eval_batch's max(1, ...) never changes it)
        self.max_batch = per_process_eval_batch(spec)
        self.skipped: list[SkippedSample] = []
        self._steps: list[np.ndarray] = []
        self._epoch = 0
        self._warned = False
        device_id = None
        if self.gpu:
            device_id = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self.device_id = device_id
        shape = ("dali-pipeline", self.encoded, spec.crop_size, self.max_batch, self.threads, spec.prefetch,
                 device_id, spec.channels_last, tuple(self.preset.mean), tuple(self.preset.std), bool(self.pad))
        self._shared: SharedPipeline = spec.shared.setdefault(shape, SharedPipeline())
        self._pool: Optional[ThreadPoolExecutor] = None
        if self.encoded and spec.readers > 0:  # in-memory arrays need no reading
            key = ("dali-readers", spec.readers)
            if key not in spec.shared:
                spec.shared[key] = ThreadPoolExecutor(spec.readers, thread_name_prefix="cg-train-read")
            self._pool = spec.shared[key]

    # ------------------------------------------------------------------ the plan
    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self._steps = epoch_plan(self.spec, epoch)[start_step:]
        self._epoch = epoch
        self.skipped = []
        self._warned = False

    def __len__(self) -> int:
        return len(self._steps)

    # ------------------------------------------------------------------ host side of one step
    def _read(self, index: int) -> Read:
        """The sample's pixels or encoded bytes and its (height, width); (None, None): let PIL judge it."""
        manifest = self.spec.manifest
        if not self.encoded:
            pixels = _rgb(manifest.images[index])
            return pixels, pixels.shape[:2]
        try:
            with open(manifest.files[index], "rb") as f:
                data = f.read()
        except OSError:
            return None, None
        size = trusted_size(data)
        return (np.frombuffer(data, dtype=np.uint8), size) if size else (None, None)

    def _read_all(self, indices: list[int]) -> list[Read]:
        return [self._read(index) for index in indices]

    def prepare(self, position: int, indices: np.ndarray, epoch: int,
                read: Optional[list[Read]] = None) -> tuple[PreparedStep, tuple]:
        """Read one step's samples (unless ``read`` holds them, in order) and compute their windows;
        returns the step and DALI's inputs."""
        if read is None:
            read = [self._read(int(i)) for i in indices]
        to_dali = np.array([size is not None for _, size in read], dtype=bool)
        data = [d for d, size in read if size is not None]
        sizes = np.array([size for _, size in read if size is not None], dtype=np.float64).reshape(-1, 2)
        fed = indices[to_dali]
        if not len(fed):
            data = [self.placeholder]
            sizes = np.array([[PLACEHOLDER_SIZE, PLACEHOLDER_SIZE]], dtype=np.float64)
            fed = np.array([PLACEHOLDER_INDEX], dtype=np.int64)
        windows, mirror = crop_windows(sizes[:, 0], sizes[:, 1], np.maximum(fed, 0),
                                       randomized=self.randomized, seed=self.spec.seed, epoch=epoch,
                                       resize=self.spec.resize_size, crop=self.spec.crop_size)
        shift: tuple = ()
        if self.pad:
            shifts, mirror = pad_crop_shifts(self.spec.seed, epoch, np.maximum(fed, 0), self.pad)
            shift = (shifts.astype(np.float32),)
        # uniform per-sample values go in as one [n, ...] array each (a batch to DALI, no per-sample wrapping)
        tail = (mirror.astype(np.int32), fed.astype(np.int64), *shift)
        if not self.encoded:
            roi = windows.astype(np.float32)
            return PreparedStep(position, indices, to_dali), (data, roi[:, :2].copy(), roi[:, 2:].copy(), *tail)
        # decode a margin around the window: the antialiasing filter reaches about one scale step out
        scale = np.maximum((windows[:, 2:] - windows[:, :2]).max(axis=1) / self.spec.crop_size, 1.0)
        margin = (np.ceil(scale) + 1)[:, None]
        start = np.clip(np.floor(windows[:, :2]) - margin, 0, sizes)
        end = np.clip(np.ceil(windows[:, 2:]) + margin, 0, sizes)
        roi = (windows - np.tile(start, 2)).astype(np.float32)
        feed = (data, start.astype(np.int32), (end - start).astype(np.int32), roi[:, :2].copy(), roi[:, 2:].copy(),
                *tail)
        return PreparedStep(position, indices, to_dali), feed

    # ------------------------------------------------------------------ reference path
    def reference_image(self, index: int, epoch: int) -> tuple[Optional[torch.Tensor], Optional[str]]:
        """Decode one sample with PIL through the same window (the fallback for files DALI cannot take)."""
        try:
            image = self.spec.manifest.load_image(index)
        except DECODE_ERRORS as exc:
            return None, f"{type(exc).__name__}: {exc}"
        width, height = image.size
        windows, mirror = crop_windows(np.array([height]), np.array([width]), np.array([index]),
                                       randomized=self.randomized, seed=self.spec.seed, epoch=epoch,
                                       resize=self.spec.resize_size, crop=self.spec.crop_size)
        top, left, bottom, right = windows[0]
        crop = self.spec.crop_size
        image = image.resize((crop, crop), Image.BILINEAR, box=(left, top, right, bottom))
        tensor = TF.to_tensor(image)
        if self.pad:
            shifts, flip = pad_crop_shifts(self.spec.seed, epoch, np.array([index]), self.pad)
            tensor = shift_and_flip(tensor, int(shifts[0, 0]), int(shifts[0, 1]), bool(flip[0]))
        elif mirror[0]:
            tensor = tensor.flip(-1)
        return TF.normalize(tensor, self.preset.mean, self.preset.std), None

    # ------------------------------------------------------------------ batches
    def _build(self):
        from .dali_pipeline import build_pipeline

        return build_pipeline(self._shared, encoded=self.encoded, crop_size=self.spec.crop_size,
                              mean=self.preset.mean, std=self.preset.std, shifted=bool(self.pad),
                              batch_size=self.max_batch, threads=self.threads, prefetch=self.spec.prefetch,
                              device_id=self.device_id, channels_last=self.spec.channels_last)

    def _dali_images(self, images, count: int) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = images.as_tensor()
        shape = tuple(dense.shape())
        out = torch.empty(shape, dtype=torch.float32, device=self.device) if self.gpu else host_tensor(shape)
        stream = torch.cuda.current_stream(self.device) if self.gpu else None
        feed_ndarray(dense, out, cuda_stream=stream)
        if self.spec.channels_last:  # DALI wrote NHWC: the same memory seen as NCHW in channels_last order
            out = out.permute(0, 3, 1, 2)
        return out[:count]

    def _assemble(self, step: PreparedStep, images, returned) -> Batch:
        """Join DALI's images with the reference path's, in plan order, leaving out undecodable samples."""
        dali_indices = step.indices[step.to_dali]
        got = np.asarray(returned.as_tensor()).reshape(-1)
        expected = dali_indices if len(dali_indices) else np.array([PLACEHOLDER_INDEX])
        if not np.array_equal(got, expected):
            raise RuntimeError(f"DALI returned samples {got[:5]}... for a step that fed {expected[:5]}...")
        parts = [self._dali_images(images, len(dali_indices))] if len(dali_indices) else []
        positions = list(np.flatnonzero(step.to_dali))
        self._add_references(step.indices, np.flatnonzero(~step.to_dali), parts, positions)
        return self._batch(step.indices, np.asarray(positions, dtype=np.int64), parts)

    def _reference(self, index: int) -> Optional[torch.Tensor]:
        tensor, error = self.reference_image(index, self._epoch)
        if error is not None:
            self.skipped.append(SkippedSample(index, self.spec.manifest.source(index), error))
        return tensor

    def _add_references(self, indices: np.ndarray, todo: Iterable[int], parts: list[torch.Tensor],
                        positions: list) -> None:
        """PIL-decode ``indices[todo]``: each decoded image goes to ``parts``, its position to ``positions``."""
        for position in todo:
            tensor = self._reference(int(indices[position]))
            if tensor is not None:
                parts.append(tensor.to(self.device).unsqueeze(0))
                positions.append(position)

    def _reference_batch(self, step: PreparedStep) -> Batch:
        parts: list[torch.Tensor] = []
        positions: list = []
        self._add_references(step.indices, range(len(step.indices)), parts, positions)
        return self._batch(step.indices, np.asarray(positions, dtype=np.int64), parts)

    def _batch(self, indices: np.ndarray, positions: np.ndarray, parts: list[torch.Tensor]) -> Batch:
        crop = self.spec.crop_size
        if len(parts) == 1:
            images = parts[0]  # the usual case: DALI decoded the whole step (no second copy)
        else:
            images = torch.cat(parts) if parts else torch.empty(0, 3, crop, crop, device=self.device)
        if len(parts) > 1 and not np.all(positions[:-1] < positions[1:]):
            order = np.argsort(positions, kind="stable")
            images, positions = images[torch.from_numpy(order).to(images.device)], positions[order]
        kept = torch.from_numpy(indices[positions].astype(np.int64))
        return Batch(images, self.observed[kept], self.true[kept], kept)

    def __iter__(self) -> Iterator[Batch]:
        shared = self._shared
        feeder = StepFeeder(self, self._steps, self._epoch, self._pool)
        shared.take(feeder)
        finished = False
        try:
            while True:
                if shared.feeder is not feeder:
                    raise RuntimeError("another DALI loader of this run took the pipeline over mid-epoch")
                if shared.pipe is None:
                    if feeder.done:
                        break
                    shared.pipe = self._build()
                try:
                    images, returned = shared.pipe.run()
                except StopIteration:  # the feeder ran out of steps and DALI drained its queue
                    shared.pipe.reset()
                    break
                except RuntimeError as exc:  # a file DALI cannot decode: redo this step with PIL
                    if not feeder.pending:
                        raise
                    step = feeder.pending.popleft()
                    self._warn(exc)
                    shared.pipe = None  # DALI marks a pipeline that raised as no longer valid
                    feeder.restart_after(step)
                    yield self._reference_batch(step)
                    continue
                yield self._assemble(feeder.pending.popleft(), images, returned)
            finished = True
        finally:
            shared.release(feeder, finished)  # abandoned mid-epoch: batches are still queued inside DALI

    def _warn(self, exc: RuntimeError) -> None:
        if not self._warned:
            lines = [line.strip(" :") for line in str(exc).splitlines() if line.strip()] or ["no message"]
            detail = next((line for line in lines if line.lower().startswith("failed to decode")), lines[0])
            log.warning("DALI could not decode a batch (%s); decoding its samples with PIL instead", detail)
            self._warned = True


@LOADERS.register("dali", help="NVIDIA DALI: nvJPEG decode on GPU, libjpeg-turbo threads on CPU "
                               "(pip install -e '.[dali]')")
def build_dali_loader(spec: LoaderSpec) -> DaliLoader:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise CgTrainError("--loader dali needs NVIDIA DALI: pip install -e '.[dali]' (nvidia-dali-cuda130, "
                           "matching torch's CUDA 13), "
                           "or use --loader torchvision") from None
    return DaliLoader(spec)
