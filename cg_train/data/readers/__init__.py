"""Dataset readers: each turns a dataset's official on-disk layout into Manifests.

A reader is ``read(root, split, classes=None) -> Manifest`` registered in
``DATASETS``; ``classes`` maps another split's class names onto this one (so a
val split, or another dataset's val via ``--test-imagenet-dir``, uses the
training set's label ids). Readers never know about label noise.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence

from ...registry import Registry
from ..manifest import Manifest


class Reader(Protocol):
    def __call__(self, root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest: ...


DATASETS: Registry[Reader] = Registry("dataset", "--dataset (data.dataset)")
Layout = Callable[[], str]

from . import caltech, cifar, clothing, cub, imagefolder, imagenet, stl10, tiny_imagenet, webvision  # noqa: E402,F401,I001  (register)
