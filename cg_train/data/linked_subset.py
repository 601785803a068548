"""Seed 004's easy/hard datasets (``cg-train subset SRC DST learned_examples.csv [--hard] [--split-test N]``).

DST gets SRC's layout (``train/<class>/...``, ``val/<class>/...``) made of hardlinks to SRC's files, so
an easy ImageNet costs directory entries, not 70 GB. The CSV lists training examples by ``index``: their
position in SRC's training Manifest as the imagefolder reader lists it (sorted), the index every
cg-train output uses; a ``path`` column (absolute or relative), when present, must end with that index's
``<class>/<file>``, so a CSV of another dataset or ordering is refused rather than silently mislabelled.

- ``train/``: the listed examples (``--hard``: every training example *not* listed).
- ``val/``: with ``--split-test N``, N of the selected examples (chosen with ``--seed``) moved out of
  ``train/`` into a held-out "easy" test set (seed 004: 500K train + 100K test). Without it, SRC's own
  ``val/`` is linked, so a plain run on DST tests on the original test set.
- Val images of a class that ends up with no training example are left out (a reader would refuse
  them); a warning says so, because the class ids of DST then differ from SRC's.

DST is built in the sibling ``.DST.partial`` and renamed into place at the end: an interrupted run is
resumed by re-running the same command (existing links are kept), and the same command on a finished
DST does nothing. Anything else at DST is never overwritten, and SRC is only read.
``DST/subset_manifest.csv`` lists every link; ``DST/subset.json`` records the request and counts.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..errors import CgTrainError, DataError
from ..io import atomic_path, atomic_write_text
from ..progress import progress_bar
from .manifest import Manifest
from .readers.imagefolder import read_imagefolder

MANIFEST_NAME = "subset_manifest.csv"
RECORD_NAME = "subset.json"
MANIFEST_COLUMNS = ("split", "path", "source_split", "source_index", "source")


@dataclass(frozen=True)
class SubsetRequest:
    """What identifies a subset: the same request on a finished DST is a no-op, another one is refused."""

    source: str
    examples_csv_sha256: str
    hard: bool
    split_test: int
    seed: int


@dataclass(frozen=True)
class Link:
    split: str  # split in DST
    path: str  # relative to DST
    source_split: str
    source_index: int  # position in SRC's Manifest of source_split
    source: str  # absolute path of the original file


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- what to link

def read_selection(csv_path: Path, train: Manifest, train_dir: Path) -> np.ndarray:
    """The sorted training indices listed in ``csv_path``, validated against SRC's listing."""
    try:
        table = pd.read_csv(csv_path, dtype={"path": str})
    except Exception as exc:  # empty file, bad quoting, binary junk
        raise DataError(f"{csv_path} is not a readable CSV ({str(exc).splitlines()[0]}): expected columns "
                        f"index[,path,label]") from None
    if "index" not in table.columns:
        raise DataError(f"{csv_path} has no 'index' column (columns: {', '.join(map(str, table.columns))}): "
                        f"expected learned_examples.csv from --store-learned (index[,path,label])")
    index = pd.to_numeric(table["index"], errors="coerce")
    bad = index.isna() | (index != index.round()) | (index < 0) | (index >= len(train))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{csv_path} row {row + 2}: index {table['index'].iloc[row]!r} is not a training "
                        f"index of {train_dir.parent} (0..{len(train) - 1}): the CSV belongs to another dataset")
    index = index.astype(np.int64).to_numpy()
    duplicated = pd.Series(index).duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise DataError(f"{csv_path} row {row + 2}: index {index[row]} is listed twice: pass one "
                        f"learned_examples.csv, not a concatenation")
    if "path" in table.columns:
        _check_paths(csv_path, table["path"].to_numpy(), index, train, train_dir)
    return np.sort(index)


