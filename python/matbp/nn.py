"""torch.nn modules built on the matbp operators."""

from typing import Optional

import torch
from torch import Tensor

from ._ops import o2p_log, sym_fn
from .ncut import _ncut, check_rtol


class SymFn(torch.nn.Module):
    """Applies the spectral matrix function f(A) = V f(Λ) Vᵀ (see :func:`matbp.sym_fn`;
    ``compute_dtype=torch.float32`` is its float32 compute mode)."""

    def __init__(self, fn: str, p: Optional[float] = None, *,
                 compute_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.fn = fn
        self.p = p
        self.compute_dtype = compute_dtype

    def forward(self, A: Tensor) -> Tensor:
        return sym_fn(A, self.fn, self.p, compute_dtype=self.compute_dtype)

    def extra_repr(self) -> str:
        return (f"fn={self.fn!r}" + (f", p={self.p}" if self.p is not None else "")
                + (f", compute_dtype={self.compute_dtype}" if self.compute_dtype is not None else ""))


class O2PLog(torch.nn.Module):
    """C = log(XᵀX + eps·I) of X (*, m, d) (see :func:`matbp.o2p_log`).

    No 1/m normalisation is applied: pre-scale X for a covariance, or use
    :class:`SecondOrderPooling`.
    """

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, X: Tensor) -> Tensor:
        return o2p_log(X, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class SecondOrderPooling(torch.nn.Module):
    """Log second-order pooling of conv features (DeepO2P).

    Takes feature maps (N, C, H, W), treats the H·W positions as samples and
    returns log(XᵀX / (H·W) + eps·I), (N, C, C), with X the (N, H·W, C)
    features: the log of the (non-centred) covariance of the channels.
    """

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, features: Tensor) -> Tensor:
        positions = features.shape[-1] * features.shape[-2]
        X = features.flatten(-2).mT / max(positions, 1) ** 0.5
        return o2p_log(X, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class NormalizedCutsLoss(torch.nn.Module):
    """Normalized-cuts alignment loss (paper §5): J1 or J2 between the
    projector of the affinity W = X Λ Xᵀ of the features and the projector of
    the ground-truth segmentation (see :func:`matbp.ncut_j1`,
    :func:`matbp.ncut_j2`).

    ``forward(X, labels, Lambda=None)`` takes features (*, m, d) and integer
    labels (*, m) and returns the per-image losses reduced by ``reduction``
    ("mean", "sum" or "none"). After each call ``last_rank`` holds the
    numerical rank of W (J2) or M (J1) per image, which the paper monitors
    during training. Bad arguments raise errors naming
    ``matbp.nn.NormalizedCutsLoss`` (``rtol`` already in the constructor).
    """

    def __init__(self, objective: str = "j2", rtol: Optional[float] = None, reduction: str = "mean"):
        super().__init__()
        if objective not in ("j1", "j2"):
            raise ValueError(f"matbp.nn.NormalizedCutsLoss: objective must be 'j1' or 'j2', got {objective!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(
                f"matbp.nn.NormalizedCutsLoss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}"
            )
        self.objective = objective
        self.rtol = check_rtol(rtol, "matbp.nn.NormalizedCutsLoss")
        self.reduction = reduction
        self.last_rank: Optional[Tensor] = None

    def forward(self, X: Tensor, labels: Tensor, Lambda: Optional[Tensor] = None) -> Tensor:
        J, rank = _ncut(self.objective, "matbp.nn.NormalizedCutsLoss", X, labels, Lambda, self.rtol, True)
        self.last_rank = rank.detach()
        if self.reduction == "mean":
            return J.mean()
        if self.reduction == "sum":
            return J.sum()
        return J

    def extra_repr(self) -> str:
        return f"objective={self.objective!r}, reduction={self.reduction!r}"
