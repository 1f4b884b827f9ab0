"""Forward-mode AD: torch.func.jvp, jacfwd and torch.autograd.forward_ad.

Each op's tangent is the adjoint of its backward (the same divided
differences, so exact at repeated eigenvalues): checked against the backward
(<G, jvp(E)> = <vjp(G), E> to rounding), against a 50-digit reference at
exact ties where torch.linalg.eigh's composition is off, and jacfwd against
the reverse-mode Jacobian. What has no forward rule (the backward ops,
second derivatives) raises NotImplementedError naming the op.
"""

import mpmath
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import matbp
from conftest import F64, random_spd, random_symmetric, randn, with_spectrum
from o2p_reference import o2p_log_directional_reference


def _labels(X):
    return (torch.arange(X.shape[-2]) % 3).expand(X.shape[:-1])


def _sym(E):
    return (E + E.mT) / 2


# name -> (f of one float64 tensor, the input): functions whose value does
# not depend on the eigenvectors' signs.
CASES = {
    "sym_eig": (lambda A: (lambda L, V: torch.cat([L.flatten(), (V * V).flatten()]))(*matbp.sym_eig(A)),
                random_symmetric((2,), 4, seed=1)),
    "svd_tall": (lambda X: (lambda U, S, V: torch.cat([S.flatten(), (U * U).flatten(), (V * V).flatten()]))(
        *matbp.svd(X)), randn(2, 6, 4, seed=12)),
    "svd_wide": (lambda X: (lambda U, S, V: torch.cat([S.flatten(), (U * U).flatten(), (V * V).flatten()]))(
        *matbp.svd(X)), randn(2, 3, 5, seed=13)),
    "sym_fn_log": (lambda A: matbp.sym_fn(A, "log"), random_spd((2,), 4, seed=2)),
    "sym_fn_sqrt": (lambda A: matbp.sym_fn(A, "sqrt"), random_spd((2,), 4, seed=3)),
    "sym_fn_pow": (lambda A: matbp.sym_fn(A, "pow", -0.75), random_spd((2,), 4, seed=4)),
    "sym_fn_exp": (lambda A: matbp.sym_fn(A, "exp"), random_symmetric((2,), 4, seed=5)),
    "projector": (lambda A: matbp.projector(A, rtol=1e-3),
                  with_spectrum(torch.tensor([[0.0, 0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.5, 1.0, 4.0]]), seed=6)[0]),
    "o2p_log_cols": (lambda X: matbp.o2p_log(X), randn(2, 7, 4, seed=7)),
    "o2p_log_rows": (lambda X: matbp.o2p_log(X), randn(2, 3, 6, seed=8)),
    "ncut_j2": (lambda X: matbp.ncut_j2(X, _labels(X)), randn(2, 12, 3, seed=9).abs() + 0.1),
    "ncut_j1": (lambda X: matbp.ncut_j1(X, _labels(X)), randn(2, 12, 3, seed=10).abs() + 0.1),
    "ops.sym_fn_with_eig": (lambda A: torch.cat([t.flatten() for t in torch.ops.matbp.sym_fn_with_eig(A, "sqrt", 1.0)[:2]]),
                            random_spd((2,), 4, seed=11)),
}
IDS = list(CASES)


def _direction(x, seed=20):
    return randn(*x.shape, seed=seed)


def _vjp(f, x, g):
    xr = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(f(xr), xr, g)
    return gx


@pytest.mark.parametrize("case", IDS)
def test_jvp_is_the_adjoint_of_the_backward(case):
    f, x = CASES[case]
    E = _direction(x)
    if case.startswith(("sym", "projector", "ops.sym")):
        E = _sym(E)  # the ops read a symmetric input; their gradient is symmetric
    out, tangent = torch.func.jvp(f, (x,), (E,))
    assert tangent.shape == out.shape and tangent.dtype == out.dtype
    G = randn(*out.shape, seed=21)
    lhs = (G * tangent).sum()
    rhs = (_vjp(f, x, G) * E).sum()
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(rhs)), (lhs, rhs)


@pytest.mark.parametrize("case", IDS)
def test_jvp_matches_central_differences(case):
    f, x = CASES[case]
    E = _direction(x, seed=22)
    if case.startswith(("sym", "projector", "ops.sym")):
        E = _sym(E)
    _, tangent = torch.func.jvp(f, (x,), (E,))
    h = 1e-6
    numeric = (f(x + h * E) - f(x - h * E)) / (2 * h)
    err = (tangent - numeric).norm() / max(numeric.norm(), 1e-300)
    assert err < 1e-6, err


@pytest.mark.parametrize("case", ["sym_fn_log", "o2p_log_cols", "o2p_log_rows", "projector", "ncut_j2", "svd_tall"])
def test_jacfwd_equals_the_reverse_jacobian(case):
    f, x = CASES[case]
    x = x[:1] if x.dim() == 3 else x
    J_fwd = torch.func.jacfwd(f)(x)
    J_rev = torch.autograd.functional.jacobian(f, x)
    if case in ("sym_fn_log", "projector"):
        # Symmetric input: compare on symmetric directions, as the ops define them.
        J_fwd, J_rev = _sym(J_fwd), _sym(J_rev)
    torch.testing.assert_close(J_fwd, J_rev, rtol=1e-11, atol=1e-12)


