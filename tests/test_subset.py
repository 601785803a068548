"""`cg-train subset` (seed 004's imagenet_generate_subset): hardlinked easy/hard datasets that train."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

import cg_train.data.linked_subset as linked_subset
from cg_train.cli import main
from cg_train.data.readers.imagefolder import read_imagefolder
from conftest import REPO, read_csv, train


def files_under(root: Path) -> dict[str, os.stat_result]:
    return {p.relative_to(root).as_posix(): p.stat() for p in sorted(root.rglob("*")) if p.is_file()}


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """What must never change in SRC: names, sizes, inodes, contents' mtimes."""
    return {name: (s.st_size, s.st_ino, s.st_mtime_ns) for name, s in files_under(root).items()}


@pytest.fixture
def learned_csv(mnist_small: Path, tmp_path: Path) -> Path:
    """A learned_examples.csv as --store-learned writes it: index, path, label (every index not divisible by 3)."""
    train_set = read_imagefolder(str(mnist_small), "train")
    index = [i for i in range(len(train_set)) if i % 3]
    path = tmp_path / "learned_examples.csv"
    pd.DataFrame({"index": index, "path": train_set.files[index],
                  "label": train_set.true_labels[index]}).to_csv(path, index=False)
    return path


def subset(*args: object) -> int:
    return main(["subset", *map(str, args), "--no-progress"])


def test_easy_and_hard_subsets_are_hardlinks_that_train(mnist_small: Path, learned_csv: Path, tmp_path: Path) -> None:
    before = snapshot(mnist_small)
    easy, hard = tmp_path / "easy", tmp_path / "hard"
    assert subset(mnist_small, easy, learned_csv) == 0
    assert subset(mnist_small, hard, learned_csv, "--hard") == 0

    source = files_under(mnist_small)
    easy_files, hard_files = files_under(easy), files_under(hard)
    easy_train = {n for n in easy_files if n.startswith("train/")}
    hard_train = {n for n in hard_files if n.startswith("train/")}
    assert len(easy_train) == 200 and len(hard_train) == 100
    assert easy_train | hard_train == {n for n in source if n.startswith("train/")} and not easy_train & hard_train
    for name in easy_train | {n for n in easy_files if n.startswith("val/")}:
        link, original = easy_files[name], source[name]
        assert (link.st_ino, link.st_dev) == (original.st_ino, original.st_dev), name  # the same file
    assert {n for n in easy_files if n.startswith("val/")} == {n for n in source if n.startswith("val/")}
    assert source["train/0/" + sorted(os.listdir(mnist_small / "train" / "0"))[1]].st_nlink >= 3

    manifest = read_csv(easy / "subset_manifest.csv")
    assert list(manifest.columns) == ["split", "path", "source_split", "source_index", "source"]
    assert (manifest.split.value_counts().to_dict()) == {"train": 200, "val": 100}
    listed = pd.read_csv(learned_csv)
    assert manifest[manifest.split == "train"].source_index.tolist() == listed["index"].tolist()
    assert all(os.path.samefile(easy / row.path, row.source) for row in manifest.itertuples())
    assert snapshot(mnist_small) == before  # SRC untouched

    out = tmp_path / "run"
    assert train(easy, out, "--epochs", "1", "--sample-size", "50") == 0
    record = pd.read_parquet(out / "corruption.parquet")
    assert len(record) == 200 and record.path.str.startswith(str(easy)).all()
    assert read_csv(out / "test.csv")["count"].tolist() == [100, 100]


def test_split_test_holds_out_easy_examples(mnist_small: Path, learned_csv: Path, tmp_path: Path) -> None:
    easy = tmp_path / "easy"
    assert subset(mnist_small, easy, learned_csv, "--split-test", 40, "--seed", 5) == 0
    manifest = read_csv(easy / "subset_manifest.csv")
    held_out = manifest[manifest.split == "val"]
    assert len(held_out) == 40 and (held_out.source_split == "train").all()
    assert set(manifest.source_index) == set(pd.read_csv(learned_csv)["index"])  # 160 train + 40 val, disjoint
    assert len(files_under(easy / "train")) == 160 and len(files_under(easy / "val")) == 40

    # seed 004 step 4: train on the easy subset, test on the original val
    out = tmp_path / "run"
    assert train(easy, out, "--epochs", "1", "--sample-size", "20", "--test-imagenet-dir", str(mnist_small)) == 0
    assert read_csv(out / "test.csv")["count"].tolist() == [100, 100]


