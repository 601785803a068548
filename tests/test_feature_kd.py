"""Feature-level distillation: each method's loss against its paper's formula in NumPy, and the feature taps
against a manual forward pass of a CIFAR and a torchvision model.

The losses get fixed random feature tensors; what a method *learns* (a regressor, an embedding, a paraphraser)
is taken from the method's own module and only the loss on its output is recomputed in NumPy, from the paper's
definition (docs/feature_distillation.md), not from the code under test.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cg_train.config import SupervisionConfig
from cg_train.data.manifest import Batch
from cg_train.errors import ConfigError
from cg_train.models import build_model
from cg_train.models.cifar_mobile import channel_shuffle
from cg_train.models.features import FeatureTaps
from cg_train.supervision import METHODS, Extras, Losses, total_losses
from cg_train.supervision.feature_kd import FeatureMethod

B, K = 5, 4
RNG = np.random.default_rng(3)
LOGITS = RNG.normal(size=(B, K)) * 2
TEACHER_LOGITS = RNG.normal(size=(1, B, K)) * 3
LABELS = np.array([2, 0, 3, 1, 1])


def t32(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def maps(*shape: int, positive: bool = False) -> np.ndarray:
    x = RNG.normal(size=(B, *shape))
    return np.abs(x) if positive else x


def method(name: str, **cfg: object) -> FeatureMethod:
    values = {"ce_weight": 1.0, "kd_weight": 0.0, "feature_weight": 1.0, "feat_dim": 6, **cfg}
    return METHODS.get(name)(SupervisionConfig(method=name, **values), K)


def built(name: str, student: list[np.ndarray], teacher: list[np.ndarray], **cfg: object) -> FeatureMethod:
    m = method(name, **cfg)
    torch.manual_seed(0)
    m.modules = nn.ModuleDict(m.build([torch.Size((2, *f.shape[1:])) for f in student],
                                      [torch.Size((2, *f.shape[1:])) for f in teacher]))
    m.side = dict(m.modules.items())
    return m


def extras(student: list[np.ndarray], teacher: list[np.ndarray], **kw: object) -> Extras:
    return Extras(teacher_logits=t32(TEACHER_LOGITS), student_features=[t32(f) for f in student],
                  teacher_features=[t32(f) for f in teacher], **kw)


def batch(b: int = B) -> Batch:
    labels = torch.tensor(LABELS[:b])
    return Batch(torch.zeros(b, 3, 2, 2), labels, labels, torch.arange(b))


def feature_term(m: FeatureMethod, student: list[np.ndarray], teacher: list[np.ndarray]) -> np.ndarray:
    """The per-sample feature term, a relational batch term spread over the samples (what the trainer adds)."""
    with torch.no_grad():
        return total_losses(m.feature_losses(batch(), extras(student, teacher))).numpy()


def np_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def np_pool(x: np.ndarray, size: int) -> np.ndarray:
    """Average pooling of [b, c, h, h] to [b, c, size, size] for h a multiple of size."""
    b, c, h, _ = x.shape
    f = h // size
    return x.reshape(b, c, size, f, size, f).mean((3, 5))


def np_smaller(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = min(s.shape[2], t.shape[2])
    return np_pool(s, size), np_pool(t, size)


# --------------------------------------------------------------------------- per-sample feature terms

def test_at_is_the_squared_difference_of_normalized_attention_maps() -> None:
    student = [maps(3, 8, 8), maps(4, 4, 4)]
    teacher = [maps(6, 4, 4), maps(5, 4, 4)]  # the first pair differs in size: the student's is pooled

    def attention(f: np.ndarray) -> np.ndarray:  # Zagoruyko & Komodakis: Q = mean_c |A_c|^2, vec(Q)/||vec(Q)||
        return np_normalize((f ** 2).mean(1).reshape(len(f), -1))

    expected = sum(((attention(s) - attention(t)) ** 2).mean(1) for s, t in map(np_smaller, student, teacher))
    np.testing.assert_allclose(feature_term(method("at"), student, teacher), expected, rtol=1e-5)


def test_nst_is_the_squared_mmd_with_a_polynomial_kernel() -> None:
    student, teacher = [maps(3, 4, 4)], [maps(5, 8, 8)]

    def mmd2(s: np.ndarray, t: np.ndarray) -> np.ndarray:  # per sample, channels as samples of the distribution
        s = s.reshape(len(s), s.shape[1], -1)
        t = t.reshape(len(t), t.shape[1], -1)
        s = s / np.linalg.norm(s, axis=2, keepdims=True)
        t = t / np.linalg.norm(t, axis=2, keepdims=True)
        k = lambda a, b: np.einsum("nic,njc->nij", a, b) ** 2  # noqa: E731  (x.y + 0)^2
        return k(t, t).mean((1, 2)) + k(s, s).mean((1, 2)) - 2 * k(s, t).mean((1, 2))

    s, t = np_smaller(student[0], teacher[0])
    np.testing.assert_allclose(feature_term(method("nst"), student, teacher), mmd2(s, t), rtol=1e-5, atol=1e-7)


def test_fsp_matches_the_gram_matrices_of_consecutive_maps() -> None:
    student = [maps(2, 8, 8), maps(3, 8, 8), maps(4, 4, 4)]
    teacher = [maps(2, 8, 8), maps(3, 8, 8), maps(4, 4, 4)]
    m = built("fsp", student, teacher)

    def fsp(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # G_ij = sum_{h,w} F1_i F2_j / (h w)
        a, b = np_smaller(a, b)
        return np.einsum("nihw,njhw->nji", a, b) / (a.shape[2] * a.shape[3])

    expected = sum(((fsp(student[i], student[i + 1]) - fsp(teacher[i], teacher[i + 1])) ** 2).mean((1, 2))
                   for i in range(2))
    with torch.no_grad():
        got = m.init_losses(batch(), t32(LOGITS), extras(student, teacher, stage="init")).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ConfigError, match="same channels"):
        built("fsp", student, [maps(2, 8, 8), maps(5, 8, 8), maps(4, 4, 4)])


def test_fitnet_is_the_mse_of_the_regressed_hint() -> None:
    student, teacher = [maps(3, 8, 8)], [maps(5, 4, 4)]
    m = built("fitnet", student, teacher)
    with torch.no_grad():
        regressed = m.modules["regressor"](t32(student[0])).numpy()
    assert regressed.shape == teacher[0].shape  # stride-2 conv onto the teacher's map (s_H = 2 t_H)
    expected = ((regressed - teacher[0]) ** 2).reshape(B, -1).mean(1)
    np.testing.assert_allclose(feature_term(m, student, teacher), expected, rtol=1e-5)
    with torch.no_grad():  # the hint stage (--init-epochs) trains on the same hint loss alone
        stage = m.init_losses(batch(), t32(LOGITS), extras(student, teacher, stage="init")).numpy()
    np.testing.assert_allclose(stage, expected, rtol=1e-5)


def test_vid_is_the_gaussian_negative_log_likelihood() -> None:
    student, teacher = [maps(3, 4, 4), maps(2, 4, 4)], [maps(4, 8, 8), maps(3, 4, 4)]
    m = built("vid", student, teacher)
    expected = np.zeros(B)
    for head, s, t in zip(m.modules["heads"].heads, student, teacher):
        s, t = np_smaller(s, t)
        with torch.no_grad():
            mu = head.regressor(t32(s)).numpy()
        alpha = head.log_scale.detach().numpy()
        var = (np.log1p(np.exp(alpha)) + 1e-5).reshape(1, -1, 1, 1)  # softplus
        np.testing.assert_allclose(var.ravel(), 5.0, rtol=1e-5)  # the authors' initial variance
        expected += (0.5 * ((mu - t) ** 2 / var + np.log(var))).reshape(B, -1).mean(1)
    np.testing.assert_allclose(feature_term(m, student, teacher), expected, rtol=1e-5)


def test_ab_is_the_margin_loss_on_the_side_of_the_teachers_activation() -> None:
    student = [maps(3, 8, 8), maps(4, 4, 4), maps(4, 2, 2)]
    teacher = [maps(3, 8, 8), maps(4, 4, 4), maps(4, 2, 2)]  # same shapes: the connector is the identity
    m = built("ab", student, teacher)
    expected = np.zeros(B)
    for i, (s, t) in enumerate(zip(student, teacher)):
        weight = 2.0 ** (i - 2)  # 1/4, 1/2, 1: the deepest pair weighs most
        # Heo et al.: push s to be >= m where the teacher's neuron is active, <= -m where it is not
        loss = np.where(t > 0, np.maximum(1.0 - s, 0) ** 2, np.maximum(s + 1.0, 0) ** 2)
        expected += weight * 3 / 1000 * loss.reshape(B, -1).sum(1)
    with torch.no_grad():
        got = m.init_losses(batch(), t32(LOGITS), extras(student, teacher, stage="init")).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # ab's training after its stage is r*CE + a*KD only (RepDistiller)
    np.testing.assert_allclose(m.losses(batch(), t32(LOGITS), extras(student, teacher)).numpy(), hard_ce(),
                               rtol=1e-5)


def test_ft_paraphraser_reconstruction_and_factor_loss() -> None:
    student, teacher = [maps(3, 4, 4)], [maps(4, 4, 4)]
    m = built("ft", student, teacher)
    with torch.no_grad():
        rec = m.modules["paraphraser"](t32(teacher[0])).numpy()
        factor_s = m.modules["translator"](t32(student[0])).numpy()
        factor_t = m.modules["paraphraser"].encoder(t32(teacher[0])).numpy()
        stage = m.init_losses(batch(), t32(LOGITS), extras(student, teacher, stage="init")).numpy()
    assert factor_s.shape == factor_t.shape == (B, 2, 4, 4)  # rate k = 0.5 of the teacher's 4 channels
    np.testing.assert_allclose(stage, ((rec - teacher[0]) ** 2).reshape(B, -1).mean(1), rtol=1e-5)

    def factor(f: np.ndarray) -> np.ndarray:
        return np_normalize((f ** 2).mean(1).reshape(len(f), -1))

    expected = np.abs(factor(factor_s) - factor(factor_t)).mean(1)
    np.testing.assert_allclose(feature_term(m, student, teacher), expected, rtol=1e-5)


# --------------------------------------------------------------------------- relational (batch) terms

def test_sp_is_the_frobenius_distance_of_the_normalized_similarity_matrices() -> None:
    student, teacher = [maps(3, 2, 2)], [maps(5, 4, 4)]
    m = method("sp")

    def similarity(f: np.ndarray) -> np.ndarray:
        q = f.reshape(B, -1)
        return np_normalize(q @ q.T)  # G = Q Q^T, each row L2-normalised

    term = ((similarity(teacher[0]) - similarity(student[0])) ** 2).sum() / B ** 2
    with torch.no_grad():
        out = m.feature_losses(batch(), extras(student, teacher))
    assert isinstance(out, Losses) and np.all(out.per_sample.numpy() == 0)
    np.testing.assert_allclose(out.batch.item(), term, rtol=1e-5)


def test_rkd_is_25_distance_plus_50_angle_huber_losses() -> None:
    student, teacher = [maps(6)], [maps(9)]

    def huber(a: np.ndarray, b: np.ndarray) -> float:
        d = np.abs(a - b)
        return float(np.where(d < 1, 0.5 * d ** 2, d - 0.5).mean())

    def distances(e: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(e[:, None] - e[None], axis=2)
        return d / d[~np.eye(len(e), dtype=bool)].mean()  # mu: the mean over distinct pairs

    def angles(e: np.ndarray) -> np.ndarray:  # cos of the angle at j between e_i and e_k, all triplets
        diff = e[None, :, :] - e[:, None, :]  # [j, i] = e_i - e_j
        unit = diff / np.maximum(np.linalg.norm(diff, axis=2, keepdims=True), 1e-12)
        return np.einsum("jid,jkd->jik", unit, unit).ravel()

    s, t = student[0], teacher[0]
    term = 25 * huber(distances(s), distances(t)) + 50 * huber(angles(s), angles(t))
    with torch.no_grad():
        out = method("rkd").feature_losses(batch(), extras(student, teacher))
    np.testing.assert_allclose(out.batch.item(), term, rtol=1e-4)


def test_pkt_is_the_kl_of_the_cosine_similarity_distributions() -> None:
    student, teacher = [maps(6)], [maps(9)]
    eps = 1e-7

    def probabilities(f: np.ndarray) -> np.ndarray:
        f = f / (np.linalg.norm(f, axis=1, keepdims=True) + eps)
        k = (f @ f.T + 1) / 2  # cosine similarity kernel scaled to [0, 1]
        return k / k.sum(1, keepdims=True)  # p_{j|i}

    p_s, p_t = probabilities(student[0]), probabilities(teacher[0])
    term = (p_t * np.log((p_t + eps) / (p_s + eps))).mean()
    with torch.no_grad():
        out = method("pkt").feature_losses(batch(), extras(student, teacher))
    np.testing.assert_allclose(out.batch.item(), term, rtol=1e-4)


def test_cc_correlates_consecutive_embedding_differences() -> None:
    student, teacher = [maps(6)], [maps(9)]
    m = built("cc", student, teacher)
    emb = m.modules["embed"]
    w_s, b_s = emb.student.weight.detach().numpy(), emb.student.bias.detach().numpy()
    w_t, b_t = emb.teacher.weight.detach().numpy(), emb.teacher.bias.detach().numpy()
    delta = np.abs((student[0] @ w_s.T + b_s) - (teacher[0] @ w_t.T + b_t))
    assert delta.shape == (B, 6)  # --feat-dim
    term = (delta[:-1] * delta[1:]).sum(1).mean()
    with torch.no_grad():
        out = m.feature_losses(batch(), extras(student, teacher))
    np.testing.assert_allclose(out.batch.item(), term, rtol=1e-5)


@pytest.mark.parametrize("name, shape", [("sp", (3, 2, 2)), ("rkd", (6,)), ("pkt", (6,)), ("cc", (6,))])
def test_a_relational_term_on_one_sample_is_zero_not_nan(name: str, shape: tuple[int, ...]) -> None:
    one = [maps(*shape)[:1]]
    m = built(name, one, one)
    ex = Extras(student_features=[t32(one[0]).requires_grad_()], teacher_features=[t32(one[0])])
    out = m.feature_losses(batch(1), ex)
    assert out.batch.item() == 0 and torch.isfinite(out.per_sample).all()
    out.batch.backward()  # still attached to the features (and the side modules): DDP's buckets stay complete
    assert torch.isfinite(ex.student_features[0].grad).all()


def test_a_batch_term_is_spread_over_the_share_so_the_global_mean_weighs_each_share_by_its_size() -> None:
    """What the trainer computes from a relational method on 2 processes: sum of everything / global count."""
    student, teacher = [maps(6)], [maps(9)]
    m = method("rkd")
    shares = [slice(0, 3), slice(3, 5)]
    global_sum = 0.0
    for share in shares:
        ex = Extras(student_features=[t32(student[0][share])], teacher_features=[t32(teacher[0][share])])
        with torch.no_grad():
            out = m.feature_losses(batch(share.stop - share.start), ex)
            global_sum += total_losses(out).sum().item()
            if share.start == 0:
                first = out.batch.item()
            else:
                second = out.batch.item()
    np.testing.assert_allclose(global_sum / B, (3 * first + 2 * second) / B, rtol=1e-6)


# --------------------------------------------------------------------------- the combination r, a, b

def hard_ce() -> np.ndarray:
    z = LOGITS - LOGITS.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -log_p[np.arange(B), LABELS]


def test_a_feature_method_adds_b_times_its_term_to_r_ce_plus_a_kd() -> None:
    student, teacher = [maps(3, 4, 4)] * 3, [maps(3, 4, 4)] * 3
    r, a, b, temperature = 0.5, 0.7, 1000.0, 4.0
    m = method("at", ce_weight=r, kd_weight=a, feature_weight=b, temperature=temperature)
    z_s, z_t = LOGITS / temperature, TEACHER_LOGITS[0] / temperature
    p_t = np.exp(z_t) / np.exp(z_t).sum(1, keepdims=True)
    log_p_s = z_s - np.log(np.exp(z_s).sum(1, keepdims=True))
    kd = (p_t * (np.log(p_t) - log_p_s)).sum(1) * temperature ** 2
    expected = r * hard_ce() + a * kd + b * feature_term(method("at"), student, teacher)
    with torch.no_grad():
        got = m.losses(batch(), t32(LOGITS), extras(student, teacher)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_every_feature_method_is_tested_here_and_has_repdistillers_defaults() -> None:
    feature = {name for name in METHODS.names() if issubclass(METHODS.get(name), FeatureMethod)}
    aliases = {"hint": "fitnet", "attention": "at", "similarity": "sp", "correlation": "cc", "abound": "ab",
               "factor": "ft"}
    # crd (its memory, NCE loss and defaults) is tested in test_crd.py and test_memory_bank.py
    assert feature - set(aliases) - {"crd"} == {"fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp",
                                                "nst"}
    assert all(METHODS.get(alias) is METHODS.get(name) for alias, name in aliases.items())
    scripts = {"fitnet": 100, "at": 1000, "sp": 3000, "cc": 0.02, "vid": 1, "rkd": 1, "pkt": 30000, "ft": 200,
               "nst": 50, "ab": 0, "fsp": 0}  # RepDistiller's -b (ab, fsp: no term after their stage)
    for name, beta in scripts.items():
        defaults = {**{"ce_weight": 0.1, "kd_weight": 0.9, "feature_weight": 0.0, "init_epochs": 0},
                    **METHODS.get(name).defaults}
        assert (defaults["ce_weight"], defaults["kd_weight"], defaults["feature_weight"]) == (1.0, 0.0, beta), name
        assert defaults["init_epochs"] == (30 if name in ("ab", "ft", "fsp") else 0), name


# --------------------------------------------------------------------------- config checks

@pytest.mark.parametrize("overrides, expected", [
    (["supervision.method=at"], "--method at needs --teacher CKPT"),
    (["supervision.method=kd", "supervision.teacher=t.pth", "supervision.feature_weight=3"],
     "--feature-weight weighs a feature method's term; --method kd has none"),
    (["supervision.method=at", "supervision.teacher=t.pth", "supervision.init_epochs=2"],
     "--init-epochs 2: --method at has no first stage"),
    (["supervision.method=fitnet", "supervision.teacher=t.pth", "train.deepspeed=z.json"],
     "--deepspeed trains one model with one optimizer, and --method fitnet also trains its side modules"),
    (["supervision.method=fsp", "supervision.teacher=t.pth", "train.deepspeed=z.json"],
     "its first stage's optimizer: train it with DDP (drop --deepspeed) or with --init-epochs 0"),
    (["supervision.method=rkd", "supervision.teacher=t.pth", "speed.compile=true"],
     "--compile: --method rkd reads the student's inner features through forward hooks"),
    (["supervision.method=ab", "supervision.teacher=t.pth", "supervision.feature_weight=1"],
     "--feature-weight: --method ab's feature loss is its first stage's"),
    (["supervision.method=sp", "supervision.teacher=a.pth:b.pth"], "--method sp compares the features of one teacher"),
    (["supervision.method=sl", "supervision.teacher=t.pth", "augment.lw_mix=1,0,1"],
     "--lw-mix needs --method kd (seed 001's KD losses) or a feature method, not --method sl"),
    (["supervision.method=ce", "supervision.student_features=[layer3]"],
     "--student-features/--teacher-features choose a feature method's layers; --method ce compares none"),
])
def test_feature_method_settings_that_cannot_run_fail_in_one_line(overrides: list[str], expected: str) -> None:
    from cg_train.checks import check_names
    from cg_train.config import build_config

    with pytest.raises(ConfigError) as err:
        check_names(build_config(overrides=overrides))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_defaults_are_resolved_into_the_config_and_explicit_values_kept() -> None:
    from cg_train.checks import check_names
    from cg_train.config import build_config

    cfg = check_names(build_config(overrides=["supervision.method=ft", "supervision.teacher=t.pth"]))
    assert (cfg.supervision.ce_weight, cfg.supervision.kd_weight, cfg.supervision.feature_weight,
            cfg.supervision.init_epochs) == (1.0, 0.0, 200.0, 30)
    cfg = check_names(build_config(overrides=["supervision.method=kd", "supervision.teacher=t.pth"]))
    assert (cfg.supervision.ce_weight, cfg.supervision.kd_weight, cfg.supervision.feature_weight) == (0.1, 0.9, 0.0)
    cfg = check_names(build_config(overrides=["supervision.method=sp", "supervision.teacher=t.pth",
                                              "supervision.kd_weight=0.9", "supervision.ce_weight=0.1"]))
    assert (cfg.supervision.ce_weight, cfg.supervision.kd_weight, cfg.supervision.feature_weight) == (0.1, 0.9, 3000)


# --------------------------------------------------------------------------- feature taps

def cifar_resnet_manual(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """cifar_resnet8's forward written out by hand, keeping every stage's output and pre-activation."""
    out: dict[str, torch.Tensor] = {}
    h = model.stem(x)
    out["stem"] = h
    for i, block in enumerate(model.layers):
        inner = F.relu(block.bn1(block.conv1(h)))
        pre = block.bn2(block.conv2(inner)) + block.shortcut(h)
        h = F.relu(pre)
        out[f"pre{i}"], out[f"post{i}"] = pre, h
    out["embedding"] = h.mean((2, 3))
    out["logits"] = model.fc(out["embedding"])
    return out


def test_taps_return_the_named_tensors_of_a_cifar_resnet_as_its_manual_forward() -> None:
    torch.manual_seed(0)
    model = build_model("cifar_resnet8", 10).eval()
    x = torch.randn(3, 3, 16, 16)
    refs = ["feat[:]", "preact[1:-1]", "layers.1:in", "layers.2.relu_1", "logits"]
    taps = FeatureTaps(model, refs, "test")
    assert taps.refs == ["stem", "layers.0", "layers.1", "layers.2", "embedding", "layers.0.add", "layers.1.add",
                         "layers.2.add", "layers.1:in", "layers.2.relu_1", "logits"]
    with torch.no_grad():
        got = taps.probe(x)
        want = cifar_resnet_manual(model, x)
    expected = [want["stem"], want["post0"], want["post1"], want["post2"], want["embedding"], want["pre0"],
                want["pre1"], want["pre2"], want["post0"], want["post2"], want["logits"]]
    for ref, g, e in zip(taps.refs, got, expected):
        torch.testing.assert_close(g, e, msg=ref)
    assert (want["pre2"] < 0).any()  # a real pre-activation: the ReLU's inplace op did not overwrite the capture


def test_taps_of_a_torchvision_resnet_and_vgg_match_their_manual_forward() -> None:
    torch.manual_seed(0)
    resnet = build_model("resnet18", 10).eval()
    x = torch.randn(2, 3, 64, 64)
    taps = FeatureTaps(resnet, ["feat[1:]", "preact[4]"], "test")
    with torch.no_grad():
        got = taps.probe(x)
        h = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        stages = []
        for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            for block in layer[:-1]:
                h = block(h)
            last = layer[-1]
            identity = last.downsample(h) if last.downsample is not None else h
            pre = last.bn2(last.conv2(last.relu(last.bn1(last.conv1(h))))) + identity
            h = F.relu(pre)
            stages.append(h)
    for g, e in zip(got, [*stages, h.mean((2, 3)), pre]):
        torch.testing.assert_close(g, e)
    vgg = build_model("vgg13_bn", 10).eval()
    taps = FeatureTaps(vgg, ["feat[0]", "preact[1]", "feat[1]"], "test")
    with torch.no_grad():
        got = taps.probe(x)
        f = vgg.features
        block0 = f[:6](x)  # conv-bn-relu x2
        pre1 = f[7:11](f[6](block0))  # max-pool, conv-bn-relu, conv-bn
        torch.testing.assert_close(got[0], block0)
        torch.testing.assert_close(got[1], pre1)
        torch.testing.assert_close(got[2], F.relu(pre1))


def test_a_pre_activation_only_functions_compute_is_replayed_from_hooked_operands() -> None:
    """ShuffleNet V1's unit ends in ``F.relu(out + res)``: no module outputs or consumes the sum."""
    torch.manual_seed(0)
    model = build_model("cifar_shufflenetv1", 10).eval()
    x = torch.randn(2, 3, 16, 16)
    taps = FeatureTaps(model, ["preact[1]"], "test")
    unit = model.features[4]
    seen: dict[str, torch.Tensor] = {}
    handle = unit.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    with torch.no_grad():
        (got,) = taps.probe(x)
        handle.remove()
        # the unit's arithmetic written out: grouped 1x1, channel shuffle, depthwise 3x3, grouped 1x1, + input
        assert unit.stride == 1 and unit.first_groups == 3
        out = unit.conv3(unit.conv2(channel_shuffle(unit.conv1(seen["x"]), 3)))
    torch.testing.assert_close(got, out + seen["x"])
    assert (got < 0).any()


