"""The normalized-cuts alignment objectives J1 and J2 (paper §5, eqs. 17–23).

Both are distances between two orthogonal projectors on the m pixels of an
image, W = X Λ Xᵀ being the affinity of m pixels with d features:

- J2 = ½‖Π_W − Π_Ψ‖²_F, Ψ = E (EᵀE)⁻¹ Eᵀ the projector onto the segment
  indicators E of the ground truth;
- J1 = ½‖Π_M − Π_Ω‖²_F, M = D^{-1/2} W D^{-1/2}, Ω = D^{1/2} E Eᵀ D^{1/2},
  D = diag(W 1) the degrees.

They share one operator, ``torch.ops.matbp.ncut_projector_distance(Y,
weights, labels, Lambda, rtol)`` = ½‖Π_{Y Λ Yᵀ} − Π_w‖² with Π_w the projector
onto the weighted segment indicators w ∘ e_k: J2 is (X, 1), J1 is
(D^{-1/2} X, D^{1/2}) with D formed by differentiable torch ops. The operator
never forms an m×m matrix: cost O(m d² + d³ + m k), so a full-resolution image
(481 × 321 = 154 401 pixels) is one call.
"""

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

_lib = torch.ops.matbp


def _projector_distance(Y, weights, labels, Lambda, rtol, return_rank):
    J, rank, *_ = _lib.ncut_projector_distance_with_basis(Y, weights, labels, Lambda, rtol)
    return (J, rank) if return_rank else J


def ncut_j2(
    X: Tensor,
    labels: Tensor,
    Lambda: Optional[Tensor] = None,
    rtol: Optional[float] = None,
    return_rank: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """J2 = ½‖Π_W − Π_Ψ‖²_F for W = X Λ Xᵀ (paper eqs. 20, 21).

    Args:
        X: (*, m, d) features of m pixels, float32 or float64.
        labels: (*, m) integer ground-truth segment ids, >= 0; any ids (they
            need not be contiguous; ids that do not occur are ignored).
        Lambda: optional symmetric (d, d) or (*, d, d) metric (Λ = I when
            None); it receives a gradient.
        rtol: eigenvalues of W below rtol·max are zero (its numerical rank);
            default max(m, d)·eps.
        return_rank: also return the numerical rank of W, (*) int64 — the
            paper monitors it during training (the rank lemma of §5).

    Returns:
        J2, shape (*), the dtype of X (computed in float64).
    """
    weights = torch.ones(X.shape[:-1], dtype=torch.float64, device=X.device)
    return _projector_distance(X, weights, labels, Lambda, rtol, return_rank)


def ncut_degrees(X: Tensor, Lambda: Optional[Tensor] = None) -> Tensor:
    """D = W 1 = X Λ (Xᵀ 1), the degrees of the affinity W = X Λ Xᵀ, (*, m)."""
    s = X.sum(-2, keepdim=True).mT  # (*, d, 1)
    if Lambda is not None:
        s = Lambda.to(X.dtype) @ s
    return (X @ s).squeeze(-1)


def ncut_j1(
    X: Tensor,
    labels: Tensor,
    Lambda: Optional[Tensor] = None,
    rtol: Optional[float] = None,
    return_rank: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """J1 = ½‖Π_M − Π_Ω‖²_F, M = D^{-1/2} W D^{-1/2} (paper eqs. 17, 18).

    Arguments as :func:`ncut_j2`. The degrees D = W 1 must be positive
    (non-negative features, e.g. after a ReLU, give that); the gradient
    flows through D too. With ``return_rank`` the rank is that of M.
    """
    X64 = X.to(torch.float64)
    D = ncut_degrees(X64, Lambda)
    if not torch.compiler.is_compiling() and D.numel() and not bool((D > 0).all()):
        raise ValueError(
            f"matbp.ncut_j1: the degrees D = X Λ Xᵀ 1 must be positive, got min {D.min().item():.3g} "
            "(use non-negative features or a positive-definite Λ)"
        )
    root = D.sqrt()
    out = _projector_distance(X64 / root.unsqueeze(-1), root, labels, Lambda, rtol, return_rank)
    if return_rank:
        return out[0].to(X.dtype), out[1]
    return out.to(X.dtype)


def affinity_rank(X: Tensor, Lambda: Optional[Tensor] = None, rtol: Optional[float] = None) -> Tensor:
    """Numerical rank of W = X Λ Xᵀ, (*) int64, by the tolerance of the objectives."""
    labels = torch.zeros(X.shape[:-1], dtype=torch.int64, device=X.device)
    with torch.no_grad():
        return ncut_j2(X, labels, Lambda, rtol, return_rank=True)[1]
