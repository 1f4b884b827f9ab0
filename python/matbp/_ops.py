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
# - Double backward (create_graph=True): the backward of sym_fn, o2p_log and
#   projector is differentiated in A (X) directly, by the second-order
#   Daleckii–Krein form (ops *_second_derivative, exact at ties), not through
#   their saved eigendecompositions, whose derivative divides by eigenvalue
#   gaps; the normalized-cuts core through its objective written with torch
#   ops and projector (_ncut_composition). sym_eig_backward and svd_backward
#   are differentiated as the compositions of torch ops they are, with their
#   tie policy, so that the chain continues into sym_eig's (svd's) backward.
#   The exact second derivatives are differentiable again only in their
#   incoming cotangent; a third derivative in any other direction raises
#   (_ThirdDerivativeGuard), never dropping the terms it would need.

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


_DOUBLE_BACKWARD = "double backward (differentiating a gradient, create_graph=True)"
_TRIPLE_BACKWARD = "third derivatives (differentiating a second derivative, create_graph=True)"


def _no_double_backward(op_name: str):
    # For direct calls of a backward op on tensors that require grad.
    def backward(ctx, *grads):
        raise NotImplementedError(f"matbp.{op_name}: {_DOUBLE_BACKWARD} is not supported")

    _register_autograd(op_name, f"matbp.{op_name}", backward)


def _derivative_of_composition(composition, inputs, grad_output):
    """The vector-Jacobian product of ``composition(*inputs)`` (torch ops, a
    restatement of a backward op) with ``grad_output``: the backward of that
    backward op, in the inputs' dtypes (None for absent or unused inputs).
    Under create_graph=True it is built on the live inputs, so derivatives of
    any order follow the composition."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        # Live inputs enter through a view of their own: the partial derivative
        # in each, not a total one through inputs computed from others (gV from V).
        leaves = [
            None if t is None else (t.view_as(t) if create_graph and t.requires_grad
                                    else t.detach().requires_grad_())
            for t in inputs
        ]
        out = composition(*[None if x is None else x.to(torch.float64) for x in leaves])
        used = [x for x in leaves if x is not None]
        grads = iter(torch.autograd.grad(out, used, grad_output.to(out.dtype), allow_unused=True,
                                         create_graph=create_graph))
    result = []
    for t in inputs:
        g = None if t is None else next(grads)
        result.append(None if g is None else g.to(t.dtype))
    return tuple(result)


class _ThirdDerivativeGuard(torch.autograd.Function):
    """Zeros that tie a second derivative to the tensors it was computed from
    as constants: differentiating it in their direction (a third derivative)
    raises instead of silently missing their terms. Only the direction of the
    incoming cotangent is differentiable, which is what
    torch.autograd.functional.hvp's double-backward trick needs."""

    @staticmethod
    def forward(ctx, public_name, like, *tensors):
        ctx.public_name = public_name
        return torch.zeros_like(like)

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError(f"{ctx.public_name}: {_TRIPLE_BACKWARD} is not supported")


def _guard_third_derivatives(public_name, out, *tensors):
    live = [t for t in tensors if isinstance(t, Tensor) and t.requires_grad]
    if out is None or not live or not torch.is_grad_enabled():
        return out
    return out + _ThirdDerivativeGuard.apply(public_name, out.detach(), *live)


def _detached(*tensors):
    return tuple(None if t is None else t.detach() for t in tensors)


class _EigenbasisBackward(torch.autograd.Function):
    """gA = backward(g, L, V) of an op f(A) = V k(L) Vᵀ as a function of g and
    of A itself, so that create_graph=True differentiates it exactly: in g by
    the backward again (the derivative is self-adjoint), in A by
    ``second_derivative(g, H, L, V)``, the second-order Daleckii–Krein form,
    with no division by eigenvalue gaps (differentiating through the saved L
    and V would divide by them, and drop the coupling at ties)."""

    @staticmethod
    def forward(ctx, g, A, L, V, backward, second_derivative, public_name):
        ctx.save_for_backward(g, A, L, V)
        ctx.backward, ctx.second_derivative, ctx.public_name = backward, second_derivative, public_name
        return backward(g, L, V)

    @staticmethod
    def backward(ctx, H):
        g, A, L, V = ctx.saved_tensors
        g0, L0, V0 = _detached(g, L, V)
        grad_g = grad_A = None
        if ctx.needs_input_grad[0]:
            grad_g = _guard_third_derivatives(ctx.public_name, ctx.backward(H, L0, V0), g, A, L, V)
        if ctx.needs_input_grad[1]:
            grad_A = ctx.second_derivative(g0, H, L0, V0).to(A.dtype)
            grad_A = _guard_third_derivatives(ctx.public_name, grad_A, g, A, L, V)
        return grad_g, grad_A, None, None, None, None, None


