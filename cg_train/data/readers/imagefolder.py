"""ImageNet layout: ``root/train/<class>/**/*.JPEG`` and ``root/val/<class>/**/*``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from ...errors import DataError
from ..manifest import Manifest
from . import DATASETS
from .files import class_index
from .listing import IMAGE_EXTENSIONS, class_listings

def split_dir(root: str | os.PathLike, split: str, layout: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist: pass the dataset root ({layout})")
    path = root / split
    if not path.is_dir():
        raise DataError(f"expected {path}/ in {root}: the dataset must be laid out as {layout}")
    return path


def read_class_folders(folder: Path, split: str, classes: Optional[Sequence[str]] = None,
                       root: Optional[str] = None, only_known: bool = False) -> Manifest:
    """Read ``folder/<class>/**/<image>``; class ids follow ``classes`` or the sorted folder names.

    ``only_known``: read only the folders named in ``classes`` (e.g. 50 WebVision classes of ImageNet's val).
    """
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise DataError(f"{folder} has no class folders: expected {folder}/<class>/<image files>")
    names, class_ids = class_index(found, classes, only_known, f"{folder} has class folders")
    if only_known:
        found = [name for name in found if name in class_ids]
    files: list[str] = []
    labels: list[int] = []
    listings = class_listings(folder, found)
    for name in found:
        images = listings[name]
        if not images:
            raise DataError(f"class folder {folder / name} has no images ({'/'.join(IMAGE_EXTENSIONS)}): "
                            f"add images or remove the folder")
        files.extend(images)
        labels.extend([class_ids[name]] * len(images))
    return Manifest.from_labels(split, names, labels, files=files, root=str(root or folder.parent))


IMAGEFOLDER_LAYOUT = "ROOT/train/<class>/<images> and ROOT/val/<class>/<images> (ImageNet layout)"


@DATASETS.register("imagefolder", help=IMAGEFOLDER_LAYOUT)
def read_imagefolder(root: str, split: str, classes: Optional[Sequence[str]] = None) -> Manifest:
    """Any dataset sorted into class folders (ImageNet's layout); class ids follow the sorted folder names.

    ROOT/train/<class>/**/<image>      (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp)
    ROOT/val/<class>/**/<image>
    splits: the folder names under ROOT (train, val, ...)
    """
    return read_class_folders(split_dir(root, split, IMAGEFOLDER_LAYOUT), split, classes, root=str(root))
