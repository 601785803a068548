"""The DALI graph of the ``dali`` loader, as small functions in the style of DALI's examples.

One graph serves both phases: what differs between training and evaluation (the
crop window, the flip) is computed on the host per sample and fed in with the
images, so the graph only decodes, resizes the window to ``crop x crop`` and
normalises like torchvision (ImageNet mean/std, NCHW float). The sample index is
fed in and returned untouched, so every output image carries its Manifest index.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

from ..transforms import IMAGENET_MEAN, IMAGENET_STD

#: Outputs of the host-side source, in this order (see DaliLoader.prepare); in-memory arrays need no slice.
ENCODED_OUTPUTS = ("data", "slice_start", "slice_shape", "roi_start", "roi_end", "mirror", "index")
ARRAY_OUTPUTS = ("data", "roi_start", "roi_end", "mirror", "index")
#: nvJPEG's hardware decoder (A100/H100): share of the images it takes, and buffers sized up front for
#: ImageNet's largest image so that it never reallocates (values from DALI's ResNet-50 example).
HW_DECODER_LOAD = 0.65
PREALLOCATE_WIDTH, PREALLOCATE_HEIGHT = 5980, 6430


def decode_window(encoded, slice_start, slice_shape, gpu: bool):
    """Decode only the rows/columns around the crop window (libjpeg-turbo / nvJPEG ROI decoding)."""
    if gpu:
        return fn.decoders.image_slice(encoded, slice_start, slice_shape, axis_names="HW", device="mixed",
                                       output_type=types.RGB, adjust_orientation=False,
                                       hw_decoder_load=HW_DECODER_LOAD,
                                       preallocate_width_hint=PREALLOCATE_WIDTH,
                                       preallocate_height_hint=PREALLOCATE_HEIGHT)
    return fn.decoders.image_slice(encoded, slice_start, slice_shape, axis_names="HW", device="cpu",
                                   output_type=types.RGB, adjust_orientation=False)


def resize_normalize(images, roi_start, roi_end, mirror, crop_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD, shift=None, channels_last: bool = False):
    """Resize the window to ``crop x crop`` (antialiased linear, as PIL's bilinear), shift, flip, normalise;
    CHW out, or HWC for a channels_last model (no transpose pass: the layout is the resize's own).

    ``shift`` (``--augment cifar``): per-sample (dy, dx); the crop moves by it, zero-filled outside the image.
    """
    images = fn.resize(images, size=[crop_size, crop_size], roi_start=roi_start, roi_end=roi_end,
                       interp_type=types.INTERP_LINEAR, antialias=True)
    if shift is not None:
        images = fn.slice(images, start=shift, shape=[crop_size, crop_size], axis_names="HW",
                          out_of_bounds_policy="pad", fill_values=0)
    return fn.crop_mirror_normalize(images, mirror=mirror, dtype=types.FLOAT,
                                    output_layout="HWC" if channels_last else "CHW",
                                    mean=[255.0 * m for m in mean], std=[255.0 * s for s in std])


def build_pipeline(source: Callable[[], tuple], *, encoded: bool, crop_size: int, batch_size: int,
                   threads: int, prefetch: int, device_id: Optional[int], mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD, shifted: bool = False,
                   channels_last: bool = False) -> Pipeline:
    """A built pipeline returning ``(images, indices)``; ``device_id=None`` is DALI's CPU-only mode.

    ``encoded``: the source yields encoded files (decoded here); otherwise HWC uint8 arrays.
    ``shifted``: the source yields a last ``shift`` output (see :func:`resize_normalize`).
    """
    gpu = device_id is not None

    @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=device_id,
                  prefetch_queue_depth=prefetch, seed=0)
    def image_pipeline():
        outputs = (*(ENCODED_OUTPUTS if encoded else ARRAY_OUTPUTS), *(("shift",) if shifted else ()))
        fed = dict(zip(outputs, fn.external_source(source=source, batch=True, num_outputs=len(outputs))))
        if encoded:
            images = decode_window(fed["data"], fed["slice_start"], fed["slice_shape"], gpu)
        else:
            images = fed["data"].gpu() if gpu else fed["data"]
        return resize_normalize(images, fed["roi_start"], fed["roi_end"], fed["mirror"], crop_size, mean, std,
                                fed.get("shift"), channels_last), fed["index"]

    pipe = image_pipeline()
    pipe.build()
    return pipe
