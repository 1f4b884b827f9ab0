"""Typed wrappers, fake kernels and autograd for the matbp operators.

Every backward is an operator of its own (``matbp::<op>_backward``) wired
with :func:`torch.library.register_autograd`; every operator has a fake
kernel, so ``torch.library.opcheck`` and ``torch.compile(fullgraph=True)``
work.
"""

import contextlib
import math
import numbers
import sys
from typing import Optional, Tuple

import torch
from torch import Tensor

_lib = torch.ops.matbp

_SPECTRAL_FNS = ("log", "sqrt", "pow", "exp")


def built_with_cuda() -> bool:
    """Whether this build of matbp has the CUDA backend (a CUDA kernel per op)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("matbp::sym_eig", "CUDA")


def set_sync_checks(enabled: bool) -> bool:
    """Turn sync checks on or off; returns the previous setting.

    CUDA kernels find per-matrix failures (NaN/Inf input, no convergence, an
    eigenvalue outside ``sym_fn``'s domain) on the device. By default they do
    not wait for the GPU to report them: the failed matrices' outputs are
    filled with NaN, so nothing passes silently and nothing synchronises.
    With sync checks on, they synchronise and raise the CPU kernels'
    RuntimeError. The environment variable ``MATBP_SYNC_CHECKS=1`` turns them
    on at load time. CPU kernels always raise.
    """
    return _lib.set_sync_checks(bool(enabled))


@contextlib.contextmanager
def sync_checks(enabled: bool = True):
    """Context manager form of :func:`set_sync_checks`."""
    previous = set_sync_checks(enabled)
    try:
        yield
    finally:
        set_sync_checks(previous)


# ------------------------------------------------------- autograd modes
#
# First-order reverse mode, and forward mode where an op has a jvp rule.
# Everything else is an error, never a silently wrong derivative:
#
# - Forward mode. An op registered with register_autograd has no jvp: a dual
#   tensor that does not require grad takes the no-grad path and its tangent
#   is dropped (a zero tangent under torch.func.jvp). The Autograd kernel that
#   register_autograd builds is therefore registered behind a check for
#   tangents (_GuardedAutogradLibrary), which sees direct torch.ops calls and
#   the dual tensors that torch.func.jvp/jacfwd and torch.autograd.forward_ad
#   hand to the Autograd key. With a jvp rule it runs the op on the primals
#   and returns its outputs as dual tensors whose tangents the rule computes
#   (each the adjoint of the op's backward: the same divided differences, so
#   exact at ties); without one it raises.
# - torch.func reverse mode (grad, vjp, jacrev): the autograd.Function that
#   register_autograd builds has no setup_context staticmethod, so torch
#   raises an obscure RuntimeError under these transforms; the same guard
#   raises a clear NotImplementedError instead.
# - Double backward: the backward ops' inputs are mostly saved
#   non-differentiable outputs, so an autograd formula on the backward op
#   alone (_no_double_backward) does not fire and second derivatives would
#   silently drop the term. Every backward therefore raises when it runs with
#   grad mode on, i.e. under create_graph=True (_forbid_create_graph).

_FORWARD_AD_UNSUPPORTED = (
    "forward-mode AD (torch.func.jvp, jacfwd, hessian, torch.autograd.forward_ad) is not supported"
)


def _has_forward_tangent(args) -> bool:
    # Tangents exist only inside a dual level (torch.func.jvp enters one too).
    level = torch.autograd.forward_ad._current_level
    if level < 0 or not torch._C._is_fwd_grad_enabled():
        return False
    return any(
        isinstance(a, Tensor) and torch._VF._unpack_dual(a, level=level)[1] is not None
        for a in args
    )


def _nested_forward_transforms() -> int:
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return sum(i.key() == TransformType.Jvp for i in retrieve_all_functorch_interpreters())


def _forward_mode(kernel, keyset, public_name, jvp, defaults, args, kwargs):
    """The op on the primals of ``args``, its outputs made dual with the
    tangents ``jvp(primals, tangents, outputs)`` (None: no tangent)."""
    # Under jacfwd(jacfwd(...)) the outer layer's tangent would pass through
    # the op's kernel below the Autograd key and be dropped: the rules give
    # first derivatives only.
    if _nested_forward_transforms() > 1:
        raise NotImplementedError(
            f"{public_name}: second-order forward mode (jacfwd of jacfwd, torch.func.hessian) is not supported"
        )
    level = torch.autograd.forward_ad._current_level
    primals, tangents = [], []
    for a in args:
        p, t = torch._VF._unpack_dual(a, level=level) if isinstance(a, Tensor) else (a, None)
        primals.append(p)
        tangents.append(t)
    out = kernel(keyset, *primals, **kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    # The rules read arguments by position: the schema's defaults fill the rest.
    primals += defaults[len(primals):]
    tangents += [None] * (len(primals) - len(tangents))
    out_tangents = jvp(primals, tangents, outs)
    duals = tuple(o if t is None else torch._VF._make_dual(o, t.to(o.dtype), level=level)
                  for o, t in zip(outs, out_tangents))
    return duals if isinstance(out, tuple) else duals[0]


def _guard_autograd_kernel(kernel, public_name: str, jvp=None, defaults=()):
    def guarded(keyset, *args, **kwargs):
        if _has_forward_tangent(args):
            if jvp is None:
                raise NotImplementedError(f"{public_name}: {_FORWARD_AD_UNSUPPORTED}")
            return _forward_mode(kernel, keyset, public_name, jvp, list(defaults), args, kwargs)
        if (
            torch._C._are_functorch_transforms_active()
            and torch.is_grad_enabled()
            and torch._C._any_requires_grad(*args)
        ):
            raise NotImplementedError(
                f"{public_name}: torch.func reverse-mode transforms (grad, vjp, jacrev, hessian) "
                "are not supported; use torch.autograd.grad or Tensor.backward"
            )
        return kernel(keyset, *args, **kwargs)

    return guarded


class _GuardedAutogradLibrary(torch.library.Library):
    """A fragment of the matbp library whose Autograd kernels are guarded.

    torch.library.register_autograd(..., lib=this) builds its Autograd kernel
    as usual and registers it through ``impl``, which puts the checks of
    :func:`_guard_autograd_kernel` in front of it.
    """

    def __init__(self, public_name: str, jvp=None):
        super().__init__("matbp", "FRAGMENT")
        self.public_name = public_name
        self.jvp = jvp
        self.guarded = False

    def impl(self, op_name, fn, dispatch_key="", *, with_keyset=False, **kwargs):
        if dispatch_key == "Autograd" and with_keyset:
            schema = torch._C._get_schema(f"matbp::{op_name}", "")
            defaults = [a.default_value if a.has_default_value() else None for a in schema.arguments]
            fn = _guard_autograd_kernel(fn, self.public_name, self.jvp, defaults)
            self.guarded = True
        return super().impl(op_name, fn, dispatch_key, with_keyset=with_keyset, **kwargs)


_autograd_libs = []  # a Library deregisters its kernels when collected


def _register_autograd(op_name: str, public_name: str, backward, setup_context=None, jvp=None) -> None:
    lib = _GuardedAutogradLibrary(public_name, jvp)
    torch.library.register_autograd(
        f"matbp::{op_name}", backward, setup_context=setup_context, lib=lib
    )
    if not lib.guarded:  # torch changed how register_autograd registers
        raise RuntimeError(
            f"matbp: could not guard the Autograd kernel of matbp::{op_name} against forward-mode AD"
        )
    _autograd_libs.append(lib)


def _forbid_create_graph(public_name: str) -> None:
    # Backward runs with grad mode on exactly when create_graph=True.
    if torch.is_grad_enabled():
        raise NotImplementedError(
            f"{public_name}: double backward (differentiating a gradient, create_graph=True) "
            "is not supported"
        )


def _no_double_backward(op_name: str):
    # For direct calls of a backward op on tensors that require grad.
    def backward(ctx, *grads):
        raise NotImplementedError(
            f"matbp.{op_name}: double backward (differentiating a gradient, create_graph=True) "
            "is not supported"
        )

    _register_autograd(op_name, f"matbp.{op_name}", backward)


# Fake kernels repeat the argument checks of the real kernels (csrc/ops/checks.h)
# so that tracing fails with the same message as eager execution, and so that
# a meta tensor among CPU or CUDA arguments (the Meta key wins the dispatch)
# is an error, not an uninitialised result on the other device.


# Half and bfloat16 are computed as float32 is (in float64 inside) and
# returned in their own dtype; the kernels see float32 (csrc/ops/low_precision.h).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_float_dtype(t: Tensor, op: str, arg: str) -> None:
    torch._check(
        t.dtype in FLOAT_DTYPES,
        lambda: f"{op}: argument '{arg}' must be a floating-point tensor (float16, bfloat16, float32 "
        f"or float64), got {t.dtype}",
    )


def _check_same_device(t: Tensor, arg: str, ref: Tensor, ref_arg: str, op: str) -> None:
    torch._check(
        t.device == ref.device,
        lambda: f"{op}: arguments '{arg}' and '{ref_arg}' must be on the same device, "
        f"got {t.device} and {ref.device}",
    )


def _check_fits(t: Tensor, op: str, arg: str, shape, ref: Tensor, ref_arg: str) -> None:
    _check_float_dtype(t, op, arg)
    _check_same_device(t, arg, ref, ref_arg, op)
    torch._check(
        tuple(t.shape) == tuple(shape),
        lambda: f"{op}: argument '{arg}' must have shape {list(shape)} to match '{ref_arg}' "
        f"of shape {list(ref.shape)}, got {list(t.shape)}",
    )


def _check_float_matrix(t: Tensor, op: str, arg: str, square: bool) -> None:
    _check_float_dtype(t, op, arg)
    torch._check(
        t.dim() >= 2,
        lambda: f"{op}: argument '{arg}' must be a batch of matrices with shape (*, m, n), "
        f"got a {t.dim()}-dimensional tensor",
    )
    if square:
        torch._check(
            t.shape[-1] == t.shape[-2],
            lambda: f"{op}: argument '{arg}' must be a batch of square matrices (*, n, n), "
            f"got shape {tuple(t.shape)}",
        )


# ---------------------------------------------------------------- sym_eig


@torch.library.register_fake("matbp::sym_eig")
def _sym_eig_fake(A):
    _check_float_matrix(A, "matbp.sym_eig", "A", square=True)
    n = A.shape[-1]
    return A.new_empty(A.shape[:-1]), A.new_empty((*A.shape[:-2], n, n))


@torch.library.register_fake("matbp::sym_eig_backward")
def _sym_eig_backward_fake(gL, gV, L, V):
    op = "matbp.sym_eig_backward"
    _check_float_matrix(V, op, "V", square=True)
    _check_fits(L, op, "L", V.shape[:-1], V, "V")
    if gL is not None:
        _check_fits(gL, op, "gL", V.shape[:-1], V, "V")
    if gV is not None:
        _check_fits(gV, op, "gV", V.shape, V, "V")
    return V.new_empty(V.shape)


def _sym_eig_setup(ctx, inputs, output):
    ctx.save_for_backward(*output)


def _sym_eig_backward(ctx, gL, gV):
    _forbid_create_graph("matbp.sym_eig")
    L, V = ctx.saved_tensors
    return _lib.sym_eig_backward(gL, gV, L, V)


def _eig_tangents(L, V, dA):
    """The tangents of L, V along dA: L' = diag(M), V' = V (F o M),
    M = Vᵀ sym(dA) V, F_ij = 1 / (λ_j − λ_i) and 0 at ties (|λ_j − λ_i| ≤
    n·eps·max|λ|, float64's eps): the adjoint of sym_eig_backward, with its
    tie policy (csrc/math/adjoint_weights.h: eig_adjoint_weight, tie_tolerance)."""
    L64, V64 = L.to(torch.float64), V.to(torch.float64)
    dA64 = dA.to(torch.float64)
    M = V64.mT @ ((dA64 + dA64.mT) / 2) @ V64
    n = L.shape[-1]
    if L.numel() == 0:
        return M.diagonal(dim1=-2, dim2=-1), V64 @ M
    tol = max(n, 1) * torch.finfo(torch.float64).eps * L64.abs().amax(-1, keepdim=True).unsqueeze(-1)
    gap = L64.unsqueeze(-2) - L64.unsqueeze(-1)  # [i, j] = λ_j − λ_i
    tied = gap.abs() <= tol
    F = torch.where(tied, 0.0, 1.0 / torch.where(tied, 1.0, gap))
    return M.diagonal(dim1=-2, dim2=-1), V64 @ (F * M)


def _sym_eig_jvp(primals, tangents, outputs):
    return _eig_tangents(*outputs, tangents[0])


_register_autograd("sym_eig", "matbp.sym_eig", _sym_eig_backward, setup_context=_sym_eig_setup,
                   jvp=_sym_eig_jvp)
_no_double_backward("sym_eig_backward")


def sym_eig(A: Tensor) -> Tuple[Tensor, Tensor]:
    """Batched symmetric eigendecomposition A = V diag(L) Vᵀ.

    Args:
        A: (*, n, n) floating point (float16, bfloat16, float32, float64); only the lower triangle is read.

    Returns:
        L: (*, n) eigenvalues in ascending order.
        V: (*, n, n) orthonormal eigenvectors (columns).

    LAPACK ``dsyevd`` on the CPU, one single-threaded call per matrix with the
    batch split across threads; float32 input is decomposed in float64.

    The backward is the paper's EIG adjoint,
    gA = V (diag(gL) + F ∘ skew(Vᵀ gV)) Vᵀ, F_ij = 1/(λ_j − λ_i). Where two
    eigenvalues tie (gap ≤ n·eps·max|λ|) the eigenvectors are not
    differentiable and F_ij is set to 0: the gradient stays finite but is only
    approximate for functions of V there. For spectral functions such as
    V f(L) Vᵀ use :func:`sym_fn` (or :func:`o2p_log`), whose backward is exact
    at repeated eigenvalues.
    """
    return _lib.sym_eig(A)


# -------------------------------------------------------------------- svd


@torch.library.register_fake("matbp::svd")
def _svd_fake(X):
    _check_float_matrix(X, "matbp.svd", "X", square=False)
    m, n = X.shape[-2], X.shape[-1]
    k = min(m, n)
    batch = X.shape[:-2]
    return X.new_empty((*batch, m, k)), X.new_empty((*batch, k)), X.new_empty((*batch, n, k))


@torch.library.register_fake("matbp::svd_backward")
def _svd_backward_fake(gU, gS, gV, U, S, V):
    op = "matbp.svd_backward"
    _check_float_matrix(U, op, "U", square=False)
    _check_float_matrix(V, op, "V", square=False)
    _check_same_device(V, "V", U, "U", op)
    m, k, n = U.shape[-2], U.shape[-1], V.shape[-2]
    torch._check(
        k == min(m, n),
        lambda: f"{op}: arguments 'U' (*, m, k) and 'V' (*, n, k) must be the thin SVD factors, "
        f"k = min(m, n), got {list(U.shape)} and {list(V.shape)}",
    )
    batch = U.shape[:-2]
    _check_fits(V, op, "V", (*batch, n, k), U, "U")
    _check_fits(S, op, "S", (*batch, k), U, "U")
    for name, g, ref in (("gU", gU, U), ("gS", gS, S), ("gV", gV, V)):
        if g is not None:
            _check_fits(g, op, name, ref.shape, U, "U")
    return U.new_empty((*batch, m, n))


def _svd_setup(ctx, inputs, output):
    ctx.save_for_backward(*output)


def _svd_backward(ctx, gU, gS, gV):
    _forbid_create_graph("matbp.svd")
    U, S, V = ctx.saved_tensors
    return _lib.svd_backward(gU, gS, gV, U, S, V)


def _svd_jvp(primals, tangents, outputs):
    """The tangents of U, S, V along dX, the adjoint of svd_backward with its
    weights and tie policy (csrc/ops/generic/svd.h, math::svd_adjoint_entry):
    P = Uᵀ dX V, S' = diag(P), U' = U (A o P − (A o P)ᵀ) + (dX V − U P) S⁺,
    V' = V (B o P − (B o P)ᵀ) + (dXᵀ U − V Pᵀ) S⁺, with A_ij = s_j / (s_i + s_j)
    / (s_j − s_i), B_ij = s_i / (s_i + s_j) / (s_j − s_i), 0 where
    |s_j − s_i| ≤ max(m, n)·eps·s_max, and S⁺ the pseudo-inverse at that
    tolerance (the complement terms vanish for a square factor)."""
    U, S, V = (t.to(torch.float64) for t in outputs)
    dX = tangents[0].to(torch.float64)
    m, n, k = U.shape[-2], V.shape[-2], S.shape[-1]
    P = U.mT @ dX @ V
    if k == 0:
        return U.new_zeros(U.shape), S.new_zeros(S.shape), V.new_zeros(V.shape)
    tie = (max(m, n) * torch.finfo(torch.float64).eps * S[..., :1]).unsqueeze(-1)  # S descending
    si, sj = S.unsqueeze(-1), S.unsqueeze(-2)
    gap = sj - si
    tied = gap.abs() <= tie
    safe_gap = torch.where(tied, 1.0, gap)
    safe_sum = torch.where(tied, 1.0, si + sj)
    A = torch.where(tied, 0.0, sj / safe_sum / safe_gap)
    B = torch.where(tied, 0.0, si / safe_sum / safe_gap)
    s_pinv = torch.where(S > tie[..., 0], 1.0 / torch.where(S > tie[..., 0], S, 1.0), 0.0)
    AP, BP = A * P, B * P
    dU = U @ (AP - AP.mT)
    dV = V @ (BP - BP.mT)
    if m > k:
        dU = dU + (dX @ V - U @ P) * s_pinv.unsqueeze(-2)
    if n > k:
        dV = dV + (dX.mT @ U - V @ P.mT) * s_pinv.unsqueeze(-2)
    return dU, P.diagonal(dim1=-2, dim2=-1), dV


_register_autograd("svd", "matbp.svd", _svd_backward, setup_context=_svd_setup, jvp=_svd_jvp)
_no_double_backward("svd_backward")


def svd(X: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Batched thin SVD X = U diag(S) Vᵀ.

    Args:
        X: (*, m, n) floating point (float16, bfloat16, float32, float64).

    Returns:
        U: (*, m, k), S: (*, k) descending, V: (*, n, k), k = min(m, n).
        Note that V is returned, not Vᵀ (unlike ``torch.linalg.svd``).

    LAPACK ``dgesdd`` on the CPU (float32 input is decomposed in float64).
    The backward is the general thin-SVD adjoint (Prop. 1 of the paper,
    including the (I − UUᵀ) gU S⁻¹ terms for m ≠ n). At tied singular values
    the coupling 1/(σ_j² − σ_i²) is set to 0, and S⁻¹ is the pseudo-inverse:
    the gradient stays finite but is approximate there.
    """
    return _lib.svd(X)


# ----------------------------------------------------------------- sym_fn


@torch.library.register_fake("matbp::sym_fn_with_eig")
def _sym_fn_with_eig_fake(A, fn, p=1.0):
    _check_float_matrix(A, "matbp.sym_fn", "A", square=True)
    torch._check(
        fn in _SPECTRAL_FNS,
        lambda: f"matbp.sym_fn: argument 'fn' must be one of 'log', 'sqrt', 'pow', 'exp', got '{fn}'",
    )
    n = A.shape[-1]
    return (
        A.new_empty(A.shape),
        A.new_empty(A.shape[:-1], dtype=torch.float64),
        A.new_empty(A.shape, dtype=torch.float64),
    )


def _check_eigenbasis_backward(g, g_name, L, V, op):
    _check_float_matrix(V, op, "V", square=True)
    _check_fits(L, op, "L", V.shape[:-1], V, "V")
    _check_fits(g, op, g_name, V.shape, V, "V")


@torch.library.register_fake("matbp::sym_fn_backward")
def _sym_fn_backward_fake(gF, L, V, fn, p):
    op = "matbp.sym_fn_backward"
    torch._check(
        fn in _SPECTRAL_FNS,
        lambda: f"{op}: argument 'fn' must be one of 'log', 'sqrt', 'pow', 'exp', got '{fn}'",
    )
    _check_eigenbasis_backward(gF, "gF", L, V, op)
    return gF.new_empty(gF.shape)


def _sym_fn_setup(ctx, inputs, output):
    _, fn, p = inputs
    _, L, V = output
    ctx.fn, ctx.p = fn, p
    ctx.input_dtype = inputs[0].dtype
    ctx.save_for_backward(L, V)


def _sym_fn_backward(ctx, gF, gL, gV):
    _forbid_create_graph("matbp.sym_fn")
    L, V = ctx.saved_tensors
    gA = None
    if gF is not None:
        gA = _lib.sym_fn_backward(gF, L, V, ctx.fn, ctx.p)
    if gL is not None or gV is not None:
        # L and V are outputs too (float64); honour gradients through them.
        g_eig = _lib.sym_eig_backward(gL, gV, L, V).to(ctx.input_dtype)
        gA = g_eig if gA is None else gA + g_eig
    return gA, None, None


def _sym_fn_jvp(primals, tangents, outputs):
    # f's Fréchet derivative is self-adjoint: the tangent is the backward map.
    _, fn, p = primals
    _, L, V = outputs
    dA = tangents[0]
    return (_lib.sym_fn_backward(dA, L, V, fn, p), *_eig_tangents(L, V, dA))


_register_autograd("sym_fn_with_eig", "matbp.sym_fn", _sym_fn_backward, setup_context=_sym_fn_setup,
                   jvp=_sym_fn_jvp)
_no_double_backward("sym_fn_backward")


def _describe(value) -> str:
    if value is None or isinstance(value, (str, bool, numbers.Number)):
        return repr(value)
    return type(value).__name__


def _as_float(value, op: str, arg: str, what: str) -> float:
    # The wrappers check the type only; the operators check the value, with
    # the same message for a direct torch.ops call.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: argument '{arg}' must be {what}, got {_describe(value)}")
    return float(value)


def sym_fn(A: Tensor, fn: str, p: Optional[float] = None) -> Tensor:
    """Spectral matrix function f(A) = V f(Λ) Vᵀ of symmetric A.

    Args:
        A: (*, n, n) floating point, symmetric (lower triangle read).
        fn: "log" (A positive definite), "sqrt" (positive semi-definite),
            "pow" (exponent ``p``; PSD for p > 0, PD for p ≤ 0) or "exp".
        p: the exponent, required for "pow" and only for it.

    Returns:
        f(A), (*, n, n), the dtype of A (computed in float64).

    The backward is Daleckii–Krein, gA = V (F¹ ∘ Vᵀ sym(G) V) Vᵀ with the
    first divided differences F¹ of f evaluated stably: it is exact when
    eigenvalues repeat (F¹_ii = f'(λ_i)), unlike a composition through
    :func:`sym_eig`. Eigenvalues within n·eps·max|λ| below zero count as
    zero for "sqrt" and "pow"; eigenvalues outside the domain raise.
    """
    if not isinstance(fn, str):
        raise TypeError(
            "matbp.sym_fn: argument 'fn' must be a string, one of 'log', 'sqrt', 'pow', 'exp', "
            f"got {_describe(fn)}"
        )
    if fn not in _SPECTRAL_FNS:
        raise ValueError(
            f"matbp.sym_fn: argument 'fn' must be one of 'log', 'sqrt', 'pow', 'exp', got {fn!r}"
        )
    if fn == "pow":
        if p is None:
            raise ValueError("matbp.sym_fn: fn='pow' needs the exponent 'p'")
        p = _as_float(p, "matbp.sym_fn", "p", "a finite number")
    elif p is not None:
        raise ValueError(f"matbp.sym_fn: argument 'p' is only used by fn='pow', got fn={fn!r}")
    return _lib.sym_fn(A, fn, 1.0 if p is None else p)


# ---------------------------------------------------------------- o2p_log


def _check_o2p_eps(eps, op):
    torch._check(
        math.isfinite(eps) and eps >= sys.float_info.min,
        lambda: f"{op}: argument 'eps' must be a positive finite number >= {sys.float_info.min!r} "
        f"(the smallest normal float64), got {eps}",
    )


def _o2p_eig_size(X) -> int:
    # The rows path (m < d) decomposes X Xᵀ, the cols path Xᵀ X.
    return min(X.shape[-2], X.shape[-1])


@torch.library.register_fake("matbp::o2p_log_with_eig")
def _o2p_log_with_eig_fake(X, eps=1e-3):
    _check_float_matrix(X, "matbp.o2p_log", "X", square=False)
    _check_o2p_eps(eps, "matbp.o2p_log")
    m, d, k = X.shape[-2], X.shape[-1], _o2p_eig_size(X)
    batch = X.shape[:-2]
    return (
        X.new_empty((*batch, d, d)),
        X.new_empty((*batch, k), dtype=torch.float64),
        X.new_empty((*batch, k, k), dtype=torch.float64),
        # Y = Uᵀ X on the rows path (m < d), empty on the cols path.
        X.new_empty((*batch, m if m < d else 0, d), dtype=torch.float64),
    )


def _check_o2p_saved(X, S, U, Y, eps, op):
    _check_float_matrix(X, op, "X", square=False)
    _check_o2p_eps(eps, op)
    m, d, k = X.shape[-2], X.shape[-1], _o2p_eig_size(X)
    batch = X.shape[:-2]
    _check_fits(S, op, "S", (*batch, k), X, "X")
    _check_fits(U, op, "U", (*batch, k, k), X, "X")
    _check_fits(Y, op, "Y", (*batch, m if m < d else 0, d), X, "X")


@torch.library.register_fake("matbp::o2p_log_backward")
def _o2p_log_backward_fake(gC, X, S, U, Y, eps):
    op = "matbp.o2p_log_backward"
    _check_o2p_saved(X, S, U, Y, eps, op)
    d = X.shape[-1]
    _check_fits(gC, op, "gC", (*X.shape[:-2], d, d), X, "X")
    return X.new_empty(X.shape)


@torch.library.register_fake("matbp::o2p_log_jvp")
def _o2p_log_jvp_fake(dX, X, S, U, Y, eps):
    op = "matbp.o2p_log_jvp"
    _check_o2p_saved(X, S, U, Y, eps, op)
    _check_fits(dX, op, "dX", X.shape, X, "X")
    d = X.shape[-1]
    return X.new_empty((*X.shape[:-2], d, d))


def _o2p_log_setup(ctx, inputs, output):
    X, eps = inputs
    _, S, U, Y = output
    ctx.eps = eps
    ctx.mark_non_differentiable(S, U, Y)
    ctx.set_materialize_grads(False)  # no zero tensors for the auxiliary outputs
    ctx.save_for_backward(X, S, U, Y)


def _o2p_log_backward(ctx, gC, gS, gU, gY):
    _forbid_create_graph("matbp.o2p_log")
    if gC is None:
        return None, None
    X, S, U, Y = ctx.saved_tensors
    return _lib.o2p_log_backward(gC, X, S, U, Y, ctx.eps), None


def _o2p_log_jvp(primals, tangents, outputs):
    X, eps = primals
    _, S, U, Y = outputs
    return _lib.o2p_log_jvp(tangents[0], X, S, U, Y, eps), None, None, None


_register_autograd(
    "o2p_log_with_eig", "matbp.o2p_log", _o2p_log_backward, setup_context=_o2p_log_setup, jvp=_o2p_log_jvp
)
_no_double_backward("o2p_log_backward")
_no_double_backward("o2p_log_jvp")


def o2p_log(X: Tensor, eps: float = 1e-3) -> Tensor:
    """Second-order pooling log layer C = log(XᵀX + eps·I) (DeepO2P, eq. 4).

    Args:
        X: (*, m, d) floating point — m positions (rows) × d channels.
            No 1/m normalisation is applied: pass ``X / sqrt(m)`` for the log
            of a (non-centred) covariance.
        eps: the regulariser, > 0 (the paper's 1e-3 by default).

    Returns:
        C: (*, d, d), the dtype of X (computed in float64).

    For m < d (the usual case for conv features, e.g. 169 positions × 256
    channels) the op decomposes the m×m Gram matrix X Xᵀ and never forms a
    d×d eigenproblem: C = log(eps)·I + Xᵀ U h(S) Uᵀ X with
    h(s) = log1p(s/eps)/s. For m ≥ d it decomposes Xᵀ X. Both backwards use
    divided differences (of log, and the second divided differences of log
    that h needs) evaluated stably, so gradients are exact when eigenvalues
    repeat or vanish, and finite for zero or rank-deficient input.
    """
    return _lib.o2p_log(X, _as_float(eps, "matbp.o2p_log", "eps", "a positive finite number"))


# -------------------------------------------------------------- projector


@torch.library.register_fake("matbp::projector_with_eig")
def _projector_with_eig_fake(A, rtol=None):
    _check_float_matrix(A, "matbp.projector", "A", square=True)
    return (
        A.new_empty(A.shape),
        A.new_empty(A.shape[:-1], dtype=torch.float64),
        A.new_empty(A.shape, dtype=torch.float64),
    )


@torch.library.register_fake("matbp::projector_backward")
def _projector_backward_fake(gP, L, V, rtol):
    _check_eigenbasis_backward(gP, "gP", L, V, "matbp.projector_backward")
    return gP.new_empty(gP.shape)


def _projector_setup(ctx, inputs, output):
    _, rtol = inputs
    _, L, V = output
    ctx.rtol = rtol
    ctx.mark_non_differentiable(L, V)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(L, V)


def _projector_backward(ctx, gP, gL, gV):
    _forbid_create_graph("matbp.projector")
    if gP is None:
        return None, None
    L, V = ctx.saved_tensors
    return _lib.projector_backward(gP, L, V, ctx.rtol), None


def _projector_jvp(primals, tangents, outputs):
    # The projector's derivative is self-adjoint: the tangent is the backward map.
    _, L, V = outputs
    return _lib.projector_backward(tangents[0], L, V, primals[1]), None, None


_register_autograd(
    "projector_with_eig", "matbp.projector", _projector_backward, setup_context=_projector_setup,
    jvp=_projector_jvp,
)
_no_double_backward("projector_backward")


def projector(A: Tensor, rtol: Optional[float] = None) -> Tensor:
    """Orthogonal projector Π_A = A A⁺ onto the range of symmetric A.

    Args:
        A: (*, n, n) floating point, symmetric (lower triangle read).
        rtol: eigenvalues with |λ| ≤ rtol·max|λ| count as zero (the numerical
            rank); default n·eps.

    Returns:
        Π_A, (*, n, n), the dtype of A (computed in float64).

    Backward: the paper's eq. (19), dΠ = 2 sym((I − Π) dA A⁺), i.e.
    gA = sym((I − Π) sym(G) A⁺ + A⁺ sym(G) (I − Π)), valid while the rank is
    locally constant; formed in A's eigenbasis, with no division by
    eigenvalue gaps.
    """
    if rtol is not None:
        rtol = _as_float(rtol, "matbp.projector", "rtol", "None or a finite number >= 0")
    return _lib.projector(A, rtol)


# ---------------------------------------------------------- normalized cuts


@torch.library.register_fake("matbp::ncut_projector_distance_with_basis")
def _ncut_with_basis_fake(Y, weights, labels, Lambda=None, rtol=None):
    op = "matbp.ncut_projector_distance"
    _check_float_matrix(Y, op, "Y", square=False)
    for name, t in (("weights", weights), ("labels", labels), ("Lambda", Lambda)):
        if t is not None:
            _check_same_device(t, name, Y, "Y", op)
    m, d = Y.shape[-2], Y.shape[-1]
    k = min(m, d)
    batch = Y.shape[:-2]
    f64 = dict(dtype=torch.float64)
    # The number of distinct (image, label) segments is data-dependent.
    count = torch.library.get_ctx().new_dynamic_size()
    return (
        Y.new_empty(batch),
        Y.new_empty(batch, dtype=torch.int64),
        Y.new_empty((*batch, m, k), **f64),
        Y.new_empty((*batch, k, d), **f64),
        Y.new_empty((*batch, k), **f64),
        Y.new_empty((*batch, m), dtype=torch.int64),
        Y.new_empty((count,), dtype=torch.int64),
        Y.new_empty((count, k + d + 1), **f64),
    )


@torch.library.register_fake("matbp::ncut_projector_distance_backward")
def _ncut_backward_fake(gJ, weights, Lambda, Q, P0, mu_pinv, segment_index, segment_image, segment_stats):
    op = "matbp.ncut_projector_distance_backward"
    _check_float_matrix(Q, op, "Q", square=False)
    _check_float_matrix(P0, op, "P0", square=False)
    batch, k, d = Q.shape[:-2], Q.shape[-1], P0.shape[-1]
    _check_fits(P0, op, "P0", (*batch, k, d), Q, "Q")
    _check_fits(mu_pinv, op, "mu_pinv", (*batch, k), Q, "Q")
    _check_fits(gJ, op, "gJ", batch, Q, "Q")
    _check_fits(weights, op, "weights", Q.shape[:-1], Q, "Q")
    for name, t in (("segment_index", segment_index), ("segment_image", segment_image),
                    ("segment_stats", segment_stats), ("Lambda", Lambda)):
        if t is not None:
            _check_same_device(t, name, Q, "Q", op)
    gLambda = Lambda.new_empty(Lambda.shape) if Lambda is not None else Q.new_empty((d, d))
    return Q.new_empty((*Q.shape[:-1], d)), weights.new_empty(weights.shape), gLambda


def _ncut_setup(ctx, inputs, output):
    Y, weights, labels, Lambda, rtol = inputs
    _, rank, Q, P0, mu_pinv, seg_index, seg_image, stats = output
    ctx.mark_non_differentiable(rank, Q, P0, mu_pinv, seg_index, seg_image, stats)
    ctx.set_materialize_grads(False)
    ctx.has_lambda = Lambda is not None
    ctx.y_dtype = Y.dtype
    ctx.save_for_backward(weights, Lambda, Q, P0, mu_pinv, seg_index, seg_image, stats)


_NCUT_NAME = "matbp.ncut_projector_distance (used by matbp.ncut_j1 and matbp.ncut_j2)"


def _ncut_backward(ctx, gJ, *unused):
    _forbid_create_graph(_NCUT_NAME)
    if gJ is None:
        return None, None, None, None, None
    weights, Lambda, *basis = ctx.saved_tensors
    gY, gw, gLambda = _lib.ncut_projector_distance_backward(gJ, weights, Lambda, *basis)
    return gY.to(ctx.y_dtype), gw, None, (gLambda if ctx.has_lambda else None), None


def _ncut_jvp(primals, tangents, outputs):
    # J is a scalar per image: J' = <gY, Y'> + <gw, w'> + <gΛ, Λ'> with the
    # gradients of the backward op at gJ = 1.
    Y, weights, _, Lambda, _ = primals
    dY, dw, _, dLambda, _ = tangents
    J, _, *basis = outputs
    gY, gw, gLambda = _lib.ncut_projector_distance_backward(torch.ones_like(J), weights, Lambda, *basis)
    terms = []
    if dY is not None:
        terms.append((gY * dY.to(gY.dtype)).sum((-2, -1)))
    if dw is not None:
        terms.append((gw * dw.to(gw.dtype)).sum(-1))
    if dLambda is not None:
        if Lambda.dim() == 2 and J.numel() > 1:
            # One Λ shared by the batch: its gradient sums the images; one
            # backward per image separates them.
            per_image = []
            for b in range(J.numel()):
                gJ = torch.zeros(J.numel(), dtype=J.dtype, device=J.device)
                gJ[b] = 1
                g = _lib.ncut_projector_distance_backward(gJ.reshape(J.shape), weights, Lambda, *basis)[2]
                per_image.append((g * dLambda.to(g.dtype)).sum())
            terms.append(torch.stack(per_image).reshape(J.shape))
        else:
            terms.append((gLambda * dLambda.to(gLambda.dtype)).sum((-2, -1)))
    return (sum(terms), *([None] * 7))


_register_autograd(
    "ncut_projector_distance_with_basis", _NCUT_NAME, _ncut_backward, setup_context=_ncut_setup,
    jvp=_ncut_jvp,
)
_no_double_backward("ncut_projector_distance_backward")


# ------------------------------------------------------------- autocast
#
# Under torch.autocast every op runs as one of autocast's float32 list:
# float16/bfloat16 arguments are cast to float32 (float64 ones are kept), the
# op runs with autocast off, and its results come back in float32 (computed
# in float64 inside, as for any float32 input). Registered on the ops with
# kernels; sym_fn, o2p_log, projector and ncut_projector_distance reach them
# through their _with_eig/_with_basis forms. The backward ops need no rule:
# they take the dtypes their forward produced.
_AUTOCAST_OPS = ("sym_eig", "svd", "sym_fn_with_eig", "o2p_log_with_eig", "projector_with_eig",
                 "ncut_projector_distance_with_basis")

for _device_type in ("cpu", "cuda"):
    if torch.amp.is_autocast_available(_device_type):
        for _name in _AUTOCAST_OPS:
            torch.library.register_autocast(f"matbp::{_name}", _device_type, torch.float32)
