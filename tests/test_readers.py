"""Each dataset reader on a small tree built in exactly the dataset's official layout."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from cg_train.cli import main
from cg_train.config import build_config
from cg_train.data.bundle import read_manifests
from cg_train.data.manifest import UNKNOWN_LABEL
from cg_train.data.readers import DATASETS
from cg_train.data.readers.caltech import val_positions
from cg_train.data.readers.clothing import subset_positions
from cg_train.errors import DataError
from cg_train.noise import is_corrupt
from image_files import write_cifar, write_jpeg

WNIDS = ["n01440764", "n01443537", "n01484850"]


def names(manifest) -> list[str]:
    return [Path(f).name for f in manifest.files]


# --------------------------------------------------------------------------- ImageNet

def imagenet_train(root: Path) -> None:
    for c, wnid in enumerate(WNIDS):
        for k in range(2):
            write_jpeg(root / "train" / wnid / f"{wnid}_{k}.JPEG", seed=10 * c + k)


VAL_WNIDS = ["n01484850", "n01440764", "n01443537", "n01440764"]  # the true class of val images 1..4


def flat_val(root: Path) -> None:
    for number in range(1, 5):
        write_jpeg(root / "val" / f"ILSVRC2012_val_{number:08d}.JPEG", seed=number)


def test_imagenet_val_in_class_folders(tmp_path: Path) -> None:
    imagenet_train(tmp_path)
    for number, wnid in enumerate(VAL_WNIDS, start=1):
        write_jpeg(tmp_path / "val" / wnid / f"ILSVRC2012_val_{number:08d}.JPEG")
    train = DATASETS.get("imagenet")(str(tmp_path), "train")
    assert train.classes == tuple(WNIDS) and train.true_labels.tolist() == [0, 0, 1, 1, 2, 2]
    val = DATASETS.get("imagenet")(str(tmp_path), "val", classes=train.classes)
    assert {n: int(l) for n, l in zip(names(val), val.true_labels)} == {
        f"ILSVRC2012_val_{i:08d}.JPEG": WNIDS.index(w) for i, w in enumerate(VAL_WNIDS, start=1)}


def test_imagenet_flat_val_with_kaggle_labels_found_above_cls_loc(tmp_path: Path) -> None:
    # Kaggle: LOC_val_solution.csv beside ILSVRC/, images under ILSVRC/Data/CLS-LOC/{train,val}
    root = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    imagenet_train(root)
    flat_val(root)
    rows = [f"ILSVRC2012_val_{i:08d},{w} 10 20 200 300 {w} 5 5 50 50" for i, w in enumerate(VAL_WNIDS, start=1)]
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(reversed(rows)) + "\n")
    train = DATASETS.get("imagenet")(str(root), "train")
    val = DATASETS.get("imagenet")(str(root), "val", classes=train.classes)
    assert names(val) == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 5)]
    assert val.true_labels.tolist() == [WNIDS.index(w) for w in VAL_WNIDS]


def write_devkit(folder: Path, ilsvrc_ids: dict[str, int], ground_truth: list[int]) -> None:
    """The devkit's data/: meta.mat (a 'synsets' struct array, leaves and one inner node) + the label list."""
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    rows = [(i, w, "words", "gloss", 0, np.zeros((1, 0)), 0, 1300) for w, i in ilsvrc_ids.items()]
    rows.append((1001, "n00001740", "entity", "gloss", 3, np.array([[1, 2, 3]]), 18, 0))  # not a class
    synsets = np.array(rows, dtype=[(f, object) for f in fields]).reshape(-1, 1)
    folder.mkdir(parents=True)
    savemat(str(folder / "meta.mat"), {"synsets": synsets})
    (folder / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ground_truth))


def test_imagenet_flat_val_with_devkit_labels(tmp_path: Path) -> None:
    imagenet_train(tmp_path)
    flat_val(tmp_path)
    ilsvrc_ids = {"n01484850": 1, "n01440764": 2, "n01443537": 3}  # the devkit's ids are not in wnid order
    write_devkit(tmp_path / "ILSVRC2012_devkit_t12" / "data", ilsvrc_ids, [ilsvrc_ids[w] for w in VAL_WNIDS])
    train = DATASETS.get("imagenet")(str(tmp_path), "train")
    val = DATASETS.get("imagenet")(str(tmp_path), "val", classes=train.classes)
    assert val.true_labels.tolist() == [WNIDS.index(w) for w in VAL_WNIDS]


