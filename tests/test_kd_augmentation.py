"""Seed 001: the nine DA schemes, CutMixPick, --lw-mix KD, T. stddev, and the kd-da correlation study."""
from __future__ import annotations

import math
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from cg_train.augment import (SCHEMES, Augmenter, CutMix, entropy,
                              mixed_targets, model_input, stream_seed)
from cg_train.augment.t_stddev import CHUNK_BATCHES, t_stddev
from cg_train.checks import check_names
from cg_train.config import AugmentConfig, build_config
from cg_train.data.manifest import Batch
from cg_train.errors import ConfigError
from cg_train.paths.layout import is_mixed
from conftest import REPO, assert_same_csvs, read_csv, train
from test_preemption import read_paths, reference_and_stopped_run

K = 10


def batch_of(images: torch.Tensor, labels: list[int]) -> Batch:
    n = len(labels)
    y = torch.tensor(labels)
    return Batch(images, y, y.clone(), torch.arange(100, 100 + n))


def test_mixup_targets_are_the_hand_mixture_and_sum_to_one() -> None:
    cfg = build_config(flags={"augment.da": "mixup", "augment.mix_alpha": 0.4})
    images = torch.randn(6, 3, 8, 8)
    batch = batch_of(images, [0, 1, 2, 3, 4, 5])
    mixed = Augmenter(cfg, K, 0, torch.nn.Identity(), [])(batch, epoch=2, step=7)
    lam = mixed.mix.weight[0].item()
    assert 0 < lam < 1 and torch.all(mixed.mix.weight == lam)
    # torchvision pairs row i with row i-1
    torch.testing.assert_close(mixed.images, lam * images + (1 - lam) * images.roll(1, 0))
    targets = mixed_targets(mixed, K)
    hand = np.zeros((6, K))
    for i in range(6):
        hand[i, i] += lam
        hand[i, (i - 1) % 6] += 1 - lam
    np.testing.assert_allclose(targets.numpy(), hand, rtol=1e-6)
    np.testing.assert_allclose(targets.sum(1).numpy(), 1.0, rtol=1e-6)
    assert mixed.mix.partner_index.tolist() == [105, 100, 101, 102, 103, 104]  # manifest indices, not positions


def test_cutmix_label_weight_is_the_area_kept() -> None:
    cfg = AugmentConfig(da="cutmix")
    scheme = CutMix(cfg, K)
    seen = set()
    for seed in range(12):
        images = torch.stack([torch.full((3, 16, 20), float(i)) for i in range(4)])  # row i is all i
        torch.manual_seed(seed)
        out = scheme(images, torch.arange(4))
        for row in range(4):
            own = (out.images[row] == row).float().mean().item()  # pixels of its own image left
            assert out.weight[row].item() == pytest.approx(own, abs=1e-6)
            assert torch.all((out.images[row] == row) | (out.images[row] == (row - 1) % 4))
        seen.add(round(out.weight[0].item(), 4))
    assert len(seen) > 3  # the box really varies


def test_cutmix_pick_keeps_exactly_the_n_highest_entropy_candidates() -> None:
    cfg = AugmentConfig(da="cutmix_pick_t_ent", n_pick=5, mix_n_run=3)
    scheme = SCHEMES.get(cfg.da)(cfg, K)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, K))
    scheme.scorer = lambda x: entropy(teacher(x))
    images, labels = torch.randn(4, 3, 8, 8), torch.arange(4)
    torch.manual_seed(11)
    out = scheme(images, labels)
    torch.manual_seed(11)  # the same draws: the whole pool
    pool = [CutMix.mix(scheme, images, labels) for _ in range(3)]
    candidates = torch.cat([p.images for p in pool])
    with torch.no_grad():
        logits = teacher(candidates).double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    hand = -(p * np.log(p)).sum(1)
    top = np.argsort(-hand)[:5]
    assert len(out.images) == 5
    torch.testing.assert_close(out.images, candidates[torch.from_numpy(top.copy())])
    assert sorted(hand[top]) == sorted(hand)[-5:]
    weights = torch.cat([p.weight for p in pool])[torch.from_numpy(top.copy())]
    torch.testing.assert_close(out.weight, weights)