def _check_paths(csv_path: Path, paths: np.ndarray, index: np.ndarray, train: Manifest, train_dir: Path) -> None:
    """Each CSV path (absolute, or relative to any root) must end with ``<class>/<file>`` of that index in SRC."""
    prefix = len(str(train_dir)) + 1  # the reader lists train_dir/<class>/...
    for row, (listed, i) in enumerate(zip(paths, index)):
        expected = str(train.files[i])[prefix:]
        if isinstance(listed, str) and listed != expected and not listed.endswith("/" + expected):
            raise DataError(f"{csv_path} row {row + 2}: index {i} is train/{expected} in {train_dir.parent} "
                            f"but the CSV says {listed}: it was written for another dataset or file order; "
                            f"pass the dataset the run trained on")


def plan_links(train: Manifest, train_dir: Path, selected: np.ndarray, val: Optional[Manifest],
               val_dir: Optional[Path], split_test: int, seed: int) -> tuple[list[Link], list[str]]:
    """Links for DST (train rows, then val rows) and the classes left without a training example."""
    if split_test >= len(selected):
        raise DataError(f"--split-test {split_test} needs more than {split_test} selected examples, but only "
                        f"{len(selected)} are selected: use a smaller --split-test")
    held_out = np.zeros(len(selected), dtype=bool)
    if split_test:
        held_out[np.random.default_rng(seed).choice(len(selected), split_test, replace=False)] = True

    def link(split: str, manifest: Manifest, root: Path, source_split: str, i: int) -> Link:
        relative = Path(manifest.files[i]).relative_to(root)
        return Link(split, (Path(split) / relative).as_posix(), source_split, int(i), str(manifest.files[i]))

    links = [link("train", train, train_dir, "train", i) for i in selected[~held_out]]
    if split_test:
        links += [link("val", train, train_dir, "train", i) for i in selected[held_out]]
    elif val is not None and val_dir is not None:
        links += [link("val", val, val_dir, "val", i) for i in range(len(val))]
    trained = {PurePath(x.path).parts[1] for x in links if x.split == "train"}
    missing = sorted(set(train.classes) - trained)
    links = [x for x in links if x.split == "train" or PurePath(x.path).parts[1] in trained]
    return links, missing


# --------------------------------------------------------------------------- linking

def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _link_error(exc: OSError, src: Path, dst: Path) -> CgTrainError:
    if exc.errno == errno.EXDEV:
        return CgTrainError(f"cannot hardlink {src} into {dst}: they are on different filesystems; choose a "
                            f"destination on the filesystem that holds {src}")
    if exc.errno in (errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EROFS):
        return CgTrainError(f"cannot hardlink {src} into {dst}: {exc.strerror} (hardlinks need write access to "
                            f"the destination and, with fs.protected_hardlinks, ownership of or read-write "
                            f"access to the source files); ask the data's owner or choose another destination")
    return CgTrainError(f"cannot build {dst}: {exc.strerror} ({exc.filename}); fix that and run the same command "
                        f"again: it continues where it stopped")


def _place(link: Link, building: Path) -> bool:
    """Hardlink one file; False if the same link is already there (a resumed run)."""
    target = building / link.path
    try:
        os.link(link.source, target)
        return True
    except FileExistsError:
        if os.path.samefile(link.source, target):
            return False
        raise CgTrainError(f"{target} exists and is not a link to {link.source}: remove the unfinished "
                           f"{building} and run again") from None


def link_all(links: list[Link], building: Path, src: Path, progress: bool) -> int:
    """Create every link under ``building``; return how many were new."""
    made_dirs: set[Path] = set()
    new = 0
    bar = progress_bar(len(links), "linking", progress, unit="file")
    try:
        for link in links:
            target = building / link.path
            if target.parent not in made_dirs:
                target.parent.mkdir(parents=True, exist_ok=True)
                made_dirs.add(target.parent)
            new += _place(link, building)
            bar.update()
    except OSError as exc:
        raise _link_error(exc, src, building) from None
    finally:
        bar.close()
    return new