def test_imagenet_flat_val_without_labels_names_the_expected_files(tmp_path: Path) -> None:
    imagenet_train(tmp_path)
    flat_val(tmp_path)
    with pytest.raises(DataError, match=f"expected {tmp_path / 'LOC_val_solution.csv'} or "
                                        f"{tmp_path}/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation"):
        DATASETS.get("imagenet")(str(tmp_path), "val")


# --------------------------------------------------------------------------- WebVision

#: WebVision's synsets.txt order is its own (not sorted): classes are mapped to ImageNet by wnid.
SYNSETS = [f"n{9000000 - 7 * c:08d}" for c in range(60)]


def webvision_tree(root: Path) -> dict[str, list[tuple[str, int]]]:
    (root / "info").mkdir(parents=True)
    (root / "info" / "synsets.txt").write_text("".join(f"{w} some words, more words\n" for w in SYNSETS))
    lists: dict[str, list[tuple[str, int]]] = {}
    for source, classes in (("google", [0, 1, 49, 50, 59]), ("flickr", [0, 2])):
        lists[source] = [(f"{source}/q{c + 1:04d}/{k:06d}.jpg", c) for c in classes for k in range(2)]
        for relative, c in lists[source]:
            write_jpeg(root / relative, seed=c)
        (root / "info" / f"train_filelist_{source}.txt").write_text(
            "".join(f"{p} {c}\n" for p, c in lists[source]))
    lists["val"] = [(f"val{n:06d}.jpg", c) for n, c in enumerate([3, 49, 50, 0], start=1)]
    for name, c in lists["val"]:
        write_jpeg(root / "val_images_256" / name, seed=c)
    (root / "info" / "val_filelist.txt").write_text("".join(f"{p} {c}\n" for p, c in lists["val"]))
    return lists


def test_webvision_reads_google_and_flickr_with_unknown_true_labels(tmp_path: Path) -> None:
    lists = webvision_tree(tmp_path)
    train = DATASETS.get("webvision")(str(tmp_path), "train")
    expected = lists["google"] + lists["flickr"]
    assert [str(Path(f).relative_to(tmp_path)) for f in train.files] == [p for p, _ in expected]
    assert train.observed_labels.tolist() == [c for _, c in expected] and train.classes == tuple(SYNSETS)
    assert (train.true_labels == UNKNOWN_LABEL).all()  # web labels were never verified
    val = DATASETS.get("webvision")(str(tmp_path), "val", classes=train.classes)
    assert names(val) == [p for p, _ in lists["val"]] and val.true_labels.tolist() == [3, 49, 50, 0]
    assert all(Path(f).parent.name == "val_images_256" for f in val.files)


@pytest.mark.parametrize("dataset", ["webvision", "webvision50"])
def test_webvision_class_ids_beyond_synsets_are_an_error(tmp_path: Path, dataset: str) -> None:
    webvision_tree(tmp_path)
    google = tmp_path / "info" / "train_filelist_google.txt"
    google.write_text(google.read_text() + "google/q0061/000000.jpg 60\n")  # synsets.txt has 60 lines: ids 0..59
    with pytest.raises(DataError, match=r"train_filelist_google.txt has class id 60 but info/synsets.txt lists 60"):
        DATASETS.get(dataset)(str(tmp_path), "train")


