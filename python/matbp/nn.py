"""torch.nn modules built on the matbp operators."""

from typing import Optional

import torch
from torch import Tensor

from ._ops import o2p_log, sym_fn


class SymFn(torch.nn.Module):
    """Applies the spectral matrix function f(A) = V f(Λ) Vᵀ (see :func:`matbp.sym_fn`)."""

    def __init__(self, fn: str, p: Optional[float] = None):
        super().__init__()
        self.fn = fn
        self.p = p

    def forward(self, A: Tensor) -> Tensor:
        return sym_fn(A, self.fn, self.p)

    def extra_repr(self) -> str:
        return f"fn={self.fn!r}" + (f", p={self.p}" if self.p is not None else "")


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