@pytest.mark.parametrize("name", ["s_ent", "kld"])
def test_cutmix_pick_criteria_are_student_entropy_and_kl(name: str) -> None:
    from cg_train.augment import criterion_scores

    torch.manual_seed(0)
    s, t = torch.nn.Linear(4, K), torch.nn.Linear(4, K)
    x = torch.randn(7, 4)
    score = criterion_scores(name, s, t, temperature=4.0)(x)
    with torch.no_grad():
        if name == "s_ent":
            p = F.softmax(s(x), 1)
            hand = -(p * p.log()).sum(1)
        else:
            hand = F.kl_div(F.log_softmax(s(x) / 4, 1), F.softmax(t(x) / 4, 1), reduction="none").sum(1)
    torch.testing.assert_close(score, hand)


def test_random_crop_is_each_images_window_of_the_zero_padded_image() -> None:
    """The batched gather equals CIFAR's RandomCrop(pad): image i is padded[i, :, dy:dy+h, dx:dx+w] at its draw."""
    from cg_train.augment import denormalize, random_crop

    x = torch.randn(9, 3, 12, 14)
    torch.manual_seed(7)
    out = random_crop(x, 4)
    torch.manual_seed(7)
    offsets = (torch.rand(9, 2) * 9).long()
    padded = F.pad(denormalize(x), (4,) * 4)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        torch.testing.assert_close(denormalize(out[i:i + 1])[0], padded[i, :, dy:dy + 12, dx:dx + 14])
    assert len(set(map(tuple, offsets.tolist()))) > 1


def test_pixel_schemes_undo_the_loaders_own_normalisation() -> None:
    # --augment cifar normalises with CIFAR's mean/std: flip_crop's black padding must be black in those units
    from cg_train.data.augment import CIFAR_MEAN, CIFAR_STD

    cfg = build_config(flags={"augment.da": "flip_crop", "augment.crop_padding": 4, "data.augment": "cifar"})
    aug = Augmenter(cfg, K, 0, torch.nn.Identity(), [])
    torch.manual_seed(0)
    out = aug(batch_of(torch.full((8, 3, 16, 16), 0.5), list(range(8))), 0, 0).images
    black = [-m / s for m, s in zip(CIFAR_MEAN, CIFAR_STD)]
    for c in range(3):
        values = torch.unique(out[:, c])
        assert len(values) == 2  # some image was shifted, so both the pixel and the padding show
        torch.testing.assert_close(values, torch.tensor(sorted([black[c], 0.5])))


def test_resume_draws_the_same_augmentation() -> None:
    cfg = build_config(flags={"augment.da": "autoaugment"})
    aug = Augmenter(cfg, K, 0, torch.nn.Identity(), [])
    batch = batch_of(torch.randn(3, 3, 16, 16), [1, 2, 3])
    a, b, c = aug(batch, 1, 4), aug(batch, 1, 4), aug(batch, 1, 5)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert stream_seed(0, 1, 4, 0) != stream_seed(0, 1, 4, 1)


def test_refusals_are_one_line() -> None:
    cases = [({"augment.da": "mixup", "supervision.method": "sl", "supervision.teacher": "t"}, "keeps one table row"),
             ({"augment.da": "cutmix", "record.p_smoothing": 0.5}, "--p-smoothing"),
             ({"augment.lw_mix": "1,0,1"}, "--lw-mix needs --method kd"),
             ({"augment.check_ce_var": True, "supervision.method": "kd", "supervision.teacher": "t.pth"},
              "--fix-student"),
             ({"augment.da": "cutmix_pick_t_ent"}, "need a teacher"),
             ({"augment.lw_mix": "1,2", "supervision.method": "kd", "supervision.teacher": "t"}, "three weights")]
    for flags, words in cases:
        with pytest.raises(ConfigError, match=words) as info:
            check_names(build_config(flags=flags))
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------- on real data

