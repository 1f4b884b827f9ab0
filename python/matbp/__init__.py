"""matbp: matrix backpropagation for deep networks with structured layers.

Importing the package loads the C++ extension (which registers the
``torch.ops.matbp.*`` operators) and registers their fake kernels and
autograd formulas.
"""

import torch  # noqa: F401  (the extension links against torch's libraries)

from . import _C  # noqa: F401  registers the operators
from . import _ops  # noqa: F401  registers fake kernels and autograd
from . import data, metrics, ncut, nn, segmentation  # noqa: F401
from ._ops import built_with_cuda, o2p_log, projector, set_sync_checks, svd, sym_eig, sym_fn, sync_checks
from .ncut import ArgumentError, affinity_rank, ncut_degrees, ncut_j1, ncut_j2

__version__ = "0.1.0"

# The training side (torchvision, matplotlib, ...) loads on first use:
# `matbp.models.DeepO2P` works after a plain `import matbp`.
_LAZY = ("models", "datasets", "engine", "train", "evaluate", "experiments")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'matbp' has no attribute {name!r}")

__all__ = [
    "sym_eig",
    "svd",
    "sym_fn",
    "o2p_log",
    "projector",
    "ncut_j1",
    "ncut_j2",
    "ncut_degrees",
    "affinity_rank",
    "ArgumentError",
    "set_sync_checks",
    "sync_checks",
    "built_with_cuda",
    "nn",
    "ncut",
    "segmentation",
    "metrics",
    "data",
    "models",
    "datasets",
    "train",
    "experiments",
    "__version__",
]
