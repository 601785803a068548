"""A disk that fills up mid-run: one line naming the file and the space it needed, nothing already written lost.

On a real small filesystem: a tmpfs when the test may mount one (root), else a per-process file-size limit
(RLIMIT_FSIZE, which makes writes fail with EFBIG the way a full disk fails them with ENOSPC).
"""
from __future__ import annotations

import resource
import shutil
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch

from cg_train.errors import CgTrainError
from cg_train.paths.layout import path_schema
from cg_train.paths.writer import PartWriter
from cg_train.sample_stats import per_sample_stats
from conftest import assert_same_csvs, train

PATHS = ["--paths", "--paths-eval", "--paths-topk", "3", "--corrupt-fraction", "0.5", "--sample-size", "20",
         "--seed", "8", "--batch-size", "10", "--epochs", "2", "--lr-scheduler", "step"]


@contextmanager
def small_filesystem(root: Path, size: int, file_limit: int) -> Iterator[Path]:
    """``root`` on a tmpfs of ``size`` bytes, or (no mount allowed) with files limited to ``file_limit`` bytes."""
    root.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)],
                      capture_output=True).returncode == 0:
        try:
            yield root
        finally:
            subprocess.run(["umount", "-l", str(root)], check=True)
        return
    limit, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, limit[1]))
    try:
        yield root
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.slow
def test_a_run_on_a_full_disk_stops_with_one_line_and_resumes_elsewhere(
        mnist_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = tmp_path / "reference"
    assert train(mnist_small, reference, *PATHS) == 0
    moved = tmp_path / "moved"
    with small_filesystem(tmp_path / "small", size=4 << 20, file_limit=1 << 20) as small:
        out = small / "run"
        capsys.readouterr()
        assert train(mnist_small, out, *PATHS) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("cg-train: error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert f"cg-train: error: no space left for {out}/" in lines[0] and " bytes are free;" in lines[0], err
        assert "bytes; free some space" not in lines[0] and "continue the run with --resume" in lines[0], err
        assert not list(out.rglob(".*.tmp"))  # no half-written temporary left behind
        shutil.copytree(out, moved)  # what the user does: move the run to a bigger disk
    assert train(mnist_small, moved, *PATHS, "--resume") == 0
    assert_same_csvs(reference, moved)


def test_the_path_writer_thread_surfaces_a_full_disk_to_the_training_thread(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", size=1 << 20, file_limit=4096) as small:
        filler = small / "filler"
        try:
            with open(filler, "wb") as f:  # fill the tmpfs (under a file-size limit this stops at the limit)
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
        writer = PartWriter(small / "paths", 0, path_schema(10, 3), rows_per_part=10_000)
        logits = torch.randn(4096, 10)
        labels = torch.randint(0, 10, (4096,))
        writer.put(0, 0, per_sample_stats(logits, labels, labels, torch.arange(4096), 3))
        with pytest.raises(CgTrainError) as failed:
            writer.close()
    message = str(failed.value)
    assert message.startswith(f"writing path logs to {small / 'paths'} failed: no space left for "
                              f"{small / 'paths' / 'epoch=0' / 'rank=0' / 'part-000000.parquet'}"), message
    assert "\n" not in message