@pytest.fixture(scope="module")
def teacher(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    assert train(mnist_small, out, "--epochs", "1", "--sample-size", "10") == 0
    return out / "checkpoint.pth.tar"


@pytest.mark.parametrize("loader", ["torchvision", "dali"])
def test_every_scheme_takes_a_training_step_on_both_loaders(mnist_small: Path, loader: str, teacher: Path) -> None:
    from cg_train.data.bundle import build_data
    from cg_train.models import build_model
    from cg_train.supervision import load_teacher

    cfg = build_config(flags={"data.dir": str(mnist_small), "data.loader": loader, "data.workers": 1,
                              "data.batch_size": 40, "model.arch": "simple_cnn", "augment.n_pick": 16})
    data = build_data(cfg, 32, 32, 0, 1, torch.device("cpu"))
    data.train_loader.set_epoch(0)
    batch = next(iter(data.train_loader))
    torch.manual_seed(0)
    student = build_model("simple_cnn", K)
    t = load_teacher(teacher, K, torch.device("cpu"))
    for name in SCHEMES.names():
        cfg.augment.da = name
        augmented = Augmenter(cfg, K, 0, student, [t])(batch, 0, 0)
        before = [p.detach().clone() for p in student.parameters()]
        opt = torch.optim.SGD(student.parameters(), lr=0.1)
        loss = F.cross_entropy(student(model_input(augmented)), mixed_targets(augmented, K))
        loss.backward()
        opt.step()
        assert math.isfinite(loss.item()), name
        assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters())), name
        assert len(augmented.indices) == (16 if name.startswith("cutmix_pick") else 40), name


def test_teacher_and_student_see_identical_tensors_under_lw_mix(mnist_small: Path, tmp_path: Path,
                                                                 teacher: Path) -> None:
    seen: list[tuple[bool, torch.Tensor]] = []

    def grab(module: torch.nn.Module, args: tuple) -> None:
        if type(module).__name__ == "SimpleCNN" and module.training is not None:
            frozen = not any(p.requires_grad for p in module.parameters())
            seen.append((frozen, args[0].detach().clone()))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(grab)
    try:
        assert train(mnist_small, tmp_path / "kd", "--epochs", "1", "--sample-size", "10", "--method", "kd",
                     "--teacher", str(teacher), "--da", "cutmix", "--lw-mix", "1,1,1",
                     "--t-output-as-target-for-input-mix", "--batch-size", "100") == 0
    finally:
        handle.remove()
    pairs = [(a, b) for a, b in zip(seen, seen[1:]) if not a[0] and b[0] and len(a[1]) == 200]
    assert len(pairs) == 3  # 300 samples / 100: each step the student then the teacher on x + x_aug
    for (_, student_in), (_, teacher_in) in pairs:
        assert torch.equal(student_in, teacher_in)


