"""Crash-safe file writing: atomic replace for whole files, line-safe appends for logs.

Every output file of a run goes through here, so a crash (or a full disk)
never leaves a truncated checkpoint, a half-written config or a half CSV line.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from .errors import CgTrainError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Mode of files written atomically: what ``open()`` would give (mkstemp alone gives 0600).
FILE_MODE = 0o666 & ~_current_umask()


#: How a full disk (or quota, or file-size limit) shows when the write is not a plain ``os.write``: pyarrow's
#: OSError without an errno, torch.save's RuntimeError from its C++ stream.
OUT_OF_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "File too large", "unexpected pos",
                     "file write failed", "iostream error")


def is_out_of_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    return isinstance(exc, (OSError, RuntimeError)) and any(text in str(exc) for text in OUT_OF_SPACE_TEXT)


def _disk_error(path: Path, exc: BaseException, needed: Optional[int] = None) -> CgTrainError:
    """One line for a failed write; out of space names the file, the bytes it needed and what is free."""
    if is_out_of_space(exc):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        size = f"{needed:,} bytes" if needed is not None else "more space"
        return CgTrainError(f"no space left for {path}: it needed {size}" +
                            (f", {free:,} bytes are free" if free is not None else "") +
                            "; free some space (or move the output) and continue the run with --resume "
                            "(the files already written are intact)")
    return CgTrainError(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}")


@contextmanager
def atomic_path(path: str | os.PathLike, size: Optional[int] = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    A failed write (a full disk included) removes the temporary file and raises one
    :class:`CgTrainError` line; ``size``, when the caller knows it, is named in it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _disk_error(path, exc, size) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, RuntimeError) and not is_out_of_space(exc):
            raise
        raise _disk_error(path, exc, size) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def append_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Append ``data`` with one ``write`` on an O_APPEND descriptor, then fsync.

    A reader never sees a partial record from a concurrent writer, and a crash
    can at worst leave an unterminated last line, which :func:`repair_lines` drops.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _disk_error(path, exc, len(data)) from None


def complete_lines(data: bytes) -> bytes:
    """``data`` without an unterminated trailing line (what a crash mid-append leaves)."""
    return data[: data.rfind(b"\n") + 1]


def repair_lines(path: Path) -> None:
    """Drop an unterminated trailing line left by a crash mid-append (atomically)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write_bytes(path, complete_lines(data))


class CsvLog:
    """An append-only CSV with a fixed header; rows are appended whole or not at all.

    ``rows()`` counts data rows; ``truncate(n)`` keeps the first ``n`` (used on
    resume so that rows written after the checkpoint are not duplicated).
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = list(columns)

    def _encode(self, rows: Sequence[Sequence[Any]]) -> bytes:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows(rows)
        return buf.getvalue().encode("utf-8")

    def ensure_header(self) -> None:
        repair_lines(self.path)
        if not self.path.exists() or self.path.stat().st_size == 0:
            atomic_write_bytes(self.path, self._encode([self.columns]))
            return
        with open(self.path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != self.columns:
            raise CgTrainError(f"{self.path} has columns {header}, expected {self.columns}: "
                               f"it belongs to another tool or version; use a new --output-dir")

    def append(self, *rows: Sequence[Any]) -> None:
        if len(rows):
            append_bytes(self.path, self._encode(rows))

    def rows(self) -> int:
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as f:
            return max(sum(1 for line in f if line.endswith(b"\n")) - 1, 0)

    def truncate(self, n_rows: int) -> None:
        """Keep the header and the first ``n_rows`` complete data rows."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            lines = [line for line in f if line.endswith(b"\n")]
        keep = lines[: 1 + n_rows]
        if len(keep) != len(lines) or self.path.stat().st_size != sum(map(len, lines)):
            atomic_write_bytes(self.path, b"".join(keep))