def _eigenbasis_backward(g, A, L, V, backward, second_derivative, public_name):
    if torch.is_grad_enabled():  # create_graph=True: differentiable in g and A
        return _EigenbasisBackward.apply(g, A, L, V, backward, second_derivative, public_name)
    return backward(g, L, V)


def _register_linear_autograd(op_name: str, adjoints, unsupported: str) -> None:
    """Autograd of an op that is linear in the tensor arguments at the
    positions of ``adjoints`` (position -> adjoint(args, H), the gradient there
    for the cotangent H); a derivative in any other tensor argument raises
    NotImplementedError with ``unsupported``. The adjoints run with grad mode
    as the engine sets it, so they are differentiable in H again."""
    public_name = f"matbp.{op_name}"

    def setup(ctx, inputs, output):
        ctx.tensor_positions = [i for i, a in enumerate(inputs) if isinstance(a, Tensor)]
        ctx.others = {i: a for i, a in enumerate(inputs) if not isinstance(a, Tensor)}
        ctx.count = len(inputs)
        ctx.save_for_backward(*(inputs[i] for i in ctx.tensor_positions))

    def backward(ctx, H):
        args = [None] * ctx.count
        for i, t in zip(ctx.tensor_positions, ctx.saved_tensors):
            args[i] = t
        for i, a in ctx.others.items():
            args[i] = a
        grads = [None] * ctx.count
        for i in ctx.tensor_positions:
            if not ctx.needs_input_grad[i]:
                continue
            if i not in adjoints:
                raise NotImplementedError(f"{public_name}: {unsupported}")
            grads[i] = adjoints[i](args, H)
        return tuple(grads)

    _register_autograd(op_name, public_name, backward, setup_context=setup)


def _register_eigenbasis_derivatives(op: str, backward, second_derivative) -> None:
    """Autograd of a direct call of <op>_backward(g, L, V, ...) (linear in g,
    the backward again) and <op>_second_derivative(G, H, L, V, ...) (linear in
    G and H: <K, D²f[G, H]> is symmetric in G, H and K); in L and V neither is
    offered (the exact derivatives are taken in A, through the forward op)."""
    _register_linear_autograd(
        f"{op}_backward", {0: lambda a, H: backward(H, *a[1:])},
        f"derivatives with respect to 'L' and 'V' are not supported; differentiate matbp.{op} twice "
        "instead (its second derivative is exact)",
    )
    _register_linear_autograd(
        f"{op}_second_derivative",
        {0: lambda a, K: second_derivative(a[1], K, *a[2:]), 1: lambda a, K: second_derivative(a[0], K, *a[2:])},
        f"{_TRIPLE_BACKWARD} (derivatives with respect to 'L' and 'V') is not supported",
    )


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


# ------------------------------------------------------- compute dtype
#
# sym_eig and sym_fn compute in float64 whatever the input's dtype (the
# numerics policy); compute_dtype=torch.float32 is the opt-in float32 compute
# mode (CPU): float32 decompositions and products, the divided differences
# and tie tests still evaluated in float64 from the float32 eigenvalues, with
# float32's rounding in the tolerances.

_COMPUTE_DTYPES = (torch.float32, torch.float64)


def _check_compute_dtype_type(compute_dtype, op: str) -> None:
    # The wrappers' type check; the operators check the value.
    if compute_dtype is not None and not isinstance(compute_dtype, torch.dtype):
        raise TypeError(
            f"{op}: argument 'compute_dtype' must be torch.float32, torch.float64 or None, "
            f"got {_describe(compute_dtype)}"
        )


def _compute_dtype(compute_dtype, op: str) -> torch.dtype:
    """The dtype an op computes in (csrc/ops/checks.h: resolve_compute_dtype)."""
    if compute_dtype is None:
        return torch.float64
    torch._check(
        compute_dtype in _COMPUTE_DTYPES,
        lambda: f"{op}: argument 'compute_dtype' must be torch.float32 or torch.float64 (or None: "
        f"float64), got {compute_dtype}",
    )
    return compute_dtype