def test_forward_ad_dual_tensors_and_torch_ops():
    A, E = random_spd((3,), 4, seed=30), _sym(randn(3, 4, 4, seed=31))
    with fwAD.dual_level():
        F = matbp.sym_fn(fwAD.make_dual(A, E), "log")
        F_ops = torch.ops.matbp.sym_fn(fwAD.make_dual(A, E), "log", 1.0)
        t, t_ops = fwAD.unpack_dual(F).tangent, fwAD.unpack_dual(F_ops).tangent
    assert t is not None and torch.equal(t, t_ops)
    assert torch.equal(t, torch.ops.matbp.sym_fn_backward(E, *torch.ops.matbp.sym_fn_with_eig(A, "log", 1.0)[1:],
                                                          "log", 1.0))


def test_forward_and_reverse_mode_together():
    # A dual input that also requires grad: the tangent and the gradient are both right.
    X, E = randn(2, 5, 3, seed=32), randn(2, 5, 3, seed=33)
    Xr = X.clone().requires_grad_()
    with fwAD.dual_level():
        C = matbp.o2p_log(fwAD.make_dual(Xr, E))
        primal, tangent = fwAD.unpack_dual(C)
        primal.square().sum().backward()
    torch.testing.assert_close(tangent, torch.func.jvp(matbp.o2p_log, (X,), (E,))[1], rtol=0, atol=0)
    torch.testing.assert_close(Xr.grad, _vjp(lambda x: matbp.o2p_log(x).square().sum(), X, torch.tensor(1.0,
                                                                                                       dtype=F64)))


# ------------------------------------------------ exact at ties (50 digits)

def _mp_divided_difference(f, fprime, a, b):
    a, b = mpmath.mpf(a), mpmath.mpf(b)
    return fprime(a) if a == b else (f(a) - f(b)) / (a - b)


_MP_FNS = {
    "log": (mpmath.log, lambda x: 1 / x),
    "sqrt": (mpmath.sqrt, lambda x: 1 / (2 * mpmath.sqrt(x))),
    "exp": (mpmath.exp, mpmath.exp),
}


@pytest.mark.parametrize("fn", list(_MP_FNS))
@pytest.mark.parametrize("spectrum", [[0.5, 0.5, 0.5, 2.0], [1.0, 1.0 + 1e-12, 3.0, 3.0], [0.25, 1.0, 1.0, 4.0]],
                         ids=["triple", "cluster+pair", "pair"])
def test_sym_fn_tangent_exact_at_repeated_eigenvalues(fn, spectrum):
    lam = torch.tensor(spectrum, dtype=F64)
    A, Q = with_spectrum(lam, seed=40)
    E = _sym(randn(4, 4, seed=41))
    _, tangent = torch.func.jvp(lambda a: matbp.sym_fn(a, fn), (A,), (E,))
    # Daleckii–Krein at 50 digits in the eigenbasis: F' = Q (F¹ o QᵀEQ) Qᵀ.
    f, fprime = _MP_FNS[fn]
    with mpmath.workdps(50):
        Qm = mpmath.matrix(Q.tolist())
        M = Qm.T * mpmath.matrix(E.tolist()) * Qm
        W = mpmath.matrix(4, 4)
        for i in range(4):
            for j in range(4):
                W[i, j] = _mp_divided_difference(f, fprime, spectrum[i], spectrum[j]) * M[i, j]
        R = Qm * W * Qm.T
        ref = torch.tensor([[float(R[i, j]) for j in range(4)] for i in range(4)], dtype=F64)
    err = (tangent - ref).norm() / ref.norm()
    assert err <= 1e-9, err
    # torch.linalg.eigh's composition divides by the rounding-level gaps of
    # the repeated eigenvalues: its tangent is far off (or not finite).
    def torch_f(a):
        L, V = torch.linalg.eigh(a)
        return (V * getattr(torch, fn)(L).unsqueeze(-2)) @ V.mT
    if spectrum[0] == spectrum[1] or spectrum[2] == spectrum[3]:
        _, t_torch = torch.func.jvp(torch_f, (A,), (E,))
        assert not torch.isfinite(t_torch).all() or (t_torch - ref).norm() / ref.norm() > 1e-3


@pytest.mark.parametrize("shape,rank", [((3, 6), 3), ((3, 6), 2), ((7, 4), 4), ((7, 4), 2)],
                         ids=["rows", "rows-rank-deficient", "cols", "cols-rank-deficient"])
def test_o2p_log_tangent_matches_the_50_digit_reference(shape, rank):
    m, d = shape
    X = (randn(m, rank, seed=50) @ randn(rank, d, seed=51)) / d**0.5
    E, G = randn(m, d, seed=52), randn(d, d, seed=53)
    eps = 1e-3
    _, tangent = torch.func.jvp(lambda x: matbp.o2p_log(x, eps), (X,), (E,))
    ref = o2p_log_directional_reference(X, E, G, eps)
    got = float((G * tangent).sum())
    assert abs(got - ref) <= 1e-9 * max(1.0, abs(ref)), (got, ref)


# ----------------------------------------------------- what stays unsupported

@pytest.mark.parametrize("case", ["sym_fn_log", "o2p_log_cols", "projector"])
def test_second_order_forward_mode_raises_naming_the_op(case):
    f, x = CASES[case]
    x = x[:1]
    with pytest.raises(NotImplementedError, match=r"^matbp\.\w+: second-order forward mode .* is not supported"):
        torch.func.jacfwd(torch.func.jacfwd(f))(x)