def test_webvision50_is_the_first_50_classes_of_google_and_tests_on_imagenet_val(tmp_path: Path) -> None:
    web, imagenet = tmp_path / "webvision", tmp_path / "imagenet"
    lists = webvision_tree(web)
    # ImageNet val in class folders: 2 of the 50 classes, and one class outside them
    for wnid, count in ((SYNSETS[1], 2), (SYNSETS[49], 1), (SYNSETS[55], 3)):
        for k in range(count):
            write_jpeg(imagenet / "val" / wnid / f"ILSVRC2012_val_{k:08d}_{wnid}.JPEG")
    cfg = build_config(overrides=[f"data.dir={web}", "data.dataset=webvision50", f"data.test_dir={imagenet}"])
    train, test = read_manifests(cfg)
    assert train.classes == tuple(SYNSETS[:50])
    expected = [(p, c) for p, c in lists["google"] if c < 50]
    assert [str(Path(f).relative_to(web)) for f in train.files] == [p for p, _ in expected]
    assert train.observed_labels.tolist() == [0, 0, 1, 1, 49, 49]
    assert test.classes == train.classes and len(test) == 3
    assert {Path(f).parent.name: int(l) for f, l in zip(test.files, test.true_labels)} == {SYNSETS[1]: 1,
                                                                                           SYNSETS[49]: 49}
    val = DATASETS.get("webvision50")(str(web), "val", classes=train.classes)
    assert val.true_labels.tolist() == [3, 49, 0]


# --------------------------------------------------------------------------- Clothing1M