def _check_decomposition_device(compute: torch.dtype, op: str, A: Tensor) -> None:
    # The CUDA backend's sym_eig refuses the float32 compute mode (cuda_backend.cuh).
    torch._check(
        compute == torch.float64 or A.device.type == "cpu",
        lambda: f"{op}: compute_dtype=torch.float32 is not implemented on CUDA yet (only on the "
        "CPU); on CUDA leave compute_dtype unset (float64)",
    )


def _unit_roundoff(compute_dtype) -> float:
    """eps of the dtype an op computed in: the tie tests' precision."""
    return torch.finfo(torch.float64 if compute_dtype is None else compute_dtype).eps


# ---------------------------------------------------------------- sym_eig


@torch.library.register_fake("matbp::sym_eig")
def _sym_eig_fake(A, compute_dtype=None):
    compute = _compute_dtype(compute_dtype, "matbp.sym_eig")
    _check_float_matrix(A, "matbp.sym_eig", "A", square=True)
    _check_decomposition_device(compute, "matbp.sym_eig", A)
    n = A.shape[-1]
    return A.new_empty(A.shape[:-1]), A.new_empty((*A.shape[:-2], n, n))


@torch.library.register_fake("matbp::sym_eig_backward")
def _sym_eig_backward_fake(gL, gV, L, V, compute_dtype=None):
    op = "matbp.sym_eig_backward"
    _compute_dtype(compute_dtype, op)
    _check_float_matrix(V, op, "V", square=True)
    _check_fits(L, op, "L", V.shape[:-1], V, "V")
    if gL is not None:
        _check_fits(gL, op, "gL", V.shape[:-1], V, "V")
    if gV is not None:
        _check_fits(gV, op, "gV", V.shape, V, "V")
    return V.new_empty(V.shape)


def _sym_eig_setup(ctx, inputs, output):
    # An unused output's gradient stays None: the backward op skips its term.
    ctx.set_materialize_grads(False)
    _, ctx.compute_dtype = inputs
    ctx.save_for_backward(*output)


def _sym_eig_backward(ctx, gL, gV):
    L, V = ctx.saved_tensors
    return _lib.sym_eig_backward(gL, gV, L, V, ctx.compute_dtype), None


def _eig_coupling(L, eps):
    """F_ij = 1/(λ_j − λ_i), 0 at ties (|λ_j − λ_i| ≤ n·eps·max|λ|, eps of
    the dtype L was computed in): the EIG adjoint's weights with the backward
    kernel's tie policy (csrc/math/adjoint_weights.h: eig_adjoint_weight,
    rounding_tolerance); the tolerance and the tie mask are constants, F
    differentiable in L. n ≥ 1."""
    tol = L.shape[-1] * eps * L.detach().abs().amax(-1)[..., None, None]
    gap = L.unsqueeze(-2) - L.unsqueeze(-1)  # [i, j] = λ_j − λ_i
    tied = gap.detach().abs() <= tol
    return torch.where(tied, 0.0, 1.0 / torch.where(tied, 1.0, gap))


def _sym_eig_backward_composition(gL, gV, L, V, eps):
    """sym_eig_backward as torch ops (float64): V (diag(gL) + F o skew(Vᵀ gV)) Vᵀ,
    ties at ``eps`` (_eig_coupling)."""
    inner = torch.zeros(V.shape, dtype=V.dtype, device=V.device)
    if gV is not None and L.shape[-1] > 0:
        M = V.mT @ gV
        inner = inner + _eig_coupling(L, eps) * (M - M.mT) / 2
    if gL is not None:
        inner = inner + torch.diag_embed(gL)
    return V @ inner @ V.mT


def _sym_eig_backward_setup(ctx, inputs, output):
    *tensors, compute_dtype = inputs
    ctx.eps = _unit_roundoff(compute_dtype)
    ctx.save_for_backward(*tensors)


def _sym_eig_backward_derivative(ctx, H):
    eps = ctx.eps
    return (*_derivative_of_composition(
        lambda gL, gV, L, V: _sym_eig_backward_composition(gL, gV, L, V, eps), ctx.saved_tensors, H),
        None)


