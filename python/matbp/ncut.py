"""The normalized-cuts alignment objectives J1 and J2 (paper §5, eqs. 17–23).

One name, ``ncut``, through every layer of this family: the operator
``torch.ops.matbp.ncut_projector_distance`` (with ``_with_basis`` and
``_backward``) lives in ``csrc/ops/generic/ncut.h``,
``csrc/ops/cpu/ncut_kernel.cpp`` and ``csrc/ops/cuda/ncut_kernel.cu``; its
Python front end is this module (``matbp.ncut_j1``, ``matbp.ncut_j2``,
``matbp.ncut_degrees``, ``matbp.affinity_rank``; its fake kernel and
autograd are in ``_ops.py``); it is tested in
``tests/test_ncut.py`` and benchmarked in ``bench/bench_ncut.py``.
Segmentation inference (spectral clustering of W) is :mod:`matbp.segmentation`.

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

Both objectives are invariant to X → cX and Λ → cΛ (c > 0), so X (per image)
and Λ (per matrix) are scaled by a power of two to a largest magnitude in
[1, 2) before the operator: exact, and it keeps W and D in float64's range
for features as small as 1e-160 or as large as 1e150.

The arguments are validated here, with the names the caller used, before
the operator sees them. Checks that need the data (NaN/Inf, label range,
positive degrees, symmetric Λ) synchronise with the device and are skipped
while torch.compile traces (the operator still rejects non-finite input).
"""

import numbers
import warnings
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

_lib = torch.ops.matbp

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Largest segment id the operator's remapping tables accept (2^40 − 1).
_MAX_LABEL_ID = (1 << 40) - 1

# Λ − Λᵀ may differ by rounding when Λ is formed as, e.g., A Aᵀ: at most a
# few d·eps of max|Λ|. A Λ that is really non-symmetric is off by O(1).
_SYMMETRY_RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}


class ArgumentError(ValueError, RuntimeError):
    """A bad argument to a normalized-cuts function.

    A RuntimeError, as the operators raise for bad input (the documented
    contract), and a ValueError, as the rest of the Python API raises.
    """


def check_rtol(rtol, op: str) -> Optional[float]:
    """``rtol`` as a float (None stays None); raises unless a finite number >= 0."""
    if rtol is None:
        return None
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real):
        raise TypeError(
            f"{op}: argument 'rtol' must be None or a finite number >= 0, got {type(rtol).__name__}"
        )
    if not 0 <= rtol < float("inf"):
        raise ArgumentError(f"{op}: argument 'rtol' must be None or a finite number >= 0, got {rtol!r}")
    return float(rtol)


def _check_features(X, op: str) -> None:
    if not isinstance(X, Tensor):
        raise TypeError(f"{op}: argument 'X' must be a tensor of features (*, m, d), got {type(X).__name__}")
    if X.dtype not in _FLOATS:
        raise ArgumentError(
            f"{op}: argument 'X' must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64; integer and bool features are not supported), got {X.dtype}"
        )
    if X.dim() < 2:
        raise ArgumentError(
            f"{op}: argument 'X' must have shape (*, m, d), got a {X.dim()}-dimensional tensor"
        )
    if X.shape[-2] == 0:
        raise ArgumentError(
            f"{op}: argument 'X' needs at least one pixel (m >= 1), got shape {tuple(X.shape)}"
        )


def _largest_magnitude(X: Tensor, op: str) -> Tensor:
    """max|X| per matrix (*, 1, 1); raises if X has NaN or Inf (which the
    maximum propagates: one pass over X for both, the check skipped under
    torch.compile)."""
    amax = X.detach().abs().amax((-2, -1), keepdim=True)
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(amax).all()):
        raise ArgumentError(f"{op}: argument 'X' contains NaN or Inf")
    return amax


def _check_fits(t: Tensor, name: str, shapes, expected: str, X: Tensor, x_name: str, op: str) -> None:
    """``t`` has one of ``shapes`` (described as ``expected``) and X's device."""
    if tuple(t.shape) not in shapes:
        raise ArgumentError(
            f"{op}: argument '{name}' must have shape {expected} to match '{x_name}' of shape "
            f"{tuple(X.shape)}, got {tuple(t.shape)}"
        )
    if t.device != X.device:
        raise ArgumentError(f"{op}: argument '{name}' is on {t.device} but '{x_name}' is on {X.device}")


