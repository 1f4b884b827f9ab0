"""matbp.models.DeepNCuts: the segmentation network of paper §6.2.

Kept fast for a small CPU machine: small images (small backbone 32×48,
AlexNet 99×131, VGG-16 64×64 with a reduced head), batch 1–2.
"""

import math

import pytest
import torch

from matbp.models import NCUTS_BACKBONES, DeepNCuts
from matbp.nn import NormalizedCutsLoss

SIZES = {"small": (32, 48), "alexnet": (99, 131), "vgg16": (64, 64)}
FEEDS = {"small": (64, 2), "alexnet": (256, None), "vgg16": (1024, 8)}  # channels, feed stride (when exact)


def _needs(backbone):
    if backbone != "small":
        pytest.importorskip("torchvision")


def _model(backbone, **kw):
    if backbone == "vgg16":
        kw.setdefault("hidden", 32)  # the default 1024 only costs time here
    return DeepNCuts(backbone, **kw)


def _images(n, size, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *size, generator=g, dtype=torch.float64).to(dtype)


def _segments(n, size):
    """A synthetic 3-segment ground truth (N, H, W): left, lower right, upper right."""
    H, W = size
    labels = torch.zeros(n, H, W, dtype=torch.long)
    labels[:, H // 2 :, W // 3 :] = 1
    labels[:, : H // 2, 2 * W // 3 :] = 2
    return labels


def test_constants_and_defaults():
    assert NCUTS_BACKBONES == ("small", "alexnet", "vgg16")
    m = DeepNCuts("small")
    assert (m.feature_dim, m.hidden, m.stride, m.feed_channels) == (20, 64, 1, 64)
    assert m.head.conv1.kernel_size == (1, 1) and m.head.conv2.kernel_size == (1, 1)
    assert m.head.dropout.p == 0.25 and isinstance(m.head.softplus, torch.nn.Softplus)
    assert m.Lambda() is None and m.lambda_raw is None and m.last_grid is None
    assert m.pretrained_parameter_names == set()


@pytest.mark.parametrize("bad", [
    dict(backbone="resnet"), dict(feature_dim=0), dict(hidden=-1), dict(stride=0), dict(stride=1.5),
    dict(dropout=1.0), dict(learn_lambda=1),
])
def test_bad_arguments(bad):
    kw = dict(backbone="small")
    kw.update(bad)
    with pytest.raises(ValueError, match="DeepNCuts"):
        DeepNCuts(kw.pop("backbone"), **kw)


def test_bad_images():
    with pytest.raises(ValueError, match="DeepNCuts"):
        DeepNCuts("small")(torch.zeros(1, 1, 8, 8))
    with pytest.raises(TypeError, match="DeepNCuts"):
        DeepNCuts("small")([[0.0]])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("backbone", NCUTS_BACKBONES)
def test_shapes_and_loss_labels(backbone, stride):
    _needs(backbone)
    torch.manual_seed(0)
    model = _model(backbone, stride=stride).eval()
    H, W = SIZES[backbone]
    n = 2 if backbone == "small" else 1
    x = _images(n, (H, W))
    with torch.no_grad():
        feeds = model.feeds(x)
        X = model(x)
    channels, feed_stride = FEEDS[backbone]
    assert feeds.shape[:2] == (n, channels) and model.feed_channels == channels
    if feed_stride:
        assert feeds.shape[-2:] == (H // feed_stride, W // feed_stride)
    h, w = -(-H // stride), -(-W // stride)
    assert model.last_grid == model.grid_size(H, W) == (h, w)
    assert X.shape == (n, h * w, 20) and X.dtype == torch.float32 and X.is_contiguous()
    assert torch.isfinite(X).all() and (X > 0).all()  # softplus: strictly positive features
    labels = _segments(n, (H, W))
    flat = model.loss_labels(labels)
    assert flat.shape == (n, h * w) and flat.dtype == torch.long
    assert torch.equal(flat, labels[:, ::stride, ::stride].reshape(n, -1))
    J = NormalizedCutsLoss("j2")(X, flat)  # the shapes the loss wants
    assert torch.isfinite(J)


@pytest.mark.parametrize("size", [(33, 47), (48, 30)], ids=["landscape-odd", "portrait"])
def test_strided_grid_is_the_full_resolution_grid_subsampled(size):
    """At stride s the features are exactly the full-resolution features at
    pixels (s·i, s·j), which are the pixels loss_labels returns."""
    torch.manual_seed(0)
    full = DeepNCuts("small").double().eval()
    strided = DeepNCuts("small", stride=3).double().eval()
    strided.load_state_dict(full.state_dict())
    x = _images(1, size, torch.float64)
    with torch.no_grad():
        X1 = full(x)
        X3 = strided(x)
    H, W = size
    index = torch.arange(H * W).reshape(1, H, W)
    pixels = strided.loss_labels(index)[0]
    assert pixels.shape[0] == X3.shape[1] == math.prod(strided.last_grid)
    torch.testing.assert_close(X3[0], X1[0, pixels], rtol=0, atol=0)
    rows, cols = pixels // W, pixels % W
    assert (rows % 3 == 0).all() and (cols % 3 == 0).all()
    # row-major flattening: the map's (i, j) entry is row i·w + j
    with torch.no_grad():
        maps = strided.forward_map(x)
    h, w = strided.last_grid
    torch.testing.assert_close(X3[0, 1 * w + 2], maps[0, :, 1, 2], rtol=0, atol=0)


def test_loss_labels_checks_the_grid():
    model = DeepNCuts("small", stride=2).eval()
    with torch.no_grad():
        model(_images(1, (32, 48)))
    with pytest.raises(ValueError, match="last forward"):
        model.loss_labels(torch.zeros(1, 48, 32, dtype=torch.long))  # transposed
    with pytest.raises(ValueError, match="integer"):
        model.loss_labels(torch.zeros(1, 32, 48))
    assert model.loss_labels(torch.zeros(32, 48, dtype=torch.int32)).shape == (16 * 24,)


def test_float64_and_batch_independence():
    torch.manual_seed(0)
    model = DeepNCuts("small").double().eval()
    x = _images(2, (48, 32), torch.float64)
    with torch.no_grad():
        X = model(x)
        assert X.dtype == torch.float64 and X.shape == (2, 48 * 32, 20)
        torch.testing.assert_close(X, torch.cat([model(x[:1]), model(x[1:])]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backbone", NCUTS_BACKBONES)
def test_j2_reaches_every_parameter(backbone):
    _needs(backbone)
    torch.manual_seed(0)
    model = _model(backbone, stride=2 if backbone == "alexnet" else 1).train()
    size = SIZES[backbone]
    x = _images(1, size)
    loss_fn = NormalizedCutsLoss("j2")
    J = loss_fn(model(x), model.loss_labels(_segments(1, size)), model.Lambda())
    J.backward()
    assert torch.isfinite(J) and loss_fn.last_rank.item() <= 20
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


def test_sgd_lowers_j2_on_one_image():
    torch.manual_seed(0)
    size = (32, 48)
    labels = _segments(1, size)
    g = torch.Generator().manual_seed(1)
    colours = torch.randn(3, 3, generator=g)
    x = colours[labels[0]].permute(2, 0, 1)[None] + 0.5 * torch.randn(1, 3, *size, generator=g)
    model = DeepNCuts("small", feature_dim=8, dropout=0.0)
    loss_fn = NormalizedCutsLoss("j2")
    flat = model.loss_labels(labels)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = []
    for _ in range(12):
        opt.zero_grad()
        J = loss_fn(model(x), flat)
        J.backward()
        opt.step()
        history.append(J.item())
    with torch.no_grad():
        final = loss_fn(model(x), flat).item()
    assert all(math.isfinite(v) for v in history)
    assert final < history[0] - 0.25, (history, final)


def test_learned_lambda():
    torch.manual_seed(0)
    model = DeepNCuts("small", feature_dim=6, learn_lambda=True, dropout=0.0).double()
    L = model.Lambda()
    assert L.shape == (6, 6) and L.dtype == torch.float64
    torch.testing.assert_close(L, torch.eye(6, dtype=torch.float64))  # Λ = I at initialisation
    assert "lambda_raw" in dict(model.named_parameters())
    x = _images(1, (32, 48), torch.float64)
    X = model(x)
    labels = model.loss_labels(_segments(1, (32, 48)))
    J1 = NormalizedCutsLoss("j1")(X, labels, model.Lambda())
    J1.backward()
    grad = model.lambda_raw.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 1e-8
    # J2 depends on W only through its range, which an invertible Λ does not
    # change: its gradient with respect to Λ vanishes (documented)
    model.zero_grad()
    NormalizedCutsLoss("j2")(model(x), labels, model.Lambda()).backward()
    assert model.lambda_raw.grad.abs().max() < 1e-8


def test_weights_round_trip_alexnet(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(tv.state_dict(), path)
    model = DeepNCuts("alexnet", weights=str(path), learn_lambda=True)
    conv_names = {f"backbone.features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}
    assert model.pretrained_parameter_names == conv_names
    for k, v in tv.features.state_dict().items():
        assert torch.equal(model.backbone.features.state_dict()[k], v), k
    new = {n for n, _ in model.named_parameters()} - conv_names
    assert new == {"head.conv1.weight", "head.conv1.bias", "head.conv2.weight", "head.conv2.bias", "lambda_raw"}
    # a matbp state dict restores a model built without weights
    again = DeepNCuts("alexnet", learn_lambda=True)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.head.conv1.weight, model.head.conv1.weight)
    # a file for another backbone is rejected by load_weights
    with pytest.raises(ValueError, match="does not fit backbone 'small'"):
        DeepNCuts("small", weights=path)


def test_weights_round_trip_small(tmp_path):
    torch.manual_seed(0)
    src = DeepNCuts("small")
    path = tmp_path / "small.pth"
    torch.save({"features." + k: v for k, v in src.backbone.features.state_dict().items()}, path)
    torch.manual_seed(1)
    model = DeepNCuts("small", weights=path)
    assert model.pretrained_parameter_names == {f"backbone.features.{i}.{p}" for i in range(0, 10, 2)
                                                for p in ("weight", "bias")}
    assert torch.equal(model.backbone.features[0].weight, src.backbone.features[0].weight)
