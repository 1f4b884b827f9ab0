"""The classification networks of paper §6.1 / Table 1 / Fig. 1: DeepO2P,
DeepO2P-FC and the first-order baseline, and loading pretrained weights.

Every model has

* ``backbone``: a :class:`~matbp.models.backbones.Backbone`, images
  (N, 3, H, W) → feature maps (N, C, h, w);
* ``head``: everything after the backbone, → logits (N, num_classes);
* ``pretrained_parameter_names``: the set of names (as in
  ``model.named_parameters()``) whose values were loaded from ``weights``
  (empty without a weights file). Training uses it to give pretrained layers
  the base learning rate and new layers a larger one.

Shapes of the paper's setting (AlexNet, 227×227 input): conv5/ReLU-5 is
256×13×13, so the DeepO2P layer pools 169 positions into a 256×256
log-covariance (rank ≤ 169 before the eps regulariser), vectorised into
256·257/2 = 32,896 features.
"""

import math
import os
from collections.abc import Mapping
from typing import Dict, Optional, Set, Tuple

import torch
from torch import Tensor, nn

from .backbones import BACKBONES, Backbone, build_backbone, check_choice, materialize, torchvision_model
from .pooling import POOLINGS, UpperTriangle, build_pooling

MODELS: Tuple[str, ...] = ("baseline", "deepo2p", "deepo2p-fc")


# ----------------------------------------------------------------------------- argument checks


def _check_int(value, argument: str, where: str, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        what = "a positive integer" + (" or None" if allow_none else "")
        raise ValueError(f"{where}: argument {argument!r} must be {what}, got {value!r}")
    return int(value)


def _check_eps(eps, where: str) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(eps, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: argument 'eps' must be a positive finite number, got {eps!r}")
    return value


def _check_dropout(p, where: str) -> float:
    try:
        value = float(p)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(p, bool) or not (0.0 <= value < 1.0):
        raise ValueError(f"{where}: argument 'dropout' must be a probability in [0, 1), got {p!r}")
    return value


# ----------------------------------------------------------------------------- heads


class O2PHead(nn.Module):
    """features (N, C, h, w) → [1×1 conv to d + ReLU] → pooling (N, d, d) →
    upper triangle (N, d(d+1)/2) → ``classifier``."""

    def __init__(self, in_channels: int, reduce_dim: Optional[int], pooling: nn.Module, classifier_fn):
        super().__init__()
        if reduce_dim is None:
            self.reduce = nn.Identity()
            self.dim = in_channels
        else:
            self.reduce = nn.Sequential(nn.Conv2d(in_channels, reduce_dim, kernel_size=1), nn.ReLU(inplace=True))
            self.dim = reduce_dim
        self.pooling = pooling
        self.triu = UpperTriangle()
        self.classifier = classifier_fn(UpperTriangle.output_dim(self.dim))

    def forward(self, features: Tensor) -> Tensor:
        return self.classifier(self.triu(self.pooling(self.reduce(features))))


class FirstOrderHead(nn.Module):
    """torchvision's AlexNet/VGG head layout: ``avgpool`` → flatten → ``classifier``."""

    def __init__(self, avgpool: nn.Module, classifier: nn.Module):
        super().__init__()
        self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, features: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(features), 1))


def alexnet_fc(in_features: int, num_classes: int, fc_dim: int, dropout: float) -> nn.Sequential:
    """AlexNet's fully connected topology (the indices match torchvision's ``classifier``):
    Dropout, Linear(in, fc), ReLU, Dropout, Linear(fc, fc), ReLU, Linear(fc, num_classes)."""
    return nn.Sequential(
        nn.Dropout(p=dropout),
        nn.Linear(in_features, fc_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(fc_dim, fc_dim),
        nn.ReLU(inplace=True),
        nn.Linear(fc_dim, num_classes),
    )


# ----------------------------------------------------------------------------- models


class _Model(nn.Module):
    """backbone → head, plus the weights bookkeeping."""

    # Whether classifier.* tensors of a weights file may initialise the head
    # (only the first-order baseline, whose head *is* the network the file
    # was trained with).
    _loads_classifier = False

    def __init__(self, backbone: Backbone, head: nn.Module, weights):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pretrained_parameter_names: Set[str] = set()
        if weights is not None:
            load_weights(self, weights)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))


