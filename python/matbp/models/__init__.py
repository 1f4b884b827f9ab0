"""Classification networks of the paper (§3.1, §6.1, Fig. 1, Table 1).

``build_model(name, backbone, num_classes, *, pooling="matbp", eps=1e-3,
reduce_dim=None, weights=None, fc_dim=4096, dropout=0.5)`` with ``name`` in
:data:`MODELS`, ``backbone`` in :data:`BACKBONES`, ``pooling`` in
:data:`POOLINGS`. Every model maps images (N, 3, H, W) to logits
(N, num_classes) and has ``backbone``, ``head`` and
``pretrained_parameter_names``.

The segmentation network of §6.2, :class:`DeepNCuts` (backbones
:data:`NCUTS_BACKBONES`), maps images to per-pixel features X (N, m, d) for
:class:`matbp.nn.NormalizedCutsLoss`; see :mod:`matbp.models.ncuts`.
"""

from .backbones import BACKBONES, Backbone, build_backbone, small_features
from .ncuts import NCUTS_BACKBONES, DeepNCuts
from .o2p import MODELS, Baseline, DeepO2P, DeepO2PFC, FirstOrderHead, O2PHead, build_model, load_weights
from .pooling import (
    POOLINGS,
    EighLogPooling,
    ISqrtCovPooling,
    UpperTriangle,
    build_pooling,
    covariance,
    isqrt_newton_schulz,
)

__all__ = [
    "MODELS",
    "BACKBONES",
    "POOLINGS",
    "build_model",
    "build_backbone",
    "build_pooling",
    "load_weights",
    "DeepO2P",
    "DeepNCuts",
    "NCUTS_BACKBONES",
    "DeepO2PFC",
    "Baseline",
    "Backbone",
    "O2PHead",
    "FirstOrderHead",
    "UpperTriangle",
    "EighLogPooling",
    "ISqrtCovPooling",
    "covariance",
    "isqrt_newton_schulz",
    "small_features",
]
