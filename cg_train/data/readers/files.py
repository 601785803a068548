"""Helpers the dataset readers share: finding the files a layout promises, parsing list files, class ids.

Every failure is a one-line :class:`DataError` naming the file that was expected
where, and the layout the dataset should have. Parsing is one pass over each list
file (O(lines)), and list-based readers never stat the images they list: a missing
image shows up as a skipped sample when it is loaded, not as minutes of ``stat``
calls on a network file system before training starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ...errors import DataError


def dataset_root(root: str, name: str, layout: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"data directory {path} does not exist: pass the {name} root ({layout})")
    return path


def first_existing(candidates: Sequence[Path], name: str, layout: str, kind: str = "file") -> Path:
    """The first candidate that exists, else an error naming where it was expected."""
    for path in candidates:
        if path.is_dir() if kind == "folder" else path.is_file():
            return path
    where = " or ".join(str(p) + ("/" if kind == "folder" else "") for p in candidates)
    raise DataError(f"expected {where}: the {name} layout is {layout}")


def check_split(name: str, split: str, splits: Iterable[str]) -> None:
    if split not in splits:
        raise DataError(f"{name} has the splits {', '.join(splits)}, not {split!r}: choose one with --test-split")


def read_lines(path: Path) -> list[str]:
    """Non-empty lines, stripped (list files come with CRLF or trailing blanks)."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def read_columns(path: Path, columns: int, sep: Optional[str] = None) -> list[list[str]]:
    """Rows of a whitespace- (or ``sep``-) separated list file with at least ``columns`` fields."""
    rows = []
    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split(sep)
        if len(fields) < columns:
            raise DataError(f"{path}:{number}: expected {columns} fields, got {line!r}: is this the original file?")
        rows.append(fields)
    return rows


def parse_int(text: str, path: Path) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}: {text!r} is not an integer label: is this the original file?") from None


def class_index(found: Sequence[str], classes: Optional[Sequence[str]], only_known: bool,
                what: str) -> tuple[list[str], dict[str, int]]:
    """Class names (``classes``, else the sorted ``found`` names) and ``{name: class id}``.

    A found name outside ``classes`` is an error (``what``, e.g. "DIR has class folders", begins the
    message) unless ``only_known``, in which case the caller drops it.
    """
    names = list(classes) if classes is not None else sorted(set(found))
    class_ids = {name: i for i, name in enumerate(names)}
    unknown = sorted({name for name in found if name not in class_ids})
    if unknown and not only_known:
        raise DataError(f"{what} the training set lacks ({', '.join(unknown[:5])}): "
                        f"train and test must use the same class names")
    return names, class_ids


def relabel(labels: np.ndarray, names: Sequence[str], classes: Optional[Sequence[str]],
            where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels given as positions in ``names`` -> positions in ``classes`` (another split's class list)."""
    if classes is None:
        return np.asarray(labels, dtype=np.int64), tuple(names)
    lookup = {name: i for i, name in enumerate(classes)}
    used = [names[i] for i in np.unique(labels)]
    unknown = [name for name in used if name not in lookup]
    if unknown:
        raise DataError(f"{where} has classes the training set lacks ({', '.join(unknown[:5])}): train and "
                        f"test must use the same class names")
    table = np.array([lookup.get(name, -1) for name in names], dtype=np.int64)
    return table[np.asarray(labels, dtype=np.int64)], tuple(classes)