class _Classifier(_Model):
    """The Table 1 networks: one signature and one argument check for all,
    ``_build`` makes (backbone, head) from the checked arguments."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        *,
        pooling: str = "matbp",
        eps: float = 1e-3,
        reduce_dim: Optional[int] = None,
        weights=None,
        fc_dim: int = 4096,
        dropout: float = 0.5,
    ):
        where = f"matbp.models.{type(self).__name__}"
        check_choice(backbone, BACKBONES, "backbone", where)
        check_choice(pooling, POOLINGS, "pooling", where)
        num_classes = _check_int(num_classes, "num_classes", where)
        eps = _check_eps(eps, where)
        reduce_dim = _check_int(reduce_dim, "reduce_dim", where, allow_none=True)
        fc_dim = _check_int(fc_dim, "fc_dim", where)
        dropout = _check_dropout(dropout, where)
        bb, head = self._build(backbone, num_classes, pooling, eps, reduce_dim, fc_dim, dropout)
        super().__init__(bb, head, weights)

    def _build(self, backbone, num_classes, pooling, eps, reduce_dim, fc_dim, dropout):
        raise NotImplementedError


class DeepO2P(_Classifier):
    """DeepO2P (paper Fig. 1, Table 1): backbone without its last max-pool →
    optional 1×1 conv to ``reduce_dim`` channels + ReLU → second-order
    pooling ``pooling`` (N, d, d) → :class:`UpperTriangle` → Linear(d(d+1)/2,
    num_classes). ``fc_dim`` and ``dropout`` are accepted for a uniform
    signature and unused. Attributes: ``dim`` = d, ``pooling_name``."""

    def _build(self, backbone, num_classes, pooling, eps, reduce_dim, fc_dim, dropout):
        bb = build_backbone(backbone, last_pool=False)
        head = O2PHead(bb.out_channels, reduce_dim, build_pooling(pooling, eps),
                       self._classifier(num_classes, fc_dim, dropout))
        self.dim = head.dim
        self.pooling_name = pooling
        return bb, head

    @staticmethod
    def _classifier(num_classes, fc_dim, dropout):
        return lambda n_in: nn.Linear(n_in, num_classes)


class DeepO2PFC(DeepO2P):
    """DeepO2P-FC (paper Table 1): DeepO2P with AlexNet's fully connected
    layers between the upper triangle and the output: Dropout,
    Linear(d(d+1)/2, fc_dim), ReLU, Dropout, Linear(fc_dim, fc_dim), ReLU,
    Linear(fc_dim, num_classes). Beware the size of the first layer:
    d(d+1)/2 · fc_dim weights, 134.7M for AlexNet (d = 256) and 538M for
    VGG-16 (d = 512) at fc_dim 4096; use ``reduce_dim`` / ``fc_dim`` to
    shrink it."""

    @staticmethod
    def _classifier(num_classes, fc_dim, dropout):
        return lambda n_in: alexnet_fc(n_in, num_classes, fc_dim, dropout)


class Baseline(_Classifier):
    """The first-order baseline ("AlexNet" in Table 1): the backbone *with*
    its last max-pool and its usual head:

    * ``alexnet``: torchvision AlexNet's avgpool (6×6) + classifier (Dropout,
      Linear(9216, fc_dim), ReLU, Dropout, Linear(fc_dim, fc_dim), ReLU,
      Linear(fc_dim, num_classes)), initialised as torchvision does;
    * ``vgg16``: VGG-16's avgpool (7×7) + classifier (Linear(25088, fc_dim),
      ReLU, Dropout, Linear(fc_dim, fc_dim), ReLU, Dropout,
      Linear(fc_dim, num_classes)), initialised as torchvision does;
    * ``small``: global average pooling + Linear(64, num_classes).

    With fc_dim = 4096 (the default) the head is exactly torchvision's.
    ``pooling``, ``eps`` and ``reduce_dim`` are accepted for a uniform
    signature (``pooling`` is still checked) and unused.
    """

    _loads_classifier = True

    def _build(self, backbone, num_classes, pooling, eps, reduce_dim, fc_dim, dropout):
        bb = build_backbone(backbone, last_pool=True)
        if backbone == "small":
            head = FirstOrderHead(nn.AdaptiveAvgPool2d(1), nn.Linear(bb.out_channels, num_classes))
        else:
            tv, init = torchvision_model(backbone, num_classes=num_classes, dropout=dropout)
            classifier = tv.classifier
            if fc_dim != 4096:
                linears = [i for i, m in enumerate(classifier) if isinstance(m, nn.Linear)]
                with torch.device("meta"):
                    first, middle, last = linears
                    classifier[first] = nn.Linear(classifier[first].in_features, fc_dim)
                    classifier[middle] = nn.Linear(fc_dim, fc_dim)
                    classifier[last] = nn.Linear(fc_dim, num_classes)
            head = FirstOrderHead(tv.avgpool, materialize(classifier, init))
        return bb, head


# ----------------------------------------------------------------------------- weights


def _read_state_dict(path) -> Dict[str, Tensor]:
    where = "matbp.models.load_weights"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{where}: 'weights' must be a file path, got {type(path).__name__}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: weights file {os.fspath(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{where}: cannot read weights file {os.fspath(path)!r} with torch.load(weights_only=True): {e}"
        ) from e
    for _ in range(2):  # {"state_dict": {...}} / {"model": {...}}, possibly nested once
        if isinstance(obj, Mapping):
            for wrapper in ("state_dict", "model"):
                if isinstance(obj.get(wrapper), Mapping):
                    obj = obj[wrapper]
                    break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise ValueError(
            f"{where}: weights file {os.fspath(path)!r} does not hold a state dict "
            f"(a mapping of parameter names to tensors), got {type(obj).__name__}"
        )
    state = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            continue  # e.g. bookkeeping entries such as an epoch counter
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


def _shape(t) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _listing(items, limit: int = 5) -> str:
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def load_weights(model: nn.Module, path) -> Set[str]:
    """Loads a torchvision-format state dict file into ``model`` (built by
    :func:`build_model`) and records the loaded names in
    ``model.pretrained_parameter_names`` (also returned).

    The file is read with ``torch.load(weights_only=True)`` (nothing is
    downloaded); a dict wrapping the state dict under ``"state_dict"`` or
    ``"model"`` and a ``"module."`` key prefix are accepted. Every backbone
    tensor ``features.*`` must be present with the right shape and the file
    must have no other ``features.*`` tensor, else ValueError naming the file,
    the backbone and the first missing / unexpected / mismatched keys. For the
    :class:`Baseline`, ``classifier.*`` tensors whose key and shape fit its
    head are loaded too (e.g. AlexNet's two 4096-wide FC layers but not the
    1000-class output layer when num_classes differs). DeepO2P and
    DeepO2P-FC take only the backbone: their first FC layer sees the
    d(d+1)/2-dimensional log-covariance, not the pooled conv5 map, so fc6 never
    fits, and fc7 without its fc6 is no meaningful initialisation (in the
    paper only the convolutional layers are pretrained). For ``small`` the file
    holds our own backbone's state dict under the same ``features.*`` keys
    (e.g. ``{"features." + k: v for k, v in model.backbone.features.state_dict().items()}``).
    """
    state = _read_state_dict(path)
    where = "matbp.models.load_weights"
    name = model.backbone.name
    expected = {"features." + k: v for k, v in model.backbone.features.state_dict().items()}
    missing = [k for k in expected if k not in state]
    mismatched = [
        f"{k} {_shape(state[k])} vs {_shape(v)}" for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    unexpected = [f"{k} {_shape(v)}" for k, v in state.items() if k.startswith("features.") and k not in expected]
    if missing or mismatched or unexpected:
        parts = []
        if missing:
            parts.append("missing " + _listing(f"{k} {_shape(expected[k])}" for k in missing))
        if mismatched:
            parts.append("shape mismatch (file vs model) " + _listing(mismatched))
        if unexpected:
            parts.append("unexpected " + _listing(unexpected))
        hint = ""
        if not any(k.startswith("features.") for k in state) and any(k.startswith("backbone.features.") for k in state):
            hint = " (this looks like a matbp model state_dict: restore it with model.load_state_dict instead)"
        raise ValueError(
            f"{where}: weights file {os.fspath(path)!r} does not fit backbone {name!r}: " + "; ".join(parts) + hint
        )

    targets = {"features." + k: ("backbone.features." + k, p) for k, p in model.backbone.features.named_parameters()}
    if getattr(model, "_loads_classifier", False):
        classifier = model.head.classifier
        for k, p in classifier.named_parameters():
            key = "classifier." + k
            if key in state and state[key].shape == p.shape:
                targets[key] = ("head.classifier." + k, p)
    loaded = set()
    with torch.no_grad():
        for key, (param_name, param) in targets.items():
            param.copy_(state[key])
            loaded.add(param_name)
        # buffers of the backbone (none for the architectures here, but keep them in step)
        for k, b in model.backbone.features.named_buffers():
            if "features." + k in state:
                b.copy_(state["features." + k])
    names = {n for n, _ in model.named_parameters()}
    assert loaded <= names, loaded - names
    model.pretrained_parameter_names = loaded
    return loaded


# ----------------------------------------------------------------------------- factory

_CLASSES = {"baseline": Baseline, "deepo2p": DeepO2P, "deepo2p-fc": DeepO2PFC}


def build_model(name: str, backbone: str, num_classes: int, **options) -> nn.Module:
    """The model ``name`` (one of :data:`MODELS`) on ``backbone`` (one of
    :data:`BACKBONES`), see :class:`Baseline`, :class:`DeepO2P`,
    :class:`DeepO2PFC`, whose keyword arguments ``options`` are (``pooling``,
    ``eps``, ``reduce_dim``, ``weights``: the path of a torchvision-format
    state dict (see :func:`load_weights`) or None, ``fc_dim``, ``dropout``)."""
    check_choice(name, MODELS, "model name", "matbp.models.build_model")
    return _CLASSES[name](backbone, num_classes, **options)