def _eig_tangents(L, V, dA, compute_dtype):
    """The tangents of L, V along dA: L' = diag(M), V' = V (F o M),
    M = Vᵀ sym(dA) V, F_ij = 1 / (λ_j − λ_i) and 0 at ties (|λ_j − λ_i| ≤
    n·eps·max|λ|, eps of compute_dtype): the adjoint of sym_eig_backward,
    with its tie policy (csrc/math/adjoint_weights.h: eig_adjoint_weight,
    rounding_tolerance)."""
    L64, V64 = L.to(torch.float64), V.to(torch.float64)
    dA64 = dA.to(torch.float64)
    M = V64.mT @ ((dA64 + dA64.mT) / 2) @ V64
    if L.numel() == 0:
        return M.diagonal(dim1=-2, dim2=-1), V64 @ M
    return M.diagonal(dim1=-2, dim2=-1), V64 @ (_eig_coupling(L64, _unit_roundoff(compute_dtype)) * M)


def _sym_eig_jvp(primals, tangents, outputs):
    _, compute_dtype = primals
    return _eig_tangents(*outputs, tangents[0], compute_dtype)


_register_autograd("sym_eig", "matbp.sym_eig", _sym_eig_backward, setup_context=_sym_eig_setup,
                   jvp=_sym_eig_jvp)
_register_autograd("sym_eig_backward", "matbp.sym_eig_backward", _sym_eig_backward_derivative,
                   setup_context=_sym_eig_backward_setup)


