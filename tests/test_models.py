"""The KD seeds' 32 px teacher/student networks, torchvision ResNet-152, --pretrained, and the multistep schedule."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from cg_train.checks import check_names
from cg_train.config import build_config
from cg_train.errors import ConfigError
from cg_train.models import MODELS, build_model
from cg_train.models.torchvision_models import weights_file
from cg_train.optim import build_optimizer, build_scheduler

# Published parameter counts, in millions, with the number of classes they were counted for.
# CRD: the CIFAR-100 model zoo of Tian et al., "Contrastive Representation Distillation" (ICLR 2020,
# github.com/HobbitLong/RepDistiller), whose counts KD papers on CIFAR-100 print in their teacher/student
# tables (e.g. ResNet32x4 7.43M / ResNet8x4 1.23M). WRN: Zagoruyko & Komodakis, "Wide Residual Networks"
# (BMVC 2016), CIFAR-10. torchvision: the model's documented num_params (ImageNet, 1000 classes).
PUBLISHED = {
    "cifar_resnet20": (0.28, 100, "CRD"),
    "cifar_resnet32": (0.47, 100, "CRD"),
    "cifar_resnet56": (0.86, 100, "CRD"),
    "cifar_resnet110": (1.74, 100, "CRD"),
    "cifar_resnet8x4": (1.23, 100, "CRD"),
    "cifar_resnet32x4": (7.43, 100, "CRD"),
    "cifar_resnet50": (23.71, 100, "CRD"),  # CRD's ResNet50 (resnetv2.py), seed 001's ResNet50 -> vgg8 teacher
    "wrn_16_2": (0.70, 100, "CRD"),
    "wrn_40_1": (0.57, 100, "CRD"),
    "wrn_40_2": (2.26, 100, "CRD"),
    "wrn_28_10": (36.5, 10, "WRN"),
    "cifar_vgg8": (3.96, 100, "CRD"),
    "cifar_vgg13": (9.46, 100, "CRD"),
    "cifar_mobilenetv2": (0.81, 100, "CRD"),
    "cifar_shufflenetv1": (0.95, 100, "CRD"),
    "cifar_shufflenetv2": (1.36, 100, "CRD"),
    "resnet152": (60.192808, 1000, "torchvision"),
}


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_parameter_count_matches_the_published_figure(arch: str) -> None:
    millions, classes, _source = PUBLISHED[arch]
    count = sum(p.numel() for p in build_model(arch, classes).parameters())
    assert abs(count / 1e6 - millions) <= 0.01 * millions, (arch, count)


#: one network per class: these are the same code as a smaller one tested (resnet152: torchvision's own)
SLOW_TWINS = ("resnet152", "wrn_28_10", "wrn_40_1", "wrn_40_2", "cifar_resnet32", "cifar_resnet56", "cifar_resnet110",
              "cifar_resnet32x4", "cifar_vgg13")


@pytest.mark.parametrize("arch", sorted(a for a in PUBLISHED if a not in SLOW_TWINS) + ["wrn_10_1"])
def test_builds_and_trains_a_step_at_32px(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 7)
    assert MODELS.get(arch).crop_size == 32
    images, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 6])
    model.train()
    logits = model(images)
    assert logits.shape == (2, 7)
    torch.nn.functional.cross_entropy(logits, target).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(images)).all()


def test_cifar_resnet50_is_crds_bottleneck_resnet_counted_layer_by_layer() -> None:
    """CRD's ResNet50: 3x3 stem at 32 px, bottlenecks [3, 4, 6, 3] x4, stages 64/128/256/512 at strides 1/2/2/2."""
    conv = lambda k, cin, cout: k * k * cin * cout  # noqa: E731  (no bias: every conv is followed by BN)
    bn = lambda c: 2 * c  # noqa: E731  (weight and bias; running stats are buffers)

    def bottleneck(cin: int, planes: int, projection: bool) -> int:
        out = 4 * planes
        body = conv(1, cin, planes) + bn(planes) + conv(3, planes, planes) + bn(planes) + conv(1, planes, out) + bn(out)
        return body + (conv(1, cin, out) + bn(out) if projection else 0)

    classes, expected, cin = 100, conv(3, 3, 64) + bn(64), 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        expected += bottleneck(cin, planes, True) + (blocks - 1) * bottleneck(4 * planes, planes, False)
        cin = 4 * planes
    expected += 2048 * classes + classes
    model = build_model("cifar_resnet50", classes)
    assert sum(p.numel() for p in model.parameters()) == expected == 23_705_252  # "23.7 M" in KD papers' tables
    assert MODELS.get("cifar_resnet50").crop_size == 32
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 1 + 16 * 3 + 4  # stem, three per bottleneck, one per projection shortcut
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    features = []
    model.layers.register_forward_hook(lambda _module, _inputs, output: features.append(output.shape))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, classes)
    assert features == [(2, 2048, 4, 4)]  # 32 px / 8: no max-pool, only stages 2-4 downsample
    # the seed's name ResNet50 still means torchvision's 224 px resnet50 (case-insensitive lookup)
    assert MODELS.canonical("ResNet50") == "resnet50" and MODELS.get("resnet50").crop_size == 224


def test_wide_resnet_names_build_on_demand_and_bad_depths_fail_in_one_line() -> None:
    assert "wrn_22_3" in MODELS
    model = build_model("wrn_22_3", 5)
    assert model.fc.in_features == 64 * 3 and len(model.blocks) == 3 * 3
    with pytest.raises(ConfigError, match=r"wrn_21_3: WideResNet needs depth 6n\+4"):
        check_names(build_config(flags={"model.arch": "wrn_21_3"}))
    with pytest.raises(ConfigError, match="wrn_D_W"):
        check_names(build_config(flags={"model.arch": "wrn"}))


def test_pretrained_reads_the_hub_cache_and_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"--pretrained: resnet18's ImageNet weights are not in the torch hub cache"):
        build_model("resnet18", 10, pretrained=True)
    with pytest.raises(ConfigError, match="cifar_resnet20 has no published weights"):
        build_model("cifar_resnet20", 10, pretrained=True)
    # torchvision's file name in the cache, holding a 1000-class resnet18 (stand-in for the published weights)
    torch.manual_seed(1)
    imagenet = tvm.resnet18(weights=None).state_dict()
    path = weights_file("resnet18")
    assert path.parent == tmp_path / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(imagenet, path)
    model = build_model("resnet18", 10, pretrained=True).state_dict()
    for key, value in imagenet.items():
        if key.startswith("fc."):
            assert model[key].shape[0] == 10  # the classifier of another size starts fresh
        else:
            assert torch.equal(model[key], value), key
    same_classes = build_model("resnet18", 1000, pretrained=True).state_dict()
    assert all(torch.equal(same_classes[k], v) for k, v in imagenet.items())


def test_multistep_schedule_decays_at_the_milestones() -> None:
    cfg = build_config(flags={"sched.milestones": [2, 4], "sched.gamma": 0.5, "optim.lr": 0.8, "train.epochs": 6,
                              "model.arch": "simple_cnn"})
    assert cfg.sched.scheduler == "auto"
    optimizer = build_optimizer(torch.nn.Linear(2, 2).parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.8, 0.8, 0.4, 0.4, 0.2, 0.2])
    with pytest.raises(ConfigError, match="--lr-milestones needs --lr-scheduler multistep"):
        build_scheduler(optimizer, build_config(flags={"sched.milestones": [2], "sched.scheduler": "cosine"}))
    with pytest.raises(ConfigError, match="must be increasing"):
        build_config(flags={"sched.milestones": [3, 2]})
