"""Convolutional backbones of the classification models (paper §6.1).

Every backbone is a :class:`Backbone`: a module holding the convolutional
stack as ``features`` (an ``nn.Sequential``, so its parameters are named
``features.<index>.weight`` exactly as in torchvision's AlexNet/VGG
checkpoints), mapping images (N, 3, H, W) to feature maps (N, C, h, w), with
``out_channels`` = C.

* ``"alexnet"``: torchvision's AlexNet convolutional stack. With
  ``last_pool=False`` (the DeepO2P setting of the paper) it stops at ReLU-5,
  *before* the last max-pool: 256×13×13 for a 227×227 input. With
  ``last_pool=True`` (the first-order baseline) it keeps the max-pool, as
  AlexNet does: 256×6×6 at 227×227.
* ``"vgg16"``: torchvision's VGG-16 (no BatchNorm) convolutional stack, again
  without (DeepO2P) or with (baseline) the final max-pool: 512×14×14 or
  512×7×7 at 224×224.
* ``"small"``: a 5-layer CNN for CPU runs on 32×32 images (see
  :func:`small_features`), 64×16×16 at 32×32; it has no pooling layer, so
  ``last_pool`` does not change it.

The torchvision architectures are instantiated with ``weights=None`` on the
meta device (nothing is downloaded, and the unused fully connected layers are
never allocated), then the kept layers are materialised and initialised
exactly as torchvision initialises them. torchvision is imported lazily, so
``"small"`` works without it.
"""

from typing import Callable, Tuple

import torch
from torch import nn

BACKBONES: Tuple[str, ...] = ("small", "alexnet", "vgg16")


class Backbone(nn.Module):
    """A convolutional stack ``features`` with ``out_channels`` output channels."""

    def __init__(self, name: str, features: nn.Sequential, out_channels: int):
        super().__init__()
        self.name = name
        self.features = features
        self.out_channels = int(out_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, out_channels={self.out_channels}"


def check_choice(value, choices, argument: str, where: str) -> str:
    """Raises ValueError naming ``argument`` and listing ``choices`` unless value is one of them."""
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{where}: unknown {argument} {value!r}; choose one of {listed}")
    return value


def small_features() -> nn.Sequential:
    """The ``small`` backbone: five 3×3 conv + ReLU layers, one of stride 2.

    3→32, 32→32, 32→64 (stride 2), 64→64, 64→64, padding 1 everywhere, so a
    32×32 image gives 64×16×16 feature maps (256 positions for a 64×64
    covariance: full rank, well posed). Receptive field 19 pixels;
    102,496 parameters, ~34 MMAC per image. No normalisation layer: every
    sample is processed independently (no BatchNorm statistics), so gradients
    averaged over data-parallel shards equal the full-batch gradient. Weights
    are He-initialised (fan-in, ReLU gain), biases zero, which keeps the
    activation scale roughly constant through depth, so the network trains
    from scratch without normalisation and the covariance of its output is
    O(1), well above ``eps``.
    """
    channels = [(3, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 64, 1)]
    layers = []
    for c_in, c_out, stride in channels:
        layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1), nn.ReLU(inplace=True)]
    features = nn.Sequential(*layers)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


def _import_torchvision(backbone: str):
    try:
        import torchvision
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"matbp.models: backbone {backbone!r} needs torchvision (pip install torchvision); "
            "the 'small' backbone does not"
        ) from e
    return torchvision


def init_alexnet_(module: nn.Module) -> None:
    """torchvision's AlexNet initialisation: PyTorch's default for every layer."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()


def init_vgg_(module: nn.Module) -> None:
    """torchvision's VGG initialisation (``init_weights=True``)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def torchvision_model(backbone: str, num_classes: int = 1000, dropout: float = 0.5) -> Tuple[nn.Module, Callable]:
    """torchvision's AlexNet / VGG-16 with ``weights=None``, built on the meta
    device (no memory, no initialisation cost), and the initialiser that
    reproduces torchvision's. Materialise what you keep with
    ``module.to_empty(device="cpu")`` followed by the initialiser."""
    torchvision = _import_torchvision(backbone)
    with torch.device("meta"):
        if backbone == "alexnet":
            model = torchvision.models.alexnet(weights=None, num_classes=num_classes, dropout=dropout)
            return model, init_alexnet_
        if backbone == "vgg16":
            model = torchvision.models.vgg16(weights=None, num_classes=num_classes, dropout=dropout)
            return model, init_vgg_
    raise ValueError(f"matbp.models: no torchvision model for backbone {backbone!r}")


def materialize(module: nn.Module, init: Callable) -> nn.Module:
    """Allocates a meta-device module on the CPU and initialises it with ``init``."""
    module = module.to_empty(device="cpu")
    init(module)
    return module


def build_backbone(name: str, *, last_pool: bool = False) -> Backbone:
    """The convolutional stack ``name`` (one of :data:`BACKBONES`).

    ``last_pool=False`` drops the final max-pool of AlexNet/VGG-16 (DeepO2P:
    pooling over the 13×13 conv5 map as in the paper); ``last_pool=True``
    keeps it (first-order baseline). ``small`` has no such pool.
    """
    check_choice(name, BACKBONES, "backbone", "matbp.models.build_backbone")
    if name == "small":
        return Backbone(name, small_features(), 64)
    tv, init = torchvision_model(name)
    features = tv.features
    if not last_pool:
        assert isinstance(features[-1], nn.MaxPool2d)
        features = features[:-1]  # slicing keeps the indices, so the keys match torchvision's
    features = materialize(features, init)
    out_channels = [m for m in features.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    return Backbone(name, features, out_channels)