def _read_record(folder: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads((folder / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None


def _write_manifest(path: Path, links: list[Link]) -> None:
    table = pd.DataFrame([asdict(x) for x in links], columns=list(MANIFEST_COLUMNS))
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _start_building(src: Path, dst: Path, request: SubsetRequest, probe_source: str) -> Path:
    """The sibling ``.DST.partial`` to link into: resumed if it holds this request, else new (after probing
    that one link can be made, so that a refusal leaves nothing behind)."""
    if os.stat(_existing_ancestor(dst.parent)).st_dev != os.stat(src / "train").st_dev:
        raise CgTrainError(f"{src} and {dst} are on different filesystems, and hardlinks cannot cross them: "
                           f"choose a destination on the filesystem that holds {src}")
    building = dst.parent / f".{dst.name}.partial"
    if building.exists():
        record = _read_record(building)
        if record is None and not any(building.iterdir()):
            building.rmdir()  # interrupted right after its creation
        elif (record or {}).get("request") != asdict(request):
            raise CgTrainError(f"{building} holds an unfinished subset of another request: remove it, or re-run "
                               f"the command that started it")
        else:
            return building
    dst.parent.mkdir(parents=True, exist_ok=True)
    building.mkdir()
    try:
        os.link(probe_source, building / ".link-probe")
        (building / ".link-probe").unlink()
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise _link_error(exc, src, dst) from None
    atomic_write_text(building / RECORD_NAME, json.dumps({"request": asdict(request)}, indent=2) + "\n")
    return building


def make_subset(src: str | os.PathLike, dst: str | os.PathLike, examples_csv: str | os.PathLike,
                hard: bool = False, split_test: int = 0, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Build DST (see the module docstring) and return its record (request, counts, missing classes)."""
    src, dst, examples_csv = Path(src).resolve(), Path(dst).absolute(), Path(examples_csv)
    if not examples_csv.is_file():
        raise DataError(f"examples CSV {examples_csv} does not exist: pass the learned_examples.csv that "
                        f"--store-learned wrote")
    if split_test < 0:
        raise CgTrainError(f"--split-test {split_test} must be >= 0")
    if dst == src or src in dst.parents:
        raise CgTrainError(f"destination {dst} lies inside the source {src}: choose a path outside it")
    train = read_imagefolder(str(src), "train")
    request = SubsetRequest(str(src), _sha256(examples_csv), hard, split_test, seed)
    if dst.exists():
        record = _read_record(dst)
        if record is not None and record.get("request") == asdict(request):
            return {**record, "already_done": True}
        raise CgTrainError(f"{dst} already exists: cg-train subset never overwrites; choose a new destination "
                           f"or remove it")
    train_dir = src / "train"
    listed = read_selection(examples_csv, train, train_dir)
    selected = np.setdiff1d(np.arange(len(train)), listed) if hard else listed
    if len(selected) == 0:
        raise DataError(f"{examples_csv} selects no training example{' (--hard: it lists all of them)' if hard else ''}: "
                        f"nothing to link")
    val = val_dir = None
    if not split_test:
        if not (src / "val").is_dir():
            raise DataError(f"{src} has no val/ to link: add --split-test N to hold N selected examples out "
                            f"as the test split")
        val, val_dir = read_imagefolder(str(src), "val", classes=train.classes), src / "val"
    links, missing = plan_links(train, train_dir, selected, val, val_dir, split_test, seed)

    building = _start_building(src, dst, request, links[0].source)
    new = link_all(links, building, src, progress)
    counts = {split: sum(x.split == split for x in links) for split in ("train", "val")}
    record = {"request": asdict(request), "counts": counts, "classes_without_examples": missing,
              "val_source": "split-test" if split_test else "original val",
              "examples_csv": str(examples_csv.resolve())}
    _write_manifest(building / MANIFEST_NAME, links)
    atomic_write_text(building / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    if dst.exists():
        raise CgTrainError(f"{dst} appeared while the subset was being built: the finished subset is in "
                           f"{building}; move it where you want it")
    os.rename(building, dst)
    return {**record, "new_links": new, "already_done": False}