def clothing_tree(root: Path, folder: str = "annotations") -> None:
    keys = [f"images/{i % 10}/{i:02d}/{1000 + i}.jpg" for i in range(12)]
    for i, key in enumerate(keys):
        write_jpeg(root / key, seed=i)
    ann = root / folder
    ann.mkdir(parents=True, exist_ok=True)
    (ann / "noisy_label_kv.txt").write_text("".join(f"{k} {i % 14}\n" for i, k in enumerate(keys[:8])))
    # keys 2 and 3 are also clean-annotated (one agrees with its noisy label, one does not); 8..11 clean only
    clean = {keys[2]: 2, keys[3]: 5, **{keys[i]: i for i in range(8, 12)}}
    (ann / "clean_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in clean.items()))
    (ann / "noisy_train_key_list.txt").write_text("".join(f"{k}\n" for k in keys[:8]))
    (ann / "clean_val_key_list.txt").write_text(f"{keys[8]}\n{keys[9]}\n")
    (ann / "clean_test_key_list.txt").write_text(f"{keys[10]}\n{keys[11]}\n")


@pytest.mark.parametrize("folder", ["annotations", "."])
def test_clothing1m_true_label_is_the_clean_one_where_known(tmp_path: Path, folder: str) -> None:
    clothing_tree(tmp_path, folder)
    train = DATASETS.get("clothing1m")(str(tmp_path), "train")
    assert len(train.classes) == 14 and train.classes[0] == "T-Shirt"
    assert train.observed_labels.tolist() == list(range(8))
    assert train.true_labels.tolist() == [-1, -1, 2, 5, -1, -1, -1, -1]
    assert all(Path(f).is_file() for f in train.files)
    val = DATASETS.get("clothing1m")(str(tmp_path), "val", classes=train.classes)
    test = DATASETS.get("clothing1m")(str(tmp_path), "test", classes=train.classes)
    assert val.true_labels.tolist() == val.observed_labels.tolist() == [8, 9]
    assert test.true_labels.tolist() == [10, 11]
    # noise detection can be scored on the real noise: sample 3 is corrupt, 2 is intact, the rest unknown
    assert np.flatnonzero(is_corrupt(train)).tolist() == [3]
    cfg = build_config(overrides=[f"data.dir={tmp_path}", "data.dataset=clothing100k", "data.test_split=test"])
    train100k, test = read_manifests(cfg)
    assert len(train100k) == 8 and names(test) == ["1010.jpg", "1011.jpg"]


def test_clothing100k_is_a_fixed_random_subset() -> None:
    chosen = subset_positions(250_000)
    assert len(chosen) == 100_000 and np.array_equal(chosen, np.unique(chosen))
    assert np.array_equal(chosen, subset_positions(250_000))
    assert 0.35 < (chosen < 125_000).mean() < 0.65  # spread over the whole list, not its head
    assert np.array_equal(subset_positions(50), np.arange(50))


# --------------------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_are_read_into_memory_as_hwc(tmp_path: Path, name: str) -> None:
    hwc = write_cifar(tmp_path, name)
    train = DATASETS.get(name)(str(tmp_path), "train")
    val = DATASETS.get(name)(str(tmp_path), "val", classes=train.classes)
    assert train.files is None and np.array_equal(train.images, hwc[:5])
    assert np.array_equal(val.images, hwc[5:]) and val.true_labels.tolist() == [3]
    assert len(train.classes) == (10 if name == "cifar10" else 100) and (train.true_labels == 7).all()
    assert train.load_image(2).size == (32, 32) and train.source(2) == "train[2]"


# --------------------------------------------------------------------------- Tiny ImageNet, CUB, Caltech

def test_tiny_imagenet_layout(tmp_path: Path) -> None:
    wnids = ["n02124075", "n01443537"]
    (tmp_path / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        for k in range(2):
            write_jpeg(tmp_path / "train" / wnid / "images" / f"{wnid}_{k}.JPEG")
        (tmp_path / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    annotations = [("val_0.JPEG", wnids[0]), ("val_1.JPEG", wnids[1]), ("val_2.JPEG", wnids[1])]
    for name, _ in annotations:
        write_jpeg(tmp_path / "val" / "images" / name)
    (tmp_path / "val" / "val_annotations.txt").write_text(
        "".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in annotations))
    train = DATASETS.get("tiny_imagenet")(str(tmp_path), "train")
    assert train.classes == tuple(sorted(wnids)) and train.true_labels.tolist() == [0, 0, 1, 1]
    assert all(Path(f).parent.parent.name == train.classes[l] for f, l in zip(train.files, train.true_labels))
    val = DATASETS.get("tiny_imagenet")(str(tmp_path), "val", classes=train.classes)
    assert names(val) == ["val_0.JPEG", "val_1.JPEG", "val_2.JPEG"] and val.true_labels.tolist() == [1, 0, 0]


def test_cub_200_2011_layout(tmp_path: Path) -> None:
    base = tmp_path / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    images = [(1, classes[0], "Black_Footed_Albatross_0046_18.jpg", 1, 1), (2, classes[0], "a_2.jpg", 1, 0),
              (3, classes[1], "Laysan_Albatross_0002_1027.jpg", 2, 1), (4, classes[1], "b_4.jpg", 2, 0)]
    for _, folder, name, _, _ in images:
        write_jpeg(base / "images" / folder / name)
    (base / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, start=1)))
    (base / "images.txt").write_text("".join(f"{i} {f}/{n}\n" for i, f, n, _, _ in images))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, _, c, _ in images))
    (base / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, _, t in images))
    train = DATASETS.get("cub_200_2011")(str(tmp_path), "train")  # the parent of CUB_200_2011/ works too
    assert train.classes == tuple(classes) and train.true_labels.tolist() == [0, 1]
    assert names(train) == ["Black_Footed_Albatross_0046_18.jpg", "Laysan_Albatross_0002_1027.jpg"]
    val = DATASETS.get("cub_200_2011")(str(base), "val", classes=train.classes)
    assert names(val) == ["a_2.jpg", "b_4.jpg"] and val.true_labels.tolist() == [0, 1]


def test_caltech256_split_is_fixed_disjoint_and_complete(tmp_path: Path) -> None:
    folder = tmp_path / "256_ObjectCategories"
    counts = {"001.ak47": 10, "002.american-flag": 6, "257.clutter": 4}
    for name, count in counts.items():
        for k in range(count):
            write_jpeg(folder / name / f"{name[:3]}_{k + 1:04d}.jpg")
    (folder / "002.american-flag" / "RENAME2").write_text("not an image")
    train = DATASETS.get("caltech256")(str(tmp_path), "train")
    val = DATASETS.get("caltech256")(str(tmp_path), "val", classes=train.classes)
    assert train.classes == ("001.ak47", "002.american-flag")  # clutter is not a class
    assert len(set(train.files) | set(val.files)) == 16 and not set(train.files) & set(val.files)
    assert np.bincount(val.true_labels).tolist() == [2, 1]  # 20% of 10 and of 6, rounded
    again = DATASETS.get("caltech256")(str(folder), "val")
    assert list(again.files) == list(val.files)
    assert np.array_equal(val_positions(10, 1), val_positions(10, 1))
    assert not np.array_equal(val_positions(100, 1), val_positions(100, 2))