def sym_eig(A: Tensor, *, compute_dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
    """Batched symmetric eigendecomposition A = V diag(L) Vᵀ.

    Args:
        A: (*, n, n) floating point (float16, bfloat16, float32, float64); only the lower triangle is read.
        compute_dtype: None (float64, the default for every input dtype) or
            torch.float32, the opt-in float32 compute mode (CPU only): the
            decomposition and the backward's products in float32, ties at
            float32's tolerance n·eps₃₂·max|λ|. The outputs keep A's dtype.

    Returns:
        L: (*, n) eigenvalues in ascending order.
        V: (*, n, n) orthonormal eigenvectors (columns).

    On the CPU, matbp's batched QL solver up to n = 64 (eight matrices per
    SIMD instruction; sixteen in the float32 compute mode) and LAPACK
    ``dsyevd`` (``ssyevd``) above, the batch split across threads either way
    (``MATBP_QL_MAX_N`` moves the crossover); cuSOLVER on CUDA. float32 input
    is decomposed in float64 unless ``compute_dtype=torch.float32``.

    The backward is the paper's EIG adjoint,
    gA = V (diag(gL) + F ∘ skew(Vᵀ gV)) Vᵀ, F_ij = 1/(λ_j − λ_i). Where two
    eigenvalues tie (gap ≤ n·eps·max|λ|) the eigenvectors are not
    differentiable and F_ij is set to 0: the gradient stays finite but is only
    approximate for functions of V there. For spectral functions such as
    V f(L) Vᵀ use :func:`sym_fn` (or :func:`o2p_log`), whose backward is exact
    at repeated eigenvalues.
    """
    _check_compute_dtype_type(compute_dtype, "matbp.sym_eig")
    return _lib.sym_eig(A, compute_dtype)


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
    ctx.set_materialize_grads(False)  # as sym_eig's
    ctx.save_for_backward(*output)


def _svd_backward(ctx, gU, gS, gV):
    U, S, V = ctx.saved_tensors
    return _lib.svd_backward(gU, gS, gV, U, S, V)


def _svd_coupling(S, m, n):
    """(A, B, S⁺): A_ij = s_j / (s_i + s_j) / (s_j − s_i), B_ij = s_i / (s_i + s_j)
    / (s_j − s_i), 0 where |s_j − s_i| ≤ max(m, n)·eps·s_max, and S⁺ the
    pseudo-inverse at that tolerance: the SVD adjoint's weights with the backward
    kernel's tie policy (math::svd_adjoint_entry, pseudo_inverse); the tolerance
    and masks are constants, the weights differentiable in S (descending, k ≥ 1)."""
    tol = (max(m, n) * torch.finfo(torch.float64).eps * S.detach()[..., :1]).unsqueeze(-1)
    si, sj = S.unsqueeze(-1), S.unsqueeze(-2)
    tied = (sj - si).detach().abs() <= tol
    safe_gap = torch.where(tied, 1.0, sj - si)
    safe_sum = torch.where(tied, 1.0, si + sj)
    A = torch.where(tied, 0.0, sj / safe_sum / safe_gap)
    B = torch.where(tied, 0.0, si / safe_sum / safe_gap)
    resolved = S.detach() > tol[..., 0]
    return A, B, torch.where(resolved, 1.0 / torch.where(resolved, S, 1.0), 0.0)


def _svd_backward_composition(gU, gS, gV, U, S, V):
    """svd_backward as torch ops (float64), with its tie policy (_svd_coupling):
    gX = U [diag(gS) + A o (M − Mᵀ) + B o (N − Nᵀ)] Vᵀ + (gU − U M) S⁺ Vᵀ
    + U S⁺ (gV − V N)ᵀ, M = Uᵀ gU, N = Vᵀ gV."""
    m, n, k = U.shape[-2], V.shape[-2], S.shape[-1]
    inner = torch.zeros((*S.shape, k), dtype=S.dtype, device=S.device)
    if k == 0:
        return U @ inner @ V.mT
    A, B, s_pinv = _svd_coupling(S, m, n)
    gX = 0
    if gU is not None:
        M = U.mT @ gU
        inner = inner + A * (M - M.mT)
        if m > k:
            gX = gX + ((gU - U @ M) * s_pinv.unsqueeze(-2)) @ V.mT
    if gV is not None:
        N = V.mT @ gV
        inner = inner + B * (N - N.mT)
        if n > k:
            gX = gX + (U * s_pinv.unsqueeze(-2)) @ (gV - V @ N).mT
    if gS is not None:
        inner = inner + torch.diag_embed(gS)
    return U @ inner @ V.mT + gX


def _svd_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _svd_backward_derivative(ctx, H):
    return _derivative_of_composition(_svd_backward_composition, ctx.saved_tensors, H)


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
    A, B, s_pinv = _svd_coupling(S, m, n)
    AP, BP = A * P, B * P
    dU = U @ (AP - AP.mT)
    dV = V @ (BP - BP.mT)
    if m > k:
        dU = dU + (dX @ V - U @ P) * s_pinv.unsqueeze(-2)
    if n > k:
        dV = dV + (dX.mT @ U - V @ P.mT) * s_pinv.unsqueeze(-2)
    return dU, P.diagonal(dim1=-2, dim2=-1), dV


_register_autograd("svd", "matbp.svd", _svd_backward, setup_context=_svd_setup, jvp=_svd_jvp)
_register_autograd("svd_backward", "matbp.svd_backward", _svd_backward_derivative,
                   setup_context=_svd_backward_setup)


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
def _sym_fn_with_eig_fake(A, fn, p=1.0, compute_dtype=None):
    torch._check(
        fn in _SPECTRAL_FNS,
        lambda: f"matbp.sym_fn: argument 'fn' must be one of 'log', 'sqrt', 'pow', 'exp', got '{fn}'",
    )
    compute = _compute_dtype(compute_dtype, "matbp.sym_fn")
    _check_float_matrix(A, "matbp.sym_fn", "A", square=True)
    _check_decomposition_device(compute, "matbp.sym_fn", A)
    # L and V in the compute dtype, which sym_fn_backward follows.
    return (
        A.new_empty(A.shape),
        A.new_empty(A.shape[:-1], dtype=compute),
        A.new_empty(A.shape, dtype=compute),
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


@torch.library.register_fake("matbp::sym_fn_second_derivative")
def _sym_fn_second_derivative_fake(G, H, L, V, fn, p):
    op = "matbp.sym_fn_second_derivative"
    torch._check(
        fn in _SPECTRAL_FNS,
        lambda: f"{op}: argument 'fn' must be one of 'log', 'sqrt', 'pow', 'exp', got '{fn}'",
    )
    _check_eigenbasis_backward(G, "G", L, V, op)
    _check_fits(H, op, "H", V.shape, V, "V")
    return G.new_empty(G.shape)


def _sym_fn_setup(ctx, inputs, output):
    A, fn, p, compute_dtype = inputs
    _, L, V = output
    ctx.fn, ctx.p, ctx.compute_dtype = fn, p, compute_dtype
    ctx.input_dtype = A.dtype
    # matbp.sym_fn uses F only: no zero gL, gV (a wasted sym_eig_backward, 20% of the time).
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(A, L, V)


def _sym_fn_backward(ctx, gF, gL, gV):
    A, L, V = ctx.saved_tensors
    gA = None
    if gF is not None:
        fn, p = ctx.fn, ctx.p
        gA = _eigenbasis_backward(
            gF, A, L, V,
            lambda g, L, V: _lib.sym_fn_backward(g, L, V, fn, p),
            lambda g, h, L, V: _lib.sym_fn_second_derivative(g, h, L, V, fn, p),
            "matbp.sym_fn",
        )
    if gL is not None or gV is not None:
        # L and V are outputs too (of the compute dtype); honour gradients through them.
        g_eig = _lib.sym_eig_backward(gL, gV, L, V, ctx.compute_dtype).to(ctx.input_dtype)
        gA = g_eig if gA is None else gA + g_eig
    return gA, None, None, None


def _sym_fn_jvp(primals, tangents, outputs):
    # f's Fréchet derivative is self-adjoint: the tangent is the backward map.
    _, fn, p, compute_dtype = primals
    _, L, V = outputs
    dA = tangents[0]
    return (_lib.sym_fn_backward(dA, L, V, fn, p), *_eig_tangents(L, V, dA, compute_dtype))


_register_autograd("sym_fn_with_eig", "matbp.sym_fn", _sym_fn_backward, setup_context=_sym_fn_setup,
                   jvp=_sym_fn_jvp)
_register_eigenbasis_derivatives("sym_fn", _lib.sym_fn_backward, _lib.sym_fn_second_derivative)


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


def sym_fn(A: Tensor, fn: str, p: Optional[float] = None, *,
           compute_dtype: Optional[torch.dtype] = None) -> Tensor:
    """Spectral matrix function f(A) = V f(Λ) Vᵀ of symmetric A.

    Args:
        A: (*, n, n) floating point, symmetric (lower triangle read).
        fn: "log" (A positive definite), "sqrt" (positive semi-definite),
            "pow" (exponent ``p``; PSD for p > 0, PD for p ≤ 0) or "exp".
        p: the exponent, required for "pow" and only for it.
        compute_dtype: None (float64, the default for every input dtype) or
            torch.float32, the opt-in float32 compute mode (CPU only): the
            eigendecomposition and the products of forward and backward in
            float32, the divided differences still evaluated stably (in
            float64, from the float32 eigenvalues), so the gradient is never
            NaN at ties; gradient errors are float32's (about 1e-6 relative).

    Returns:
        f(A), (*, n, n), the dtype of A (computed in float64 unless
        ``compute_dtype=torch.float32``).

    The backward is Daleckii–Krein, gA = V (F¹ ∘ Vᵀ sym(G) V) Vᵀ with the
    first divided differences F¹ of f evaluated stably: it is exact when
    eigenvalues repeat (F¹_ii = f'(λ_i)), unlike a composition through
    :func:`sym_eig`. Eigenvalues within n·eps·max|λ| (eps of A's dtype, or
    float32's in the float32 compute mode) below zero count as
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
    _check_compute_dtype_type(compute_dtype, "matbp.sym_fn")
    return _lib.sym_fn(A, fn, 1.0 if p is None else p, compute_dtype)


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
# Linear in dX, with o2p_log_backward as its adjoint.
_register_linear_autograd(
    "o2p_log_jvp", {0: lambda a, K: _lib.o2p_log_backward(K, *a[1:])},
    f"{_TRIPLE_BACKWARD} (derivatives with respect to 'X', 'S', 'U' and 'Y') is not supported",
)


def _o2p_log_backward_setup(ctx, inputs, output):
    gC, X, S, U, Y, eps = inputs
    ctx.eps = eps
    ctx.save_for_backward(gC, X, S, U, Y)


def _o2p_log_backward_derivative(ctx, H):
    """The double backward of o2p_log. With A = XᵀX + eps·I, K = Dlog(A)[sym gC]
    and gX = 2 X K (the backward), for the cotangent H of gX:
      in gC: o2p_log_jvp(H) (<H, gX> = <gC, dC(H)>);
      in X:  2 H K + 4 X D²log(A)[sym gC, sym(Xᵀ H)],
    both exact at repeated and vanishing eigenvalues (divided differences of
    log at eps + s). The d×d eigenbasis of A is the saved one on the cols path;
    the rows path (m < d) saves only the m×m Gram basis, so X padded to d rows
    is decomposed as the cols path would (O(d³): second derivatives only)."""
    name = "matbp.o2p_log"
    gC, X, S, U, Y = ctx.saved_tensors
    eps = ctx.eps
    if any(ctx.needs_input_grad[2:5]):
        raise NotImplementedError(
            "matbp.o2p_log_backward: derivatives with respect to 'S', 'U' and 'Y' are not supported; "
            "they follow X (differentiate matbp.o2p_log twice instead)"
        )
    # Differentiable again in H only; gC and X enter as constants, guarded.
    gC0, X0, S, U, Y = _detached(gC, X, S, U, Y)
    grad_gC = grad_X = None
    if ctx.needs_input_grad[0]:
        grad_gC = _guard_third_derivatives(name, _lib.o2p_log_jvp(H, X0, S, U, Y, eps), gC, X)
    if ctx.needs_input_grad[1]:
        m, d = X.shape[-2], X.shape[-1]
        if m < d:  # the rows path: the d×d eigenbasis, as the cols path finds it
            padded = torch.nn.functional.pad(X0, (0, 0, 0, d - m))
            _, S, U, _ = _lib.o2p_log_with_eig(padded, eps)
        lam = S.to(torch.float64) + eps
        gC64, H64, X64 = gC0.to(torch.float64), H.to(torch.float64), X0.to(torch.float64)
        K = _lib.sym_fn_backward(gC64, lam, U, "log", 1.0)
        second = _lib.sym_fn_second_derivative(gC64, X64.mT @ H64, lam, U, "log", 1.0)
        grad_X = _guard_third_derivatives(name, (2 * H64 @ K + 4 * X64 @ second).to(X.dtype), gC, X)
    return grad_gC, grad_X, None, None, None, None


_register_autograd("o2p_log_backward", "matbp.o2p_log_backward", _o2p_log_backward_derivative,
                   setup_context=_o2p_log_backward_setup)


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


@torch.library.register_fake("matbp::projector_second_derivative")
def _projector_second_derivative_fake(G, H, L, V, rtol):
    op = "matbp.projector_second_derivative"
    _check_eigenbasis_backward(G, "G", L, V, op)
    _check_fits(H, op, "H", V.shape, V, "V")
    return G.new_empty(G.shape)


def _projector_setup(ctx, inputs, output):
    A, rtol = inputs
    _, L, V = output
    ctx.rtol = rtol
    ctx.mark_non_differentiable(L, V)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(A, L, V)


def _projector_backward(ctx, gP, gL, gV):
    if gP is None:
        return None, None
    A, L, V = ctx.saved_tensors
    rtol = ctx.rtol
    return _eigenbasis_backward(
        gP, A, L, V,
        lambda g, L, V: _lib.projector_backward(g, L, V, rtol),
        lambda g, h, L, V: _lib.projector_second_derivative(g, h, L, V, rtol),
        "matbp.projector",
    ), None


def _projector_jvp(primals, tangents, outputs):
    # The projector's derivative is self-adjoint: the tangent is the backward map.
    _, L, V = outputs
    return _lib.projector_backward(tangents[0], L, V, primals[1]), None, None


_register_autograd(
    "projector_with_eig", "matbp.projector", _projector_backward, setup_context=_projector_setup,
    jvp=_projector_jvp,
)
_register_eigenbasis_derivatives("projector", _lib.projector_backward, _lib.projector_second_derivative)


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
    ctx.rtol = rtol
    ctx.save_for_backward(Y, rank, weights, Lambda, Q, P0, mu_pinv, seg_index, seg_image, stats)


_NCUT_NAME = "matbp.ncut_projector_distance (used by matbp.ncut_j1 and matbp.ncut_j2)"


def _ncut_composition(Y, weights, Lambda, rank, seg_index, seg_image, rtol):
    """J of ncut_projector_distance as torch ops and matbp.projector (float64):
    with Y = Q_y R (thin QR), N = R Λ Rᵀ and s_k = Q_yᵀ v_k (v_k = w o e_k),
    J = (rank + #segments) / 2 − Σ_k s_kᵀ Π_N s_k / n_k, n_k = |v_k|². The
    segments, the rank and the tolerance are the forward's, held constant;
    twice differentiable (Π_N exactly, by projector's second derivative)
    where Y has full column rank."""
    m, d = Y.shape[-2], Y.shape[-1]
    Yb = Y.reshape(-1, m, d)
    batch = Yb.shape[0]
    Qy, R = torch.linalg.qr(Yb)
    if Lambda is None:
        N = R @ R.mT
    else:
        N = R @ (Lambda.expand(batch, d, d) if Lambda.dim() == 2 else Lambda.reshape(batch, d, d)) @ R.mT
    P = projector((N + N.mT) / 2, max(m, d) * torch.finfo(torch.float64).eps if rtol is None else rtol)
    w = weights.reshape(-1)
    count, seg_index = seg_image.shape[0], seg_index.reshape(-1)
    s = Yb.new_zeros((count, d)).index_add(0, seg_index, Qy.reshape(-1, d) * w.unsqueeze(-1))
    n = Yb.new_zeros(count).index_add(0, seg_index, w * w)
    valid = n > 0
    Ts = (s * (P[seg_image] @ s.unsqueeze(-1)).squeeze(-1)).sum(-1)
    Ts = torch.where(valid, Ts / torch.where(valid, n, 1.0), 0.0)
    T = Yb.new_zeros(batch).index_add(0, seg_image, Ts)
    segments = Yb.new_zeros(batch).index_add(0, seg_image, valid.to(Yb.dtype))
    return (0.5 * (rank.reshape(-1).to(Yb.dtype) + segments) - T).reshape(Y.shape[:-2])


class _NcutBackward(torch.autograd.Function):
    """ncut's backward as a function of gJ, Y, w and Λ (create_graph=True):
    its derivative is that of the gradient of _ncut_composition, taken with
    torch.autograd in the cotangent's direction only (third derivatives raise)."""

    @staticmethod
    def forward(ctx, gJ, Y, weights, Lambda, rank, seg_index, seg_image, rtol, basis, y_dtype):
        m, d = Y.shape[-2], Y.shape[-1]
        if m < d:
            raise NotImplementedError(
                f"{_NCUT_NAME}: {_DOUBLE_BACKWARD} needs at least as many pixels as features "
                f"(Y of shape (*, m, d), m >= d), got {list(Y.shape)}"
            )
        diag = torch.linalg.qr(Y.detach().to(torch.float64).reshape(-1, m, d))[1].diagonal(dim1=-2, dim2=-1).abs()
        if d and bool((diag.amin(-1) <= max(m, d) * torch.finfo(torch.float64).eps * diag.amax(-1)).any()):
            raise NotImplementedError(
                f"{_NCUT_NAME}: {_DOUBLE_BACKWARD} needs Y of full column rank (the derivative of its QR)"
            )
        ctx.save_for_backward(gJ, Y, weights, Lambda, rank, seg_index, seg_image)
        ctx.rtol = rtol
        gY, gw, gLambda = _lib.ncut_projector_distance_backward(gJ, weights, Lambda, *basis)
        return gY.to(y_dtype), gw, gLambda

    @staticmethod
    def backward(ctx, HY, Hw, HLambda):
        gJ, Y, weights, Lambda, rank, seg_index, seg_image = ctx.saved_tensors
        live = [gJ, Y, weights, Lambda]
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            leaves = [None if t is None else t.detach().to(torch.float64).requires_grad_() for t in live]
            gJ0, Y0, w0, L0 = leaves
            J = _ncut_composition(Y0, w0, L0, rank, seg_index, seg_image, ctx.rtol)
            wrt = [x for x in (Y0, w0, L0) if x is not None]
            first = torch.autograd.grad((gJ0 * J).sum(), wrt, create_graph=True)
            cotangents = [HY, Hw, HLambda][: len(wrt)]
            pairs = [(f, h) for f, h in zip(first, cotangents) if h is not None]
            used = [x for x in leaves if x is not None]
            grads = [None] * len(used)
            if pairs:
                grads = torch.autograd.grad([f for f, _ in pairs], used, [h.to(f.dtype) for f, h in pairs],
                                            allow_unused=True, create_graph=create_graph)
        grads = iter(grads)
        out = []
        for t, x in zip(live, leaves):
            g = None if x is None else next(grads)
            out.append(None if g is None else _guard_third_derivatives(_NCUT_NAME, g.to(t.dtype), *live))
        return (*out, None, None, None, None, None, None)


def _ncut_backward(ctx, gJ, *unused):
    if gJ is None:
        return None, None, None, None, None
    Y, rank, weights, Lambda, *basis = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        gY, gw, gLambda = _NcutBackward.apply(gJ, Y, weights, Lambda, rank, basis[3], basis[4], ctx.rtol,
                                               tuple(basis), ctx.y_dtype)
    else:
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