def test_t_stddev_is_the_hand_computation_on_a_fixed_teacher(mnist_small: Path, tmp_path: Path,
                                                            teacher: Path) -> None:
    from torchvision.datasets import ImageFolder

    from cg_train.data.transforms import eval_transform
    from cg_train.supervision import load_teacher

    out = tmp_path / "measure"
    # 300 samples, batch 60: 5 steps = one chunk per epoch = the whole training set
    assert train(mnist_small, out, "--epochs", "2", "--sample-size", "10", "--batch-size", "60", "--method", "kd",
                 "--teacher", str(teacher), "--fix-student", "--lr", "0", "--check-ce-var") == 0
    assert CHUNK_BATCHES == 5
    table = read_csv(out / "t_stddev.csv")
    assert table.epoch.tolist() == [0, 1] and table.chunks.tolist() == [1, 2]
    assert math.isnan(table.t_stddev[0]) and table.t_stddev[1] == pytest.approx(0.0, abs=1e-7)

    data = ImageFolder(str(mnist_small / "train"), transform=eval_transform(32, 32))
    images = torch.stack([img for img, _ in data])
    t = load_teacher(teacher, K, torch.device("cpu"))
    s = load_teacher(out / "initial_state.pth.tar", K, torch.device("cpu"))  # the fixed student
    with torch.no_grad():
        p_t = F.softmax(t(images).double(), 1).numpy()
        log_s = F.log_softmax(s(images).double(), 1).numpy()
    ce = -(p_t * log_s).sum(1)
    ent = -(p_t * np.log(p_t)).sum(1)
    for row in table.itertuples():
        assert row.ce_mean == pytest.approx(ce.mean(), rel=1e-5)
        assert row.ce_var == pytest.approx(ce.var(ddof=1), rel=1e-3)
        assert row.t_entropy == pytest.approx(ent.mean(), rel=1e-5)
    ckpt = torch.load(out / "checkpoint.pth.tar", weights_only=False, map_location="cpu")
    chunks = np.array(ckpt["ranks"][0]["recorders"]["t_stddev"]["chunk_means"])
    np.testing.assert_allclose(chunks[0], p_t.mean(0), rtol=1e-5)  # the chunk mean is the dataset mean


def test_t_stddev_formula() -> None:
    chunks = np.random.default_rng(0).dirichlet(np.ones(K), size=7)
    assert t_stddev(torch.from_numpy(chunks)) == pytest.approx(chunks.std(axis=0, ddof=1).mean())


@pytest.mark.parametrize("extra", [["--da", "cutmix", "--paths", "--paths-topk", str(K)],
                                   ["--da", "mixup", "--method", "kd", "--lw-mix", "1,1,1"]],
                         ids=["cutmix-paths", "mixup-lw-mix"])
def test_sigterm_mid_epoch_under_mixing_resumes_to_identical_csvs(mnist_small: Path, tmp_path: Path, teacher: Path,
                                                                  extra: list[str]) -> None:
    if "kd" in extra:
        extra = [*extra, "--teacher", str(teacher)]
    args = ["--epochs", "1", "--sample-size", "10", "--print-freq", "1", "--seed", "3", "--batch-size", "10", *extra]
    reference, stopped, returncode, err = reference_and_stopped_run(mnist_small, tmp_path, args)
    assert returncode == 128 + signal.SIGTERM, err
    step = torch.load(stopped / "checkpoint.pth.tar", weights_only=False)["train_state"]["step"]
    assert 3 <= step < 30
    assert train(mnist_small, stopped, *args, "--resume") == 0
    assert_same_csvs(reference, stopped)
    if "--paths" in extra:  # every mixed row once, as the uninterrupted run logged it
        pd.testing.assert_frame_equal(read_paths(reference), read_paths(stopped), check_exact=True)
        assert_mixed_rows_name_both_sources(reference)