# --------------------------------------------------------------------------- wrong layouts, listing

@pytest.mark.parametrize("dataset, expected", [
    ("imagenet", "expected {root}/train/ in {root}"),
    ("webvision", "expected {root}/info/synsets.txt: the webvision layout is"),
    ("webvision50", "expected {root}/info/synsets.txt"),
    ("clothing1m", "expected {root}/annotations/noisy_train_key_list.txt or {root}/noisy_train_key_list.txt"),
    ("clothing100k", "expected {root}/annotations/noisy_train_key_list.txt"),
    ("cifar10", "expected {root}/batches.meta: the cifar10 layout is ROOT/cifar-10-batches-py/"),
    ("cifar100", "expected {root}/meta: the cifar100 layout is"),
    ("tiny_imagenet", "expected {root}/wnids.txt: the tiny_imagenet layout is"),
    ("cub_200_2011", "expected {root}/images.txt: the cub_200_2011 layout is"),
    ("caltech256", "expected {root}/256_ObjectCategories/: the caltech256 layout is"),
])
def test_wrong_layout_names_the_expected_file(tmp_path: Path, dataset: str, expected: str) -> None:
    (tmp_path / "somewhere_else").mkdir()
    with pytest.raises(DataError) as err:
        DATASETS.get(dataset)(str(tmp_path), "train")
    message = str(err.value)
    assert expected.format(root=tmp_path) in message and "\n" not in message


def test_unknown_split_and_foreign_classes_are_refused(tmp_path: Path) -> None:
    clothing_tree(tmp_path)
    with pytest.raises(DataError, match="clothing1m has the splits train, val, test, not 'holdout'"):
        DATASETS.get("clothing1m")(str(tmp_path), "holdout")
    with pytest.raises(DataError, match="has classes the training set lacks"):
        DATASETS.get("clothing1m")(str(tmp_path), "val", classes=("T-Shirt", "Shirt"))


def test_datasets_command_lists_layouts_and_checks_a_tree(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    for name in DATASETS.names():
        assert f"\n{name}: " in listing and "splits:" in listing, name
    for layout in ("LOC_val_solution.csv", "train_filelist_google.txt", "noisy_label_kv.txt", "data_batch_1",
                   "val_annotations.txt", "train_test_split.txt", "256_ObjectCategories"):
        assert layout in listing, layout
    clothing_tree(tmp_path)
    assert main(["datasets", "clothing1m", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train: 8 samples of 14 classes" in out and "2 with a known true label" in out
    assert "val: 2 samples of 14 classes" in out


def test_listing_cache_lists_again_only_what_changed(tmp_path: Path) -> None:
    data, cache = tmp_path / "imagenet", tmp_path / "cache"
    imagenet_train(data)
    write_jpeg(data / "val" / WNIDS[0] / "v.JPEG")
    cfg = build_config(overrides=[f"data.dir={data}", "data.dataset=imagenet", f"data.listing_cache={cache}"])
    first, _ = read_manifests(cfg)
    assert len(list(cache.glob("listing-*.pkl"))) == 2  # one per split folder
    # a file added to a class folder changes its mtime: that folder is listed again
    write_jpeg(data / "train" / WNIDS[1] / "new.JPEG")
    second, _ = read_manifests(cfg)
    assert len(second) == len(first) + 1 and "new.JPEG" in names(second)
    # the cache really answers: with the folder's mtime put back, the stale listing is what comes back
    folder = data / "train" / WNIDS[2]
    before = folder.stat()
    write_jpeg(folder / "unseen.JPEG")
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))
    third, _ = read_manifests(cfg)
    assert list(third.files) == list(second.files)
    uncached, _ = read_manifests(build_config(overrides=[f"data.dir={data}", "data.dataset=imagenet"]))
    assert "unseen.JPEG" in names(uncached)