def test_never_overwrites_and_reruns_are_idempotent(mnist_small: Path, learned_csv: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "precious.txt").write_text("keep me")
    assert subset(mnist_small, taken, learned_csv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "never overwrites" in err[0]
    assert os.listdir(taken) == ["precious.txt"] and (taken / "precious.txt").read_text() == "keep me"

    easy = tmp_path / "easy"
    assert subset(mnist_small, easy, learned_csv) == 0
    first = snapshot(easy)  # not atime: a read after the links changed ctime updates it (relatime)
    assert subset(mnist_small, easy, learned_csv) == 0  # the same request again: nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(easy) == first
    assert subset(mnist_small, easy, learned_csv, "--hard") == 2  # another request: refused
    assert snapshot(easy) == first


def test_interrupted_run_resumes(mnist_small: Path, learned_csv: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real_link, calls = os.link, []

    def link_then_interrupt(src: str, dst: str) -> None:  # Ctrl-C after 57 links
        if len(calls) == 57:
            raise KeyboardInterrupt
        calls.append(dst)
        real_link(src, dst)

    easy = tmp_path / "easy"
    monkeypatch.setattr(linked_subset.os, "link", link_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        linked_subset.make_subset(mnist_small, easy, learned_csv, progress=False)
    monkeypatch.setattr(linked_subset.os, "link", real_link)
    partial = tmp_path / ".easy.partial"
    assert not easy.exists() and len(files_under(partial / "train")) == 56  # 57 links, one was the probe

    record = linked_subset.make_subset(mnist_small, easy, learned_csv, progress=False)
    assert record["new_links"] == 300 - 56 and not partial.exists()
    assert len(files_under(easy / "train")) == 200 and len(files_under(easy / "val")) == 100
    assert len(read_csv(easy / "subset_manifest.csv")) == 300


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.assign(path=t.path.iloc[::-1].to_numpy()), "written for another dataset or file order"),
    (lambda t: t.assign(index=t["index"] + 1000), "is not a training index"),
    (lambda t: pd.concat([t, t.head(1)]), "is listed twice"),
    (lambda t: t.rename(columns={"index": "idx"}), "has no 'index' column"),
])
def test_csv_of_another_dataset_is_refused(mnist_small: Path, learned_csv: Path, tmp_path: Path, edit, expected,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    edit(pd.read_csv(learned_csv)).to_csv(learned_csv, index=False)
    assert subset(mnist_small, tmp_path / "easy", learned_csv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "easy").exists() and not (tmp_path / ".easy.partial").exists()


@pytest.mark.parametrize("relative_to", ["", "train/"])  # paths relative to the dataset root, or to train/
def test_relative_paths_in_the_csv_are_accepted(mnist_small: Path, learned_csv: Path, tmp_path: Path,
                                                relative_to: str) -> None:
    table = pd.read_csv(learned_csv)
    table.assign(path=table.path.str.removeprefix(f"{mnist_small}/{relative_to}")).to_csv(learned_csv, index=False)
    assert pd.read_csv(learned_csv).path[0] == f"{'' if relative_to else 'train/'}0/" + Path(table.path[0]).name
    assert subset(mnist_small, tmp_path / "easy", learned_csv) == 0


def _other_filesystem(path: Path) -> Path:
    device = path.stat().st_dev
    for candidate in ("/dev/shm", "/run", "/var/tmp"):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK) and os.stat(candidate).st_dev != device:
            return Path(candidate)
    pytest.skip(f"no writable directory on a filesystem other than {path}'s")


def test_other_filesystem_is_refused(mnist_small: Path, learned_csv: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    dst = _other_filesystem(mnist_small) / f"cg-train-subset-test-{os.getpid()}" / "easy"
    assert subset(mnist_small, dst, learned_csv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different filesystems" in err[0]
    assert not dst.parent.exists()


def test_refused_links_are_one_line(mnist_small: Path, learned_csv: Path) -> None:
    """fs.protected_hardlinks: an unprivileged user may not link files it neither owns nor may write."""
    if os.geteuid() != 0 or Path("/proc/sys/fs/protected_hardlinks").read_text().strip() != "1":
        pytest.skip("needs root (to act as another user) and fs.protected_hardlinks=1")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    nobody = 65534
    shared = Path(tempfile.mkdtemp(prefix="cg-train-subset-"))  # readable by nobody, unlike pytest's tmp dirs
    try:
        os.chmod(shared, 0o755)
        src, dst_parent, csv = shared / "src", shared / "nobody", shared / "learned_examples.csv"
        shutil.copytree(mnist_small, src)  # owned by root, mode 644: readable, not writable, for nobody
        shutil.copy(learned_csv, csv)
        dst_parent.mkdir()
        os.chown(dst_parent, nobody, nobody)
        code = ("import sys; from cg_train.cli import main; "
                f"sys.exit(main(['subset', {str(src)!r}, {str(dst_parent / 'easy')!r}, {str(csv)!r}, '--no-progress']))")
        result = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                                 sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        if "cg-train: error" not in result.stderr and result.returncode != 0:
            pytest.skip(f"the unprivileged user cannot run this Python: {result.stderr.strip().splitlines()[-1:]}")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "cannot hardlink" in lines[0] and "protected_hardlinks" in lines[0]
        assert os.listdir(dst_parent) == []
    finally:
        shutil.rmtree(shared)
