"""The data layer: readers -> Manifest -> loaders -> Batch(images, observed, true, indices)."""
from .loaders import LOADERS, Loader, LoaderSpec, SkippedSample
from .manifest import UNKNOWN_LABEL, Batch, Manifest
from .readers import DATASETS

__all__ = ["Batch", "DATASETS", "LOADERS", "Loader", "LoaderSpec", "Manifest", "SkippedSample",
           "UNKNOWN_LABEL"]