def check_lambda(Lambda, X: Tensor, op: str, x_name: str = "X") -> None:
    """Validate Λ for the features X (*, m, d), called ``x_name`` in messages.

    Λ must be a float32/float64 tensor of shape (d, d) or (*, d, d), on X's
    device, finite and symmetric: each matrix within a relative 1e-10
    (float64) or 1e-4 (float32) of its largest entry. Λ is rejected rather
    than symmetrised, which would silently change the affinity.
    """
    if not isinstance(Lambda, Tensor):
        raise TypeError(
            f"{op}: argument 'Lambda' must be a tensor (d, d) or (*, d, d), got {type(Lambda).__name__}"
        )
    if Lambda.dtype not in _FLOATS:
        raise ArgumentError(f"{op}: argument 'Lambda' must be a floating-point tensor, got {Lambda.dtype}")
    d, batch = X.shape[-1], tuple(X.shape[:-2])
    _check_fits(Lambda, "Lambda", ((d, d), (*batch, d, d)), f"(d, d) or (*, d, d) = {(*batch, d, d)}", X,
                x_name, op)
    if torch.compiler.is_compiling() or Lambda.numel() == 0:
        return
    L = Lambda.detach()
    if not bool(torch.isfinite(L).all()):
        raise ArgumentError(f"{op}: argument 'Lambda' contains NaN or Inf")
    rtol = _SYMMETRY_RTOL[L.dtype]
    asym = (L - L.mT).abs().amax((-2, -1))
    scale = L.abs().amax((-2, -1))
    rel = (asym / scale.clamp_min(torch.finfo(L.dtype).tiny)).max().item()
    if rel > rtol:
        raise ArgumentError(
            f"{op}: argument 'Lambda' must be symmetric, but max|Λ − Λᵀ| is {rel:.3g} of max|Λ| "
            f"(tolerance {rtol:g} for {Lambda.dtype})"
        )


def _check_labels(labels, X: Tensor, op: str) -> None:
    if not isinstance(labels, Tensor):
        raise TypeError(
            f"{op}: argument 'labels' must be an integer tensor (*, m), got {type(labels).__name__}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ArgumentError(
            f"{op}: argument 'labels' must be an integer tensor of segment ids, got {labels.dtype}"
        )
    m_shape = tuple(X.shape[:-1])
    _check_fits(labels, "labels", (m_shape,), f"(*, m) = {m_shape}", X, "X", op)
    if torch.compiler.is_compiling() or labels.numel() == 0:
        return
    lo, hi = torch.stack(torch.aminmax(labels)).tolist()
    if lo < 0 or hi > _MAX_LABEL_ID:
        bad = lo if lo < 0 else hi
        raise ArgumentError(f"{op}: argument 'labels' out of range: ids must be in [0, 2^40), got {bad}")


def _check_arguments(op, X, labels, Lambda, rtol) -> Optional[float]:
    _check_features(X, op)
    if labels is not None:
        _check_labels(labels, X, op)
    if Lambda is not None:
        check_lambda(Lambda, X, op)
    return check_rtol(rtol, op)


def _unit_scale(A: Tensor, amax: Optional[Tensor] = None) -> Tensor:
    """A / c per matrix, c = 2^⌊log2 max|A|⌋ (1 where A is 0): exact, as c is
    a power of two. ``amax`` is max|A| per matrix when already known."""
    if A.shape[-1] == 0 or A.shape[-2] == 0:
        return A
    if amax is None:
        amax = A.detach().abs().amax((-2, -1), keepdim=True)
    mantissa, _ = torch.frexp(amax)  # amax = mantissa · 2^e, mantissa in [0.5, 1)
    c = torch.where(amax > 0, amax / (2 * mantissa), torch.ones_like(amax))  # exact quotient 2^(e−1)
    return A / c


def _projector_distance(Y, weights, labels, Lambda, rtol, return_rank):
    J, rank, *_ = _lib.ncut_projector_distance_with_basis(Y, weights, labels, Lambda, rtol)
    return (J, rank) if return_rank else J


def _degrees(X: Tensor, Lambda: Optional[Tensor]) -> Tensor:
    s = X.sum(-2, keepdim=True).mT  # (*, d, 1)
    if Lambda is not None:
        s = Lambda.to(X.dtype) @ s
    return (X @ s).squeeze(-1)