def assert_mixed_rows_name_both_sources(run: Path) -> None:
    """Path logs of a CutMix run: each row is its own sample and torchvision's partner (the previous image of the
    batch) at the step's one area weight; ``loss`` is the mixed-target CE the optimizer saw."""
    paths = pd.read_parquet(run / "paths")  # unsorted: a step's rows in batch order
    assert is_mixed(pq.read_schema(next((run / "paths").rglob("*.parquet"))))
    observed = pd.read_parquet(run / "corruption.parquet").set_index("index")["observed_label"]
    assert (paths.observed_label.to_numpy() == observed[paths["index"]].to_numpy()).all()
    assert (paths.partner_label.to_numpy() == observed[paths.mix_partner].to_numpy()).all()
    for _, rows in paths.groupby("step", sort=False):
        assert rows.mix_partner.tolist() == np.roll(rows["index"].to_numpy(), 1).tolist()
        assert rows.mix_weight.nunique() == 1 and 0 < rows.mix_weight.iloc[0] < 1
    w = paths.mix_weight.to_numpy(np.float64)
    mixed_ce = -(w * np.log(paths.p_observed) + (1 - w) * np.log(paths.p_partner))
    np.testing.assert_allclose(paths.loss, mixed_ce, rtol=2e-5)
    full = np.zeros((len(paths), K))
    for i in range(1, K + 1):  # --paths-topk K: the whole distribution (float16)
        full[np.arange(len(paths)), paths[f"top{i}_class"]] = paths[f"top{i}_prob"]
    np.testing.assert_allclose(full[np.arange(len(paths)), paths.partner_label], paths.p_partner, atol=1e-3)


# ---------------------------------------------------------------------------------------- the study

