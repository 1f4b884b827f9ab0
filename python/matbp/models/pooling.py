"""Global second-order poolings (N, C, h, w) → (N, C, C) and the upper-triangle vectorisation.

All three poolings form the *same* matrix from the features: with X the
(h·w, C) matrix of the positions' feature vectors,

    A = XᵀX / (h·w) + eps·I        (the non-centred channel covariance, paper eq. (4))

and differ only in the matrix function applied to A and in how it is
differentiated, so a comparison between them isolates the matrix function
and its backward:

* ``"matbp"`` — :class:`matbp.nn.SecondOrderPooling`: log(A) computed in
  float64 (returned in the features' dtype) with the exact matrix
  backpropagation of the paper, stable for repeated eigenvalues.
* ``"torch"`` — :class:`EighLogPooling`: what one writes with stock PyTorch
  today, ``L, V = torch.linalg.eigh(A)``, ``V diag(log L) Vᵀ``, in the
  features' dtype, through autograd. No float64 upcast and no guards on
  purpose: it is the competitor whose NaN/failure behaviour (eigh's backward
  divides by eigenvalue gaps, which vanish for the eps-eigenvalues of a
  rank-deficient covariance) the experiments report.
* ``"isqrt"`` — :class:`ISqrtCovPooling`: iSQRT-COV (Li et al., CVPR 2018),
  the matrix square root A^{1/2} by a trace-normalised Newton–Schulz
  iteration, differentiated by autograd through the iteration. Note the
  matrix function is the square root, not the log: that is the method.
"""

from typing import Tuple

import torch
from torch import Tensor, nn

from ..nn import SecondOrderPooling
from .backbones import check_choice

POOLINGS: Tuple[str, ...] = ("matbp", "torch", "isqrt")


def covariance(features: Tensor, eps: float) -> Tensor:
    """A = XᵀX/(h·w) + eps·I of features (N, C, h, w), (N, C, C), in the features' dtype."""
    positions = features.shape[-1] * features.shape[-2]
    X = features.flatten(-2)  # (N, C, h·w)
    A = X @ X.mT / max(positions, 1)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return A + eps * eye


class EighLogPooling(nn.Module):
    """log(A) through ``torch.linalg.eigh`` and autograd, in the features' dtype (the baseline implementation)."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, features: Tensor) -> Tensor:
        A = covariance(features, self.eps)
        L, V = torch.linalg.eigh(A)
        return (V * torch.log(L).unsqueeze(-2)) @ V.mT

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class ISqrtCovPooling(nn.Module):
    """iSQRT-COV (Li et al., CVPR 2018): A^{1/2} by ``iterations`` Newton–Schulz steps.

    Pre-normalisation Y₀ = A / tr A, Z₀ = I (the eigenvalues of Y₀ lie in
    (0, 1], where the coupled iteration converges); each step
    T = (3I − Z Y)/2, Y ← Y T, Z ← T Z (Y → (A/tr A)^{1/2}, Z → its inverse);
    post-compensation Y·√(tr A). Differentiated by autograd through the
    iteration, in the features' dtype. Eigenvalues small relative to tr A
    converge slowly, so with 5 iterations the result approximates the square
    root only for reasonably conditioned A (that is the method's trade-off).
    """

    def __init__(self, eps: float = 1e-3, iterations: int = 5):
        super().__init__()
        self.eps = eps
        self.iterations = int(iterations)

    def forward(self, features: Tensor) -> Tensor:
        return isqrt_newton_schulz(covariance(features, self.eps), self.iterations)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, iterations={self.iterations}"


def isqrt_newton_schulz(A: Tensor, iterations: int = 5) -> Tensor:
    """The iSQRT-COV approximation of A^{1/2} for SPD A (*, n, n)."""
    n = A.shape[-1]
    eye = torch.eye(n, dtype=A.dtype, device=A.device).expand_as(A)
    trace = A.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    Y = A / trace
    Z = eye
    for _ in range(iterations):
        T = 0.5 * (3.0 * eye - Z @ Y)
        Y = Y @ T
        Z = T @ Z
    return Y * trace.sqrt()


def build_pooling(name: str, eps: float = 1e-3) -> nn.Module:
    """The global pooling ``name`` (one of :data:`POOLINGS`): (N, C, h, w) → (N, C, C)."""
    check_choice(name, POOLINGS, "pooling", "matbp.models.build_pooling")
    if name == "matbp":
        return SecondOrderPooling(eps)
    if name == "torch":
        return EighLogPooling(eps)
    return ISqrtCovPooling(eps)


class UpperTriangle(nn.Module):
    """Vectorises symmetric (N, d, d) into the (N, d(d+1)/2) upper-triangle entries.

    Entries are in ``torch.triu_indices`` order (row-major); the off-diagonal
    ones are scaled by √2 so that the Euclidean norm of the vector equals the
    Frobenius norm of the matrix (the map is an isometry of symmetric
    matrices, so a linear classifier on it is a linear function of the
    matrix with the Frobenius inner product).
    """

    def forward(self, S: Tensor) -> Tensor:
        d = S.shape[-1]
        rows, cols = torch.triu_indices(d, d, device=S.device)
        scale = torch.where(
            rows == cols,
            torch.ones((), dtype=S.dtype, device=S.device),
            torch.full((), 2.0**0.5, dtype=S.dtype, device=S.device),
        )
        return S[..., rows, cols] * scale

    @staticmethod
    def output_dim(d: int) -> int:
        return d * (d + 1) // 2