def _ncut(objective: str, op: str, X, labels, Lambda, rtol, return_rank):
    """J1 or J2 (``objective`` "j1"/"j2") with errors naming ``op``."""
    rtol = _check_arguments(op, X, labels, Lambda, rtol)
    Xs = _unit_scale(X, _largest_magnitude(X, op))
    Ls = None if Lambda is None else _unit_scale(Lambda)
    if objective == "j2":
        weights = torch.ones(X.shape[:-1], dtype=torch.float64, device=X.device)
        return _projector_distance(Xs, weights, labels, Ls, rtol, return_rank)
    X64 = Xs.to(torch.float64)
    D = _degrees(X64, Ls)
    if not torch.compiler.is_compiling() and D.numel() and not bool((D > 0).all()):
        raise ArgumentError(
            f"{op}: the degrees D = X Λ Xᵀ 1 must be positive, but {int((D <= 0).sum())} of "
            f"{D.numel()} are not (use non-negative features, and a Λ with non-negative entries)"
        )
    root = D.sqrt()
    out = _projector_distance(X64 / root.unsqueeze(-1), root, labels, Ls, rtol, return_rank)
    # J2's operator returns X's dtype itself (float32 under autocast, like every op).
    dtype = (torch.float32 if X.dtype in (torch.float16, torch.bfloat16)
             and torch.is_autocast_enabled(X.device.type) else X.dtype)
    if return_rank:
        return out[0].to(dtype), out[1]
    return out.to(dtype)


def ncut_j2(
    X: Tensor,
    labels: Tensor,
    Lambda: Optional[Tensor] = None,
    rtol: Optional[float] = None,
    return_rank: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """J2 = ½‖Π_W − Π_Ψ‖²_F for W = X Λ Xᵀ (paper eqs. 20, 21).

    Args:
        X: (*, m, d) features of m ≥ 1 pixels, floating point, finite.
        labels: (*, m) integer ground-truth segment ids, >= 0; any ids (they
            need not be contiguous; ids that do not occur are ignored).
        Lambda: optional symmetric (d, d) or (*, d, d) float32/float64 metric
            (Λ = I when None); it receives a gradient. A non-symmetric Λ is
            rejected (see :func:`check_lambda`).
        rtol: eigenvalues of W below rtol·max are zero (its numerical rank);
            default max(m, d)·eps.
        return_rank: also return the numerical rank of W, (*) int64 — the
            paper monitors it during training (the rank lemma of §5).

    Returns:
        J2, shape (*), the dtype of X (computed in float64).

    Raises:
        :class:`ArgumentError` (a ValueError and a RuntimeError) naming
        ``matbp.ncut_j2`` and the argument for a bad X, labels, Lambda or
        rtol; TypeError for an argument that is not a tensor (or number).
    """
    return _ncut("j2", "matbp.ncut_j2", X, labels, Lambda, rtol, return_rank)


def ncut_degrees(X: Tensor, Lambda: Optional[Tensor] = None) -> Tensor:
    """D = W 1 = X Λ (Xᵀ 1), the degrees of the affinity W = X Λ Xᵀ, (*, m)."""
    _check_arguments("matbp.ncut_degrees", X, None, Lambda, None)
    _largest_magnitude(X, "matbp.ncut_degrees")
    return _degrees(X, Lambda)


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
    Errors name ``matbp.ncut_j1``.
    """
    return _ncut("j1", "matbp.ncut_j1", X, labels, Lambda, rtol, return_rank)


def affinity_rank(X: Tensor, Lambda: Optional[Tensor] = None, rtol: Optional[float] = None) -> Tensor:
    """Numerical rank of W = X Λ Xᵀ, (*) int64, by the tolerance of the objectives."""
    _check_features(X, "matbp.affinity_rank")
    labels = torch.zeros(X.shape[:-1], dtype=torch.int64, device=X.device)
    with torch.no_grad():
        return _ncut("j2", "matbp.affinity_rank", X, labels, Lambda, rtol, True)[1]


# Segmentation inference lived here as matbp.ncut.segment etc. until it moved
# to matbp.segmentation; the old names still resolve, with a warning.
_MOVED_TO_SEGMENTATION = ("segment", "leading_eigenvectors", "kmeans")


def __getattr__(name):
    if name in _MOVED_TO_SEGMENTATION:
        from . import segmentation

        warnings.warn(
            f"matbp.ncut.{name} moved to matbp.segmentation.{name}", DeprecationWarning, stacklevel=2
        )
        return getattr(segmentation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