def test_correlations_equal_independent_computations() -> None:
    from scipy import stats

    from analysis.kd_da import correlations

    rng = np.random.default_rng(1)
    x = rng.normal(size=9)
    y = 0.7 * x + rng.normal(scale=0.5, size=9)
    got = correlations(x, y)
    assert got["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731  (no ties)
    assert got["spearman_r"] == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    pairs = [(i, j) for i in range(9) for j in range(i)]
    concordant = sum(np.sign(x[i] - x[j]) == np.sign(y[i] - y[j]) for i, j in pairs)
    assert got["kendall_tau"] == pytest.approx((2 * concordant - len(pairs)) / len(pairs))
    assert got["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue)
    assert got["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    assert got["kendall_p"] == pytest.approx(stats.kendalltau(x, y).pvalue)


def test_cg_analyze_kd_da_reads_runs_and_writes_table_plot_and_coefficients(tmp_path: Path) -> None:
    from analysis.cli import main

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.yaml").write_text("model: {arch: wrn_40_2}\n")
    rng = np.random.default_rng(0)
    truth = {}
    for i, da in enumerate(["identity", "flip", "cutout", "mixup"]):
        for seed in range(3):
            for measure in (True, False):
                run = tmp_path / "runs" / f"{da},{seed},{measure}"
                run.mkdir(parents=True)
                (run / "config.yaml").write_text(yaml_config(da, seed, measure, teacher / "model_best.pth.tar"))
                value = 0.01 * (i + 1) + rng.normal(scale=1e-3) if measure else 1.0 + 0.1 * i + rng.normal(scale=0.01)
                truth.setdefault((da, measure), []).append(value)
                if measure:
                    pd.DataFrame({"epoch": [0, 1], "chunks": [1, 2], "t_stddev": [np.nan, value], "t_entropy": 0,
                                  "ce_mean": 0, "ce_var": 0}).to_csv(run / "t_stddev.csv", index=False)
                else:
                    pd.DataFrame({"epoch": [0, 1], "count": 9, "loss": [9.0, value], "acc1": 0, "acc5": 0}
                                 ).to_csv(run / "test.csv", index=False)
    assert main(["kd-da", str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--format", "png"]) == 0
    table = read_csv(tmp_path / "out" / "kd_da_table.csv").set_index("da")
    for (da, measure), values in truth.items():
        column = "t_stddev" if measure else "s_test_loss"
        assert table.loc[da, f"{column}_mean"] == pytest.approx(np.mean(values))
        assert table.loc[da, f"{column}_count"] == 3
    corr = read_csv(tmp_path / "out" / "kd_da_correlations.csv")
    assert corr.pair.tolist() == ["wrn_40_2/wrn_16_2"] and corr.n.tolist() == [4]
    assert corr.kendall_tau[0] == pytest.approx(1.0)
    assert (tmp_path / "out" / "kd_da_wrn_40_2_wrn_16_2.png").stat().st_size > 1000


def yaml_config(da: str, seed: int, measure: bool, teacher: Path) -> str:
    return (f"model: {{arch: wrn_16_2}}\ntrain: {{seed: {seed}}}\nsupervision: {{method: kd, teacher: {teacher}}}\n"
            f"augment: {{da: {da}, fix_student: {str(measure).lower()}, check_ce_var: {str(measure).lower()}}}\n")


def test_kd_da_sweeps_are_valid_and_every_pair_teacher_is_trained_by_teachers_yaml(tmp_path: Path) -> None:
    import yaml

    from launch.sweep import load_sweep

    # a pair's points differ only in --da and --seed: every DA is loaded, the seed axis is cut to its first value
    # after checking it (each point's config build costs ~50 ms; 10 sweeps x 27 points would take ~15 s here)
    for source in (REPO / "configs" / "kd_da").glob("*.yaml"):
        raw = yaml.safe_load(source.read_text())
        if "train.seed" in raw.get("axes", {}):
            assert raw["axes"]["train.seed"] == [0, 1, 2], source.name
            raw["axes"]["train.seed"] = [0]
        (tmp_path / source.name).write_text(yaml.safe_dump(raw))
    files = sorted(tmp_path.glob("*.yaml"))
    sweeps = {f.stem: load_sweep(f, tmp_path / "runs" / f.stem) for f in files
              if f.name not in ("base.yaml", "measure.yaml")}
    pairs = {  # the seed's nine CIFAR-100 pairs (scripts/S_test_loss_different_DA_cifar100.sh) -> --arch
        "vgg13_vgg8": ("cifar_vgg13", "cifar_vgg8"),
        "vgg13_MobileNetV2": ("cifar_vgg13", "cifar_mobilenetv2"),
        "cifar_resnet56_cifar_resnet20": ("cifar_resnet56", "cifar_resnet20"),
        "resnet56_ShuffleV2": ("cifar_resnet56", "cifar_shufflenetv2"),
        "wrn_40_2_wrn_16_2": ("wrn_40_2", "wrn_16_2"),
        "wrn_40_2_vgg8": ("wrn_40_2", "cifar_vgg8"),
        "resnet32x4_resnet8x4": ("cifar_resnet32x4", "cifar_resnet8x4"),
        "ResNet50_vgg8": ("cifar_resnet50", "cifar_vgg8"),
        "resnet32x4_ShuffleV2": ("cifar_resnet32x4", "cifar_shufflenetv2"),
    }
    assert sorted(sweeps) == sorted(["teachers", *pairs, *(f"{p}_tstddev" for p in pairs)])  # training + T. stddev
    seed_das = ["identity", "flip", "flip_crop", "cutout", "autoaugment", "mixup", "cutmix", "cutmix_pick_s_ent",
                "cutmix_pick_t_ent"]  # the seed's nine schemes, in its README's order
    teacher_points = sweeps.pop("teachers").points
    teachers = sorted({t for t, _ in pairs.values()})
    assert sorted(point.cfg.model.arch for point in teacher_points) == teachers
    assert sorted(point.name for point in teacher_points) == [f"arch={t}" for t in teachers]  # its run folders
    for name, sweep in sweeps.items():
        assert [point.cfg.augment.da for point in sweep.points] == seed_das, name
        cfg = sweep.points[0].cfg
        assert cfg.supervision.method == "kd" and cfg.augment.lw_mix == "1,0,1" and cfg.augment.mix_n_run == 2
        assert cfg.augment.check_ce_var == name.endswith("_tstddev")
        teacher, student = pairs[name.removesuffix("_tstddev")]
        assert cfg.model.arch == student, name
        # the checkpoint of teachers.yaml's run for that teacher under its documented --dir runs/kd_da/teachers
        assert cfg.supervision.teacher == str(Path(f"runs/kd_da/teachers/arch={teacher}/model_best.pth.tar").absolute())