def test_taps_capture_nothing_unarmed_or_without_gradients_and_leave_no_hook_behind() -> None:
    model = build_model("wrn_16_2", 10)
    hooks = lambda: sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())  # noqa: E731
    student = FeatureTaps(model, ["preact[1:-1]", "embedding"], "test", arm="grad")
    assert hooks() > 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)  # an evaluation pass
    assert student._values == {}
    feats = student.probe(x)
    torch.testing.assert_close(feats[0], model.blocks[2].bn1(
        model.blocks[1](model.blocks[0](model.stem(x)))))  # RepDistiller's WRN preact: next stage's BN
    model(x)  # a training forward (gradients on) is captured
    assert len(student.read()) == 4
    student.remove()
    assert hooks() == 0


def test_unknown_references_fail_in_one_line_with_a_suggestion() -> None:
    model = build_model("cifar_resnet8", 10)
    for ref, expected in [("layers.9", "has no module or FX node 'layers.9'"),
                          ("feat[7]", "'feat[7]' is out of range: CifarResNet has 5 feat features"),
                          ("layers.1.ad", "did you mean layers.1.add")]:
        with pytest.raises(ConfigError) as err:
            FeatureTaps(model, [ref], "--student-features")
        assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(ConfigError, match="does not have: name its modules"):
        FeatureTaps(build_model("inception_v3", 10), ["feat[1]"], "--teacher-features")
