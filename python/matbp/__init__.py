"""matbp: matrix backpropagation for deep networks with structured layers.

Importing the package loads the C++ extension (which registers the
``torch.ops.matbp.*`` operators) and registers their fake kernels and
autograd formulas.
"""

import torch  # noqa: F401  (the extension links against torch's libraries)

try:
    from ._build_info import BUILD_INFO
except ImportError as exc:  # a source tree that was never built
    raise ImportError("matbp is not built: run `pip install --no-build-isolation .` in its source tree") from exc


def _torch_series(version: str):
    return tuple(version.split("+")[0].split(".")[:2])


def _check_torch(info=BUILD_INFO, version=torch.__version__, cuda=torch.version.cuda) -> None:
    """Refuses, before _C loads (which would fail with an undefined symbol or
    worse), a torch other than the series matbp was built against."""
    built = info["torch"] + (f" with CUDA {info['cuda']}" if info["cuda"] else "")
    if _torch_series(info["torch"]) != _torch_series(version) or (info["cuda"] and not cuda):
        running = version + (f" with CUDA {cuda}" if cuda else " (no CUDA)")
        raise ImportError(
            f"matbp {info['matbp']} was built against torch {built}, but torch {running} is installed. "
            "Rebuild matbp against this torch: `pip install --no-build-isolation --no-deps "
            "--force-reinstall .` in matbp's source tree (or install the matbp wheel built for it).")


def build_info() -> dict:
    """What this matbp was built against: ``{"matbp", "torch", "cuda"}``
    (``cuda`` None for a CPU-only build), plus ``"cuda_kernels"``: whether
    the CUDA kernels are registered."""
    return dict(BUILD_INFO, cuda_kernels=built_with_cuda())


_check_torch()

from . import _C  # noqa: F401,E402  registers the operators
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
    "build_info",
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
