"""matbp.models: the classification networks of paper §6.1 (DeepO2P, DeepO2P-FC, baseline).

Kept fast for a small CPU machine: batch 1–2, eval mode / no_grad where
possible. VGG-16 is exercised at 64×64 (the paper's sizes, AlexNet at
227×227 → conv5 256×13×13, are checked with AlexNet), and the big fully
connected layers are shrunk with ``fc_dim`` where only shapes matter.
"""

import math

import pytest
import torch

import matbp
from matbp.models import (
    BACKBONES,
    MODELS,
    POOLINGS,
    Baseline,
    DeepO2P,
    DeepO2PFC,
    UpperTriangle,
    build_backbone,
    build_model,
    build_pooling,
    load_weights,
)
from matbp.models.pooling import covariance, isqrt_newton_schulz

SIZES = {"small": 32, "alexnet": 227, "vgg16": 64}


def _needs(backbone):
    if backbone != "small":
        pytest.importorskip("torchvision")


def _images(backbone, n=1, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = SIZES[backbone]
    return torch.randn(n, 3, s, s, generator=g, dtype=torch.float64).to(dtype)


def _spd(n, lo, hi, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.linspace(lo, hi, n, dtype=torch.float64)
    return (q * lam) @ q.mT


def test_constants():
    assert MODELS == ("baseline", "deepo2p", "deepo2p-fc")
    assert BACKBONES == ("small", "alexnet", "vgg16")
    assert POOLINGS == ("matbp", "torch", "isqrt")


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", MODELS)
def test_output_shapes(name, backbone):
    _needs(backbone)
    # fc_dim shrunk: the default 4096-wide layers only cost build time here
    model = build_model(name, backbone, 7, fc_dim=32).eval()
    x = _images(backbone, 2)
    with torch.no_grad():
        feats = model.backbone(x)
        y = model(x)
    assert feats.shape[:2] == (2, model.backbone.out_channels)
    assert y.shape == (2, 7) and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert model.pretrained_parameter_names == set()
    assert isinstance(model, {"baseline": Baseline, "deepo2p": DeepO2P, "deepo2p-fc": DeepO2PFC}[name])


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_poolings_on_small(pooling, dtype):
    model = build_model("deepo2p", "small", 5, pooling=pooling).to(dtype).eval()
    with torch.no_grad():
        y = model(_images("small", 2, dtype))
    assert y.shape == (2, 5) and y.dtype == dtype and torch.isfinite(y).all()
    assert model.head.dim == 64 and model.head.classifier.in_features == 64 * 65 // 2
    f = torch.rand(2, 4, 3, 3, dtype=dtype)
    assert build_pooling(pooling, 1e-3)(f).shape == (2, 4, 4)


def test_small_backbone_architecture():
    bb = build_backbone("small")
    assert bb.out_channels == 64
    assert bb(torch.zeros(1, 3, 32, 32)).shape == (1, 64, 16, 16)
    kinds = {type(m).__name__ for m in bb.modules()}
    assert not any("Norm" in k for k in kinds), kinds  # per-sample computation (data-parallel exactness)
    # per-sample: the batch result equals the per-image results
    model = build_model("deepo2p", "small", 3).double().eval()
    x = _images("small", 2, torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), torch.cat([model(x[:1]), model(x[1:])]), rtol=1e-12, atol=1e-12)


def test_alexnet_paper_sizes():
    pytest.importorskip("torchvision")
    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        deep = build_backbone("alexnet", last_pool=False)
        assert deep.out_channels == 256 and deep(x).shape == (1, 256, 13, 13)  # conv5 / ReLU-5, paper §6.1
        assert build_backbone("alexnet", last_pool=True)(x).shape == (1, 256, 6, 6)
    model = DeepO2P("alexnet", 80)
    assert model.head.dim == 256 and model.head.classifier.in_features == 256 * 257 // 2 == 32896
    vgg = build_backbone("vgg16")
    assert vgg.out_channels == 512 and isinstance(vgg.features[-1], torch.nn.ReLU)
    assert len(vgg.features) == 30  # VGG-16's 31 layers without the last max-pool


def test_upper_triangle():
    g = torch.Generator().manual_seed(1)
    for d in (1, 2, 5):
        a = torch.randn(3, d, d, generator=g, dtype=torch.float64)
        S = a + a.mT
        v = UpperTriangle()(S)
        assert v.shape == (3, d * (d + 1) // 2) == (3, UpperTriangle.output_dim(d))
        torch.testing.assert_close(v.norm(dim=-1), torch.linalg.matrix_norm(S), rtol=1e-12, atol=1e-12)
        r, c = torch.triu_indices(d, d)
        scale = torch.where(r == c, 1.0, math.sqrt(2)).to(S.dtype)
        torch.testing.assert_close(v, S[:, r, c] * scale)
    assert UpperTriangle()(torch.eye(3, dtype=torch.float32)).dtype == torch.float32


def test_isqrt_approximates_sqrtm():
    A = _spd(4, 1.0, 2.0)
    err = (isqrt_newton_schulz(A, 5) - matbp.sym_fn(A, "sqrt")).abs().max().item()
    assert err < 1e-3
    A8 = _spd(8, 1.0, 2.0, seed=2)  # more iterations converge to the square root
    torch.testing.assert_close(isqrt_newton_schulz(A8, 10), matbp.sym_fn(A8, "sqrt"), rtol=1e-10, atol=1e-10)
    # the pooling module applies it to the shared covariance A
    f = torch.rand(2, 3, 4, 4, dtype=torch.float64) + 1.0
    A = covariance(f, 1e-3)
    torch.testing.assert_close(build_pooling("isqrt", 1e-3)(f), isqrt_newton_schulz(A, 5))


def test_torch_pooling_equals_matbp():
    g = torch.Generator().manual_seed(3)
    f = torch.randn(2, 6, 5, 5, generator=g, dtype=torch.float64)  # 25 positions ≫ 6 channels
    a = build_pooling("torch", 1e-3)(f)
    b = build_pooling("matbp", 1e-3)(f)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # and both are the log of the same A the isqrt pooling uses
    torch.testing.assert_close(b, matbp.sym_fn(covariance(f, 1e-3), "log"), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "name,pooling,reduce_dim",
    [
        ("baseline", "matbp", None),
        ("deepo2p", "matbp", None),
        ("deepo2p", "torch", 8),
        ("deepo2p", "isqrt", 8),
        ("deepo2p-fc", "matbp", 8),
    ],
)
def test_gradients_reach_every_parameter(name, pooling, reduce_dim):
    torch.manual_seed(0)
    model = build_model(name, "small", 4, pooling=pooling, reduce_dim=reduce_dim, fc_dim=16, dropout=0.0)
    model(_images("small", 2)).sum().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


def test_reduce_dim_sets_d():
    model = build_model("deepo2p", "small", 3, reduce_dim=12)
    assert model.head.dim == 12
    assert model.head.reduce[0].out_channels == 12 and model.head.reduce[0].kernel_size == (1, 1)
    assert model.head.classifier.in_features == 12 * 13 // 2
    with torch.no_grad():
        assert model.head.pooling(model.head.reduce(model.backbone(_images("small")))).shape == (1, 12, 12)
    fc = build_model("deepo2p-fc", "small", 3, reduce_dim=12, fc_dim=20)
    linears = [m for m in fc.head.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(78, 20), (20, 20), (20, 3)]
    assert [type(m).__name__ for m in fc.head.classifier] == [
        "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"
    ]


def test_weights_round_trip_alexnet(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(weights=None).eval()
    path = tmp_path / "alexnet.pth"
    torch.save(tv.state_dict(), path)
    conv_names = {f"backbone.features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}

    deep = build_model("deepo2p", "alexnet", 80, weights=str(path))
    assert deep.pretrained_parameter_names == conv_names
    for k, v in tv.features.state_dict().items():
        assert torch.equal(deep.backbone.features.state_dict()[k], v), k

    base = build_model("baseline", "alexnet", 80, weights=path)
    fc_names = {f"head.classifier.{i}.{p}" for i in (1, 4) for p in ("weight", "bias")}
    assert base.pretrained_parameter_names == conv_names | fc_names  # not the 1000-class layer
    assert torch.equal(base.head.classifier[4].weight, tv.classifier[4].weight)
    assert not torch.equal(base.head.classifier[6].weight[:80], tv.classifier[6].weight[:80])

    # 1000 classes: the head is exactly torchvision's, everything loads, same outputs
    full = Baseline("alexnet", 1000, weights=path).eval()
    assert full.pretrained_parameter_names == {n for n, _ in full.named_parameters()}
    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        torch.testing.assert_close(full(x), tv(x))


def test_weights_round_trip_small_wrapped(tmp_path):
    src = build_model("baseline", "small", 10)
    state = {"module.features." + k: v for k, v in src.backbone.features.state_dict().items()}
    state["module.classifier.weight"] = src.head.classifier.weight.detach().clone()
    state["module.classifier.bias"] = src.head.classifier.bias.detach().clone()
    path = tmp_path / "small.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    deep = build_model("deepo2p-fc", "small", 10, weights=path, fc_dim=16)
    assert deep.pretrained_parameter_names == {"backbone." + n for n, _ in src.backbone.named_parameters()}
    base = build_model("baseline", "small", 10, weights=path)
    assert base.pretrained_parameter_names == {n for n, _ in base.named_parameters()}
    for (n, a), (_, b) in zip(base.named_parameters(), src.named_parameters()):
        assert torch.equal(a, b), n
    torch.save({"model": state}, path)
    assert build_model("deepo2p", "small", 10, weights=path).pretrained_parameter_names


def test_wrong_weights_fail_clearly(tmp_path):
    pytest.importorskip("torchvision")
    vgg = build_backbone("vgg16")
    vgg_path = tmp_path / "vgg16.pth"
    torch.save({"features." + k: v for k, v in vgg.features.state_dict().items()}, vgg_path)
    with pytest.raises(ValueError) as info:
        build_model("deepo2p", "alexnet", 10, weights=vgg_path)
    msg = str(info.value)
    assert str(vgg_path) in msg and "'alexnet'" in msg
    assert "features.0.weight (64, 3, 3, 3) vs (64, 3, 11, 11)" in msg
    assert "unexpected features.2.weight (64, 64, 3, 3)" in msg

    alex = build_backbone("alexnet")
    state = {"features." + k: v for k, v in alex.features.state_dict().items() if not k.startswith("10.")}
    cut_path = tmp_path / "truncated.pth"
    torch.save(state, cut_path)
    with pytest.raises(ValueError, match=r"missing features\.10\.weight \(256, 256, 3, 3\)"):
        build_model("baseline", "alexnet", 10, weights=cut_path, fc_dim=16)

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        build_model("deepo2p", "small", 10, weights=junk)
    with pytest.raises(FileNotFoundError):
        build_model("deepo2p", "small", 10, weights=tmp_path / "absent.pth")
    model = build_model("deepo2p", "small", 10)
    own = tmp_path / "own.pth"
    torch.save(model.state_dict(), own)
    with pytest.raises(ValueError, match="load_state_dict"):
        load_weights(model, own)


def test_unknown_names_list_choices():
    with pytest.raises(ValueError, match=r"model name 'resnet'.*'baseline', 'deepo2p', 'deepo2p-fc'"):
        build_model("resnet", "small", 10)
    with pytest.raises(ValueError, match=r"backbone 'vgg19'.*'small', 'alexnet', 'vgg16'"):
        build_model("deepo2p", "vgg19", 10)
    with pytest.raises(ValueError, match=r"pooling 'svd'.*'matbp', 'torch', 'isqrt'"):
        build_model("deepo2p", "small", 10, pooling="svd")
    with pytest.raises(ValueError, match="pooling"):
        Baseline("small", 10, pooling="svd")
    with pytest.raises(ValueError, match="backbone"):
        DeepO2PFC("resnet", 10)
    with pytest.raises(ValueError, match="pooling"):
        build_pooling("log")
    with pytest.raises(ValueError, match="backbone"):
        build_backbone("tiny")
    for kwargs in ({"eps": 0.0}, {"eps": float("nan")}, {"reduce_dim": 0}, {"fc_dim": -1}, {"dropout": 1.0}):
        with pytest.raises(ValueError):
            build_model("deepo2p-fc", "small", 10, **kwargs)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("deepo2p", "small", 0)
