"""Autograd modes other than first-order reverse mode are errors, never wrong numbers.

Every matbp op, through its matbp.* wrapper and as torch.ops.matbp.*:

- forward mode (torch.func.jvp, jacfwd, torch.autograd.forward_ad) works
  for every op (test_forward_ad.py checks the tangents); the backward ops
  raise NotImplementedError naming the op (they used to give a zero tangent);
- double backward (create_graph=True, Hessian-vector products) works for
  every op (ncut_j2 and projector used to drop their term silently); third
  derivatives raise NotImplementedError naming the op, except through
  sym_eig and svd, whose backwards are differentiated as torch compositions
  (test_double_backward.py checks the second derivatives' values);
- torch.func reverse-mode transforms (grad, jacrev) raise
  NotImplementedError naming the op;
- first-order backward, gradcheck, vmap and torch.compile still work.
"""

import re

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import matbp
from conftest import random_spd, random_symmetric

F64 = torch.float64


def _low_rank_psd(n=4, rank=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(n, rank, generator=g, dtype=F64)
    return B @ B.mT


def _ncut_inputs(m=12, d=3, seed=4):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(m, d, generator=g, dtype=F64) + 0.1
    labels = torch.arange(m) % 3
    return X, labels


def _weights(shape, seed=5):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _scalar(*outs):
    # A weighted sum of the outputs; eigenvectors enter squared (sign-invariant).
    total = 0
    for i, o in enumerate(outs):
        total = total + (o.to(F64) * _weights(o.shape, seed=10 + i)).sum()
    return total


_X_NCUT, _LABELS = _ncut_inputs()
_ONES = torch.ones(_X_NCUT.shape[0], dtype=F64)

# name in the error, scalar function of one float64 tensor, the input
CASES = {
    "sym_eig": ("matbp.sym_eig", lambda A: _scalar(*(lambda L, V: (L, V * V))(*matbp.sym_eig(A))),
                random_symmetric((), 4)),
    "svd": ("matbp.svd", lambda X: _scalar(*(lambda U, S, V: (U * U, S, V * V))(*matbp.svd(X))),
            random_symmetric((), 4)[:, :3].contiguous()),
    "sym_fn": ("matbp.sym_fn", lambda A: _scalar(matbp.sym_fn(A, "log")), random_spd((), 4)),
    "sym_fn_pow": ("matbp.sym_fn", lambda A: _scalar(matbp.sym_fn(A, "pow", 0.5)), random_spd((), 4)),
    "o2p_log": ("matbp.o2p_log", lambda X: _scalar(matbp.o2p_log(X)), random_symmetric((), 5)[:, :3].contiguous()),
    "o2p_log_wide": ("matbp.o2p_log", lambda X: _scalar(matbp.o2p_log(X)), random_symmetric((), 5)[:2].contiguous()),
    "projector": ("matbp.projector", lambda A: _scalar(matbp.projector(A)), _low_rank_psd()),
    "ncut_j1": ("matbp.ncut_projector_distance", lambda X: matbp.ncut_j1(X, _LABELS), _X_NCUT),
    "ncut_j2": ("matbp.ncut_projector_distance", lambda X: matbp.ncut_j2(X, _LABELS), _X_NCUT),
    # The operators called directly.
    "ops.sym_eig": ("matbp.sym_eig", lambda A: _scalar(torch.ops.matbp.sym_eig(A)[0]), random_symmetric((), 4)),
    "ops.svd": ("matbp.svd", lambda X: _scalar(torch.ops.matbp.svd(X)[1]), random_symmetric((), 4)[:, :3].contiguous()),
    "ops.sym_fn": ("matbp.sym_fn", lambda A: _scalar(torch.ops.matbp.sym_fn(A, "sqrt", 1.0)), random_spd((), 4)),
    "ops.sym_fn_with_eig": ("matbp.sym_fn", lambda A: _scalar(torch.ops.matbp.sym_fn_with_eig(A, "exp")[0]),
                            random_symmetric((), 4)),
    "ops.o2p_log": ("matbp.o2p_log", lambda X: _scalar(torch.ops.matbp.o2p_log(X, 1e-2)),
                    random_symmetric((), 5)[:, :3].contiguous()),
    "ops.projector": ("matbp.projector", lambda A: _scalar(torch.ops.matbp.projector(A, None)), _low_rank_psd()),
    "ops.ncut_projector_distance": (
        "matbp.ncut_projector_distance",
        lambda Y: torch.ops.matbp.ncut_projector_distance(Y, _ONES, _LABELS, None, None),
        _X_NCUT,
    ),
}

IDS = list(CASES)


def _forward_ad_error(name):
    return pytest.raises(NotImplementedError, match=rf"^{re.escape(name)}\b.*: forward-mode AD .*is not supported")


def _double_backward_error(name):
    return pytest.raises(
        NotImplementedError,
        match=rf"^{re.escape(name)}\b.*: double backward \(differentiating a gradient, create_graph=True\) "
        "is not supported",
    )


def _triple_backward_error(name):
    return pytest.raises(
        NotImplementedError,
        match=rf"^{re.escape(name)}\b.*: third derivatives \(differentiating a second derivative, "
        r"create_graph=True\) is not supported",
    )


TWICE_DIFFERENTIABLE = IDS
# Differentiated as torch compositions of their backward: any order.
COMPOSED = ["sym_eig", "svd", "ops.sym_eig", "ops.svd"]
EXACT_SECOND_ORDER = [c for c in TWICE_DIFFERENTIABLE if c not in COMPOSED]


def _tangent(x):
    return _weights(x.shape, seed=99)


# ------------------------------------------------------------- forward mode


def test_forward_ad_tangent_on_a_second_argument():
    # ncut's weights (as in J1) carry the tangent, Y does not: J' = <gw, w'>.
    dw = _tangent(_ONES)
    with fwAD.dual_level():
        w = fwAD.make_dual(_ONES.clone(), dw)
        J = torch.ops.matbp.ncut_projector_distance(_X_NCUT, w, _LABELS, None, None)
        tangent = fwAD.unpack_dual(J).tangent
    h = 1e-6
    J_h = [torch.ops.matbp.ncut_projector_distance(_X_NCUT, _ONES + s * h * dw, _LABELS, None, None)
           for s in (1, -1)]
    torch.testing.assert_close(tangent, (J_h[0] - J_h[1]) / (2 * h), rtol=1e-6, atol=1e-9)


def test_forward_ad_through_a_backward_op_raises():
    A = random_spd((), 3)
    _, L, V = torch.ops.matbp.sym_fn_with_eig(A, "log")
    gF = torch.ones(3, 3, dtype=F64)
    with fwAD.dual_level():
        dual = fwAD.make_dual(gF, _tangent(gF))
        with _forward_ad_error("matbp.sym_fn_backward"):
            torch.ops.matbp.sym_fn_backward(dual, L, V, "log", 1.0)


def test_no_dual_level_no_error():
    # Outside a dual level, and for inputs without a tangent, nothing changes.
    A = random_spd((), 4)
    with fwAD.dual_level():
        other = fwAD.make_dual(torch.zeros(2), torch.ones(2))  # noqa: F841
        F = matbp.sym_fn(A, "log")
        assert fwAD.unpack_dual(F).tangent is None
    torch.testing.assert_close(F, matbp.sym_fn(A, "log"))


# --------------------------------------------------------- double backward


@pytest.mark.parametrize("objective", [matbp.ncut_j1, matbp.ncut_j2])
def test_ncut_double_backward_needs_y_of_full_column_rank(objective):
    # Its double backward differentiates a thin QR of Y.
    name = "matbp.ncut_projector_distance"
    wide = torch.rand(3, 5, dtype=F64, generator=torch.Generator().manual_seed(1)) + 0.1
    tall_deficient = _X_NCUT[:, :1].repeat(1, 3)
    for X, why in ((wide, "needs at least as many pixels as features"),
                   (tall_deficient, "needs Y of full column rank")):
        Xr = X.clone().requires_grad_()
        with pytest.raises(NotImplementedError, match=rf"^{re.escape(name)}\b.*: double backward .* {why}"):
            torch.autograd.grad(objective(Xr, _LABELS[: X.shape[0]]), Xr, create_graph=True)


def _grad(f, y):
    yr = y.clone().requires_grad_()
    return torch.autograd.grad(f(yr), yr)[0]


# The projector's rank changes under a finite difference of its rank-2 input:
# test_double_backward.py checks it along rank-preserving parameterisations.
@pytest.mark.parametrize("case", [c for c in TWICE_DIFFERENTIABLE if "projector" not in c])
def test_hessian_vector_product_matches_differences_of_the_gradient(case):
    # Every op's own term is in the HVP, through torch.autograd.functional.hvp
    # (its double-backward trick differentiates the double backward in the
    # cotangent); the values are checked against the 50-digit reference in
    # test_double_backward.py.
    name, f, x = CASES[case]
    v = _tangent(x)
    if name in ("matbp.sym_eig", "matbp.sym_fn", "matbp.projector"):
        # These read A's lower triangle and return the symmetric gradient:
        # the two sides agree along symmetric directions.
        v = (v + v.mT) / 2
    _, hvp = torch.autograd.functional.hvp(f, x, v)
    h = 1e-6
    expected = (_grad(f, x + h * v) - _grad(f, x - h * v)) / (2 * h)
    torch.testing.assert_close(hvp, expected, rtol=1e-5, atol=1e-6)
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(f(xr), xr, create_graph=True)
    torch.testing.assert_close(torch.autograd.grad((g * v).sum(), xr)[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", COMPOSED)
def test_third_derivative_of_the_composed_backwards(case):
    name, f, x = CASES[case]
    v = _tangent(x)
    if name == "matbp.sym_eig":
        v = (v + v.mT) / 2

    def second(y):  # <grad f(y), v>, differentiable again
        (g,) = torch.autograd.grad(f(y), y, create_graph=True)
        return (g * v).sum()

    xr = x.clone().requires_grad_()
    (third,) = torch.autograd.grad(second(xr), xr)
    h = 1e-5
    plus, minus = (second((x + s * h * v).requires_grad_()).detach() for s in (1, -1))
    torch.testing.assert_close((third * v).sum(), (plus - minus) / (2 * h), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", EXACT_SECOND_ORDER)
def test_third_derivative_raises(case):
    name, f, x = CASES[case]
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(f(xr), xr, create_graph=True)
    (h,) = torch.autograd.grad((g * _tangent(x)).sum(), xr, create_graph=True)
    with _triple_backward_error(name):
        torch.autograd.grad((h * _tangent(x)).sum(), xr)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("case", ["projector", "ncut_j2"])
def test_backward_create_graph_for_an_unrelated_part_works(case):
    # The gradient penalty needs only w; the projector's double backward is
    # built (and exact) all the same.
    _, f, x = CASES[case]
    xr = x.clone().requires_grad_()
    w = torch.ones(3, dtype=F64, requires_grad=True)
    (f(xr) + (w**3).sum()).backward(create_graph=True)
    torch.testing.assert_close(w.grad, 3 * w.detach() ** 2)
    assert xr.grad.requires_grad


def test_backward_op_called_directly_on_tensors_that_require_grad():
    # Linear in gF: its derivative there is the backward again. In L and V the
    # second derivative is taken through sym_fn (exact), not offered here.
    A = random_spd((), 3)
    _, L, V = torch.ops.matbp.sym_fn_with_eig(A, "log")
    gF = torch.ones(3, 3, dtype=F64, requires_grad=True)
    gA = torch.ops.matbp.sym_fn_backward(gF, L, V, "log", 1.0)
    H = _weights((3, 3))
    (gA * H).sum().backward()
    torch.testing.assert_close(gF.grad, torch.ops.matbp.sym_fn_backward(H, L, V, "log", 1.0))
    gA = torch.ops.matbp.sym_fn_backward(gF, L.clone().requires_grad_(), V, "log", 1.0)
    with pytest.raises(NotImplementedError, match=r"^matbp.sym_fn_backward: derivatives with respect to 'L'"):
        gA.sum().backward()
    # The normalized-cuts backward op has none (its double backward goes
    # through the objective, which the op does not see).
    ones = torch.ones(_X_NCUT.shape[0], dtype=F64)
    J, _, *basis = torch.ops.matbp.ncut_projector_distance_with_basis(_X_NCUT, ones, _LABELS, None, None)
    gY, _, _ = torch.ops.matbp.ncut_projector_distance_backward(torch.ones_like(J).requires_grad_(), ones,
                                                                None, *basis)
    with _double_backward_error("matbp.ncut_projector_distance_backward"):
        gY.sum().backward()


# ---------------------------------------------------- torch.func reverse mode


@pytest.mark.parametrize("case", ["sym_fn", "projector", "ncut_j2", "ops.svd"])
def test_func_grad_raises_clearly(case):
    name, f, x = CASES[case]
    pattern = rf"^{re.escape(name)}\b.*: torch.func reverse-mode transforms .* are not supported"
    with pytest.raises(NotImplementedError, match=pattern):
        torch.func.grad(f)(x)
    with pytest.raises(NotImplementedError, match=pattern):
        torch.func.grad(lambda y: torch.func.grad(f)(y).sum())(x)
    with pytest.raises(NotImplementedError, match=pattern):
        torch.func.jacrev(f)(x)


# ------------------------------------------------- first order still works


def test_first_order_backward_unchanged():
    A = random_spd((2,), 4)
    Ar = A.clone().requires_grad_()
    (gA,) = torch.autograd.grad(matbp.sym_fn(Ar, "log").sum(), Ar)
    Ar2 = A.clone().requires_grad_()
    L, V = torch.linalg.eigh(Ar2)
    ((V * L.log().unsqueeze(-2)) @ V.mT).sum().backward()
    torch.testing.assert_close(gA, Ar2.grad)


@pytest.mark.parametrize(
    "f, x",
    [
        # Only the lower triangle is read: differentiate through a symmetric A.
        (lambda A: matbp.sym_fn((A + A.mT) / 2, "log"), random_spd((2,), 3)),
        (lambda X: matbp.o2p_log(X, 0.1), random_symmetric((2,), 4)[..., :3, :].contiguous()),
        (lambda X: matbp.ncut_j2(X, _LABELS[:8]), _ncut_inputs(m=8, d=2)[0]),
    ],
    ids=["sym_fn", "o2p_log", "ncut_j2"],
)
def test_gradcheck_first_order(f, x):
    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(),))


def test_vmap_and_no_grad_still_work():
    A = random_spd((3,), 4)
    out = torch.func.vmap(lambda a: matbp.sym_fn(a, "sqrt"))(A)
    torch.testing.assert_close(out, matbp.sym_fn(A, "sqrt"))
    with torch.no_grad():
        torch.testing.assert_close(matbp.sym_fn(A.clone().requires_grad_(), "sqrt"), out)


def test_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    X = random_symmetric((2,), 4)[..., :3].contiguous()

    def f(X):
        return matbp.o2p_log(X, 0.1).square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    Xc, Xe = X.clone().requires_grad_(), X.clone().requires_grad_()
    compiled(Xc).backward()
    f(Xe).backward()
    torch.testing.assert_close(Xc.grad, Xe.grad)


# ----------------------------------------------- wrapper argument checking


@pytest.mark.parametrize(
    "eps, shown", [(None, "None"), ("1e-3", "'1e-3'"), (True, "True"), (torch.tensor(1e-3), "Tensor")]
)
def test_o2p_log_eps_type(eps, shown):
    msg = f"matbp.o2p_log: argument 'eps' must be a positive finite number, got {shown}"
    with pytest.raises(TypeError, match=re.escape(msg)):
        matbp.o2p_log(torch.ones(3, 2, dtype=F64), eps=eps)


@pytest.mark.parametrize("p", ["2", [2.0], True, torch.tensor(2.0)])
def test_sym_fn_p_type(p):
    with pytest.raises(TypeError, match=r"matbp.sym_fn: argument 'p' must be a finite number, got "):
        matbp.sym_fn(random_spd((), 3), "pow", p=p)


def test_sym_fn_p_string_shown():
    with pytest.raises(TypeError, match=re.escape("matbp.sym_fn: argument 'p' must be a finite number, got '2'")):
        matbp.sym_fn(random_spd((), 3), "pow", p="2")


@pytest.mark.parametrize("fn", [None, 3, b"log", ["log"]])
def test_sym_fn_fn_type(fn):
    with pytest.raises(TypeError, match=r"matbp.sym_fn: argument 'fn' must be a string, one of 'log', 'sqrt'"):
        matbp.sym_fn(random_spd((), 3), fn)


@pytest.mark.parametrize("rtol", ["x", "1e-3", False, torch.tensor(0.1)])
def test_projector_rtol_type(rtol):
    with pytest.raises(TypeError, match=r"matbp.projector: argument 'rtol' must be None or a finite number >= 0, got "):
        matbp.projector(random_spd((), 3), rtol=rtol)


def test_numbers_still_accepted():
    np = pytest.importorskip("numpy")

    A = random_spd((), 3)
    torch.testing.assert_close(matbp.sym_fn(A, "pow", 2), matbp.sym_fn(A, "pow", np.float64(2.0)))
    torch.testing.assert_close(matbp.o2p_log(A, 1), matbp.o2p_log(A, 1.0))
    torch.testing.assert_close(matbp.projector(A, rtol=0), matbp.projector(A, rtol=np.float32(0.0)))
    # Values stay the operators' to check (RuntimeError, as for a direct call).
    with pytest.raises(RuntimeError, match="matbp.o2p_log: argument 'eps' must be a positive finite number"):
        matbp.o2p_log(A, float("nan"))
    with pytest.raises(RuntimeError, match="matbp.sym_fn: argument 'p' must be a finite exponent"):
        matbp.sym_fn(A, "pow", float("inf"))
