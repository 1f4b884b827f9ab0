"""torch.nn modules built on the matbp operators."""

from typing import Optional

import torch
from torch import Tensor

from ._ops import sym_fn


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
