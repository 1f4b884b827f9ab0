"""Double backward: second derivatives (create_graph=True, Hessian-vector
products, torch.autograd.functional.hessian, gradgradcheck) through matbp.

- gradgradcheck in float64 for sym_fn (each function), o2p_log (rows and
  cols paths, rank-deficient X), the projector (rank kept by A = B Bᵀ),
  sym_eig and svd (gauge-invariant functions of well-separated spectra);
- sym_fn, o2p_log and the projector: Hessian-vector products exact (1e-9
  relative) against the 50-digit mpmath reference of tests/hvp_reference.py
  on separated, clustered (1e-12) and exactly repeated spectra, where the
  same composed through torch.linalg.eigh is far off;
- the full Hessian (torch.autograd.functional.hessian) at a repeated spectrum,
  torch.autograd.functional.hvp and vhp, the operators
  sym_fn_second_derivative and projector_second_derivative, a batch on
  each device;
- sym_eig and svd against torch's own double backward (separated spectra);
- triple backward through sym_fn, o2p_log and projector raises
  NotImplementedError naming the op;
- a gradient-penalty training step through SecondOrderPooling, against the
  same step through torch.linalg.eigh;
- the reference's own checks (two independent methods; torch at separated
  spectra).

Inputs are float64. The ops read the lower triangle of a symmetric A and
return its gradient symmetric, so the functions below take a free matrix B
and pass sym(B) = (B + Bᵀ)/2 (or A = B Bᵀ for the projector).
"""

import re

import pytest
import torch
import torch.nn.functional as F

import matbp
from conftest import F64, eig_invariants, random_spd, random_symmetric, randn, svd_invariants, with_spectrum
from hvp_reference import (
    double_grad_hvp,
    eigh_o2p_log,
    eigh_sym_fn,
    o2p_log_hvp_reference,
    projector_hvp_reference,
    rel_err,
    sym_fn_gradient_reference,
    sym_fn_hvp_methods_disagreement,
    sym_fn_hvp_reference,
)

TOL = 1e-9  # HVPs against the 50-digit reference, relative Frobenius norm


def _sym(M):
    return (M + M.mT) / 2


def _assert_close_rel(got, want, tol, what):
    err = rel_err(got, want)  # inf when got is not finite
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.0e}"


def _spectrum(lam, seed):
    """Q diag(lam) Qᵀ (random orthogonal Q), made exactly symmetric in float64."""
    return _sym(with_spectrum(torch.tensor(lam, dtype=F64), seed=seed)[0])


def _with_singular_values(m, d, sv, seed):
    """P diag(sv) Qᵀ, P (m, k) and Q (d, k) with orthonormal columns."""
    g = torch.Generator().manual_seed(seed)
    k = len(sv)
    P, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=F64))
    Q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=F64))
    return (P * torch.tensor(sv, dtype=F64)) @ Q.mT


def _low_rank(m, d, r, seed):
    return randn(m, r, seed=seed) @ randn(r, d, seed=seed + 1) / d**0.5


def _min_gap(x):
    x = x.sort().values
    return (x[..., 1:] - x[..., :-1]).min().item()


def _matbp_op(name):
    """torch.ops.matbp.<name>, or a test failure saying it is missing (not
    an import error of the whole module)."""
    try:
        return getattr(torch.ops.matbp, name)
    except (AttributeError, RuntimeError) as exc:
        pytest.fail(f"torch.ops.matbp.{name} is not registered (the double-backward operators name it): {exc}")


def _sym_fn_scalar(W, fn, p):
    return lambda B: (W * matbp.sym_fn(_sym(B), fn, p)).sum()


def _o2p_scalar(W, eps=1e-3):
    return lambda X: (W * matbp.o2p_log(X, eps)).sum()


def _projector_scalar(W, rtol):
    return lambda B: (W * matbp.projector(_sym(B), rtol=rtol)).sum()


# ------------------------------------------------------------ gradgradcheck

# name -> (function of one float64 tensor, the input). sym_fn and sym_eig
# take a free B and read sym(B); the projector takes B (n, r) and reads
# B Bᵀ, whose rank r gradgradcheck's perturbations keep (rtol = 1e-8 puts
# the threshold far above the rounding-level null eigenvalues).
GRADGRAD_CASES = {
    "sym_fn-log": (lambda B: matbp.sym_fn(_sym(B), "log"), random_spd((), 4, seed=1)),
    "sym_fn-sqrt": (lambda B: matbp.sym_fn(_sym(B), "sqrt"), random_spd((), 4, seed=2)),
    "sym_fn-pow0.5": (lambda B: matbp.sym_fn(_sym(B), "pow", 0.5), random_spd((), 4, seed=3)),
    "sym_fn-pow2.5": (lambda B: matbp.sym_fn(_sym(B), "pow", 2.5), random_spd((), 4, seed=4)),
    "sym_fn-pow-1.5": (lambda B: matbp.sym_fn(_sym(B), "pow", -1.5), random_spd((), 4, seed=5)),
    "sym_fn-exp": (lambda B: matbp.sym_fn(_sym(B), "exp"), random_symmetric((), 4, seed=6) / 2),
    # Exact second derivatives at ties: a batch with a triple and a pair.
    "sym_fn-log-repeated-batch": (lambda B: matbp.sym_fn(_sym(B), "log"),
                                  torch.stack([_spectrum([0.5, 0.5, 0.5, 2.0], seed=7),
                                               _spectrum([1.0, 1.0, 3.0, 3.0], seed=8)])),
    "sym_fn-exp-repeated-n5": (lambda B: matbp.sym_fn(_sym(B), "exp"), _spectrum([1.0, 1.0, 1.0, 2.0, 3.0], seed=9)),
    "o2p_log-rows": (lambda X: matbp.o2p_log(X), randn(3, 5, seed=10)),
    "o2p_log-cols": (lambda X: matbp.o2p_log(X), randn(6, 4, seed=11)),
    "o2p_log-rows-rank-deficient": (lambda X: matbp.o2p_log(X), _low_rank(3, 5, 2, seed=12)),
    "o2p_log-cols-rank-deficient": (lambda X: matbp.o2p_log(X), _low_rank(6, 4, 2, seed=14)),
    "o2p_log-batch-eps0.1": (lambda X: matbp.o2p_log(X, 0.1), randn(2, 4, 3, seed=16)),
    "projector-rank3-of-5": (lambda B: matbp.projector(B @ B.mT, rtol=1e-8), randn(5, 3, seed=17)),
    "projector-rank2-of-4-batch": (lambda B: matbp.projector(B @ B.mT, rtol=1e-8), randn(2, 4, 2, seed=18)),
    # Gauge-invariant functions of well-separated spectra (checked below).
    "sym_eig": (lambda B: eig_invariants(_sym(B)), random_symmetric((), 4, seed=19)),
    "svd-tall": (svd_invariants, randn(5, 3, seed=20)),
    "svd-wide": (svd_invariants, randn(3, 4, seed=21)),
}


@pytest.mark.parametrize("case", list(GRADGRAD_CASES))
def test_gradgradcheck(case):
    f, x = GRADGRAD_CASES[case]
    if case == "sym_eig":
        assert _min_gap(torch.linalg.eigvalsh(x)) > 0.5  # the tie policy stays out of the way
    if case.startswith("svd"):
        assert _min_gap(torch.linalg.svdvals(x)) > 0.3 and torch.linalg.svdvals(x).min() > 0.3
    assert torch.autograd.gradgradcheck(f, (x.clone().requires_grad_(),))


# ----------------------------------------- HVPs against the 50-digit reference

FNS = [("log", None), ("sqrt", None), ("pow", 0.5), ("pow", 2.5), ("pow", -1.5), ("exp", None)]
FN_IDS = ["log", "sqrt", "pow0.5", "pow2.5", "pow-1.5", "exp"]

# Eigenvalues of A (5×5): well separated, a cluster with relative gaps 1e-12
# (not at 1, where log vanishes), and exact repeats (the float64 A = Q Λ Qᵀ
# has them to rounding; "repeated-exact" is diagonal, so they are exact in
# float64 too).
SPECTRA = {
    "separated": [0.5, 1.0, 1.7, 2.6, 4.0],
    "clustered": [0.5, 1.5, 1.5 * (1 + 1e-12), 1.5 * (1 + 2e-12), 3.0],
    "repeated": [1.0, 1.0, 1.0, 2.0, 3.0],
    "repeated-exact": [2.0, 1.0, 3.0, 1.0, 1.0],
}


def _sym_fn_problem(family):
    lam = SPECTRA[family]
    A = torch.diag(torch.tensor(lam, dtype=F64)) if family.endswith("exact") else _spectrum(lam, seed=40)
    return A, randn(5, 5, seed=41), _sym(randn(5, 5, seed=42))


@pytest.mark.parametrize("family", list(SPECTRA))
@pytest.mark.parametrize("fn,p", FNS, ids=FN_IDS)
def test_sym_fn_hvp_matches_the_50_digit_reference(fn, p, family):
    A, W, E = _sym_fn_problem(family)
    got = double_grad_hvp(_sym_fn_scalar(W, fn, p), A, E)
    assert got.dtype == F64 and got.shape == A.shape
    _assert_close_rel(got, sym_fn_hvp_reference(A, W, E, fn, p), TOL, f"sym_fn {fn} HVP ({family})")


# X (m, d) with prescribed singular values: XᵀX + eps I has eigenvalues
# σ² + eps and, on the rows path (m < d), d − m more equal to eps.
O2P_SHAPES = {"rows": (3, 5), "cols": (6, 4)}
O2P_SINGULAR_VALUES = {
    "separated": {"rows": [1.9, 1.4, 0.6], "cols": [1.9, 1.4, 1.0, 0.6]},
    "clustered": {"rows": [1.7, 1.0 + 1e-12, 1.0], "cols": [1.7, 1.0 + 2e-12, 1.0 + 1e-12, 1.0]},
    "repeated": {"rows": [1.7, 1.0, 1.0], "cols": [1.7, 1.0, 1.0, 1.0]},
    "rank-deficient": {"rows": [1.3, 0.8, 0.0], "cols": [1.3, 0.8, 0.0, 0.0]},
}


def _o2p_problem(path, family):
    m, d = O2P_SHAPES[path]
    if family == "repeated-exact":  # XᵀX = diag(0, 1, 1, 1, 0) (rows), diag(4, 1, 1, 1) (cols), exactly
        X = torch.zeros(m, d, dtype=F64)
        for i, s in enumerate([1.0, 1.0, 1.0, 2.0][:min(m, d)]):
            X[i, (i + 1) % d] = s
    else:
        X = _with_singular_values(m, d, O2P_SINGULAR_VALUES[family][path], seed=50)
    return X, randn(d, d, seed=51), randn(m, d, seed=52)


@pytest.mark.parametrize("family", [*O2P_SINGULAR_VALUES, "repeated-exact"])
@pytest.mark.parametrize("path", list(O2P_SHAPES))
def test_o2p_log_hvp_matches_the_50_digit_reference(path, family):
    X, W, E = _o2p_problem(path, family)
    got = double_grad_hvp(_o2p_scalar(W), X, E)
    assert got.dtype == F64 and got.shape == X.shape
    _assert_close_rel(got, o2p_log_hvp_reference(X, W, E, 1e-3), TOL, f"o2p_log HVP ({path}, {family})")


def _projector_problem(kind):
    """(A with an exact null space, W, a direction E = B Fᵀ + F Bᵀ that keeps
    the rank, or with "-any-direction" a random symmetric E)."""
    if kind.startswith("rank3-of-5-repeated"):  # range eigenvalues 1, 1, 2
        Q, _ = torch.linalg.qr(randn(5, 5, seed=61))
        B = Q[:, :3] * torch.tensor([1.0, 1.0, 2.0 ** 0.5], dtype=F64)
    else:
        B = randn(5, 3, seed=60)
    Fm = randn(5, 3, seed=62)
    E = _sym(randn(5, 5, seed=64)) if kind.endswith("any-direction") else _sym(B @ Fm.mT + Fm @ B.mT)
    return _sym(B @ B.mT), randn(5, 5, seed=63), E


@pytest.mark.parametrize("kind", ["rank3-of-5", "rank3-of-5-repeated", "rank3-of-5-any-direction"])
def test_projector_hvp_matches_the_50_digit_reference(kind):
    # Along rank-preserving directions the derivative of the paper's gradient
    # (rank locally constant) and the second-order Daleckii–Krein form of the
    # spectral projector (null eigenvalues standing for 0) agree. Along any
    # other direction only the latter is a second derivative (symmetric in
    # its two directions); the reference is that one (the paper formula's
    # derivative differs from it by ~80% there).
    A, W, E = _projector_problem(kind)
    got = double_grad_hvp(_projector_scalar(W, 1e-8), A, E)
    _assert_close_rel(got, projector_hvp_reference(A, W, E, rtol=1e-8), TOL, f"projector HVP ({kind})")


# What torch.linalg.eigh's composition gives at ties (measured with exactly
# these inputs: torch 2.14 CPU, float64 double backward, relative Frobenius
# error of its HVP against the 50-digit reference; inf = not finite):
#   sym_fn, repeated (1, 1, 1, 2, 3): log 9.7e-01, sqrt 4.9e+15, pow0.5 4.9e+15,
#     pow2.5 1.4e+14, pow-1.5 2.9e+14, exp 2.7e+14;
#   sym_fn, clustered (1.5 × (1, 1 + 1e-12, 1 + 2e-12)): log 1.4e+07,
#     sqrt 5.2e+08, pow0.5 5.2e+08, pow2.5 1.7e+07, pow-1.5 1.4e+06, exp 2.7e+07;
#   sym_fn, repeated-exact (diagonal): inf for every function (all 25 entries
#     NaN/inf);
#   o2p_log, repeated: rows 9.1e+11, cols inf (all 24 entries NaN/inf);
#     clustered: rows 1.0e+04, cols 7.0e+04; repeated-exact: inf (all entries);
#   not asserted: o2p_log rank-deficient, rows 2.3e-03 and cols 1.6e-03 (too
#     close to the threshold to rely on across LAPACKs); every separated case
#     below 6e-14.
# matbp's HVPs must meet 1e-9 in all of these cases (the tests above).
EIGH_OFF_CASES = (
    [("sym_fn", fn, p, family) for fn, p in FNS for family in ("repeated", "repeated-exact", "clustered")]
    + [("o2p_log", path, None, family) for path in O2P_SHAPES
       for family in ("repeated", "repeated-exact", "clustered")]
)


@pytest.mark.parametrize("op,arg,p,family", EIGH_OFF_CASES,
                         ids=[f"{c[0]}-{c[1]}{'' if c[2] is None else c[2]}-{c[3]}" for c in EIGH_OFF_CASES])
def test_eigh_composition_is_off_at_ties(op, arg, p, family):
    # Why matbp exists: the same second derivative composed through
    # torch.linalg.eigh divides by rounding-level eigenvalue gaps.
    if op == "sym_fn":
        A, W, E = _sym_fn_problem(family)
        ref = sym_fn_hvp_reference(A, W, E, arg, p)
        got = double_grad_hvp(lambda B: (W * eigh_sym_fn(_sym(B), arg, p)).sum(), A, E)
    else:
        X, W, E = _o2p_problem(arg, family)
        ref = o2p_log_hvp_reference(X, W, E, 1e-3)
        got = double_grad_hvp(lambda Y: (W * eigh_o2p_log(Y, 1e-3)).sum(), X, E)
    assert rel_err(got, ref) > 1e-3  # inf when not finite


# ------------------------------------------------------- the full Hessian


@pytest.mark.parametrize("fn,p", [("log", None), ("sqrt", None), ("pow", 2.5), ("exp", None)],
                         ids=["log", "sqrt", "pow2.5", "exp"])
def test_hessian_at_a_repeated_spectrum(fn, p):
    A = _spectrum([1.0, 1.0, 2.0], seed=70)
    W = randn(3, 3, seed=71)
    H = torch.autograd.functional.hessian(_sym_fn_scalar(W, fn, p), A)
    assert H.shape == (3, 3, 3, 3) and torch.isfinite(H).all()
    # Column (p, q): d/dt ∇_B s(B + t e_pq) = D²f(A)[sym W, sym(e_pq)].
    for a in range(3):
        for b in range(3):
            e = torch.zeros(3, 3, dtype=F64)
            e[a, b] = 1.0
            _assert_close_rel(H[:, :, a, b], sym_fn_hvp_reference(A, W, _sym(e), fn, p), TOL,
                              f"Hessian column ({a}, {b})")
    torch.testing.assert_close(H, H.permute(2, 3, 0, 1), rtol=1e-12, atol=1e-12)  # symmetric


# ------------------------------------- torch.autograd.functional.hvp works


HVP_CASES = {
    "sym_fn": (lambda: _sym_fn_scalar(randn(4, 4, seed=80), "sqrt", None), lambda: _spectrum([1, 1, 2, 3], 81)),
    "o2p_log": (lambda: _o2p_scalar(randn(5, 5, seed=82)), lambda: randn(3, 5, seed=83)),
    "projector": (lambda: (lambda B: (randn(5, 5, seed=84) * matbp.projector(B @ B.mT, rtol=1e-8)).sum()),
                  lambda: randn(5, 3, seed=85)),
    "sym_eig": (lambda: (lambda B: (randn(4, seed=86) * matbp.sym_eig(_sym(B))[0] ** 2).sum()),
                lambda: random_symmetric((), 4, seed=19)),
    "svd": (lambda: (lambda X: (randn(3, seed=87) * matbp.svd(X)[1] ** 3).sum()), lambda: randn(5, 3, seed=20)),
}


@pytest.mark.parametrize("case", list(HVP_CASES))
def test_autograd_functional_hvp(case):
    # torch.autograd.functional.hvp uses the double-back trick: it also
    # differentiates the double backward with respect to its grad_outputs.
    make_f, make_x = HVP_CASES[case]
    f, x = make_f(), make_x()
    v = randn(*x.shape, seed=88)
    if case in ("sym_fn", "sym_eig"):
        v = _sym(v)
    value, hv = torch.autograd.functional.hvp(f, x, v)
    torch.testing.assert_close(value, f(x), rtol=1e-14, atol=0)
    want = double_grad_hvp(f, x, v)
    assert torch.isfinite(hv).all()
    _assert_close_rel(hv, want, 1e-12, "functional.hvp against two torch.autograd.grad calls")
    _, vh = torch.autograd.functional.vhp(f, x, v)
    _assert_close_rel(vh, want, 1e-12, "functional.vhp (the Hessian is symmetric)")


# ------------------------------------------------ sym_eig and svd vs torch


def test_sym_eig_hvp_matches_torch_at_a_separated_spectrum():
    A = _spectrum([-1.0, 0.3, 1.1, 2.0, 3.5], seed=90)
    w, g, W = randn(5, seed=91), torch.linspace(-1.0, 2.0, 5, dtype=F64), randn(5, 5, seed=92)
    E = _sym(randn(5, 5, seed=93))

    def scalar(eig):
        return lambda B: (lambda L, V: (w * L**2).sum() + (W * ((V * g) @ V.mT)).sum())(*eig(_sym(B)))

    got = double_grad_hvp(scalar(matbp.sym_eig), A, E)
    want = double_grad_hvp(scalar(torch.linalg.eigh), A, E)
    _assert_close_rel(got, want, TOL, "sym_eig HVP against torch.linalg.eigh")


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)], ids=["tall", "wide", "square"])
def test_svd_hvp_matches_torch_at_separated_singular_values(shape):
    X = randn(*shape, seed=94)
    assert _min_gap(torch.linalg.svdvals(X)) > 0.2 and torch.linalg.svdvals(X).min() > 0.2
    k = min(shape)
    w, g = randn(k, seed=95), torch.linspace(0.5, 2.0, k, dtype=F64)
    m, n = shape
    W1, W2, W3 = randn(m, n, seed=96), randn(m, m, seed=97), randn(n, n, seed=98)

    def scalar(U, S, V):
        return ((w * S**2).sum() + (W1 * ((U * g) @ V.mT)).sum() + (W2 * ((U * g) @ U.mT)).sum()
                + (W3 * ((V * g) @ V.mT)).sum())

    def torch_svd(Y):
        U, S, Vh = torch.linalg.svd(Y, full_matrices=False)
        return U, S, Vh.mT

    E = randn(*shape, seed=99)
    got = double_grad_hvp(lambda Y: scalar(*matbp.svd(Y)), X, E)
    want = double_grad_hvp(lambda Y: scalar(*torch_svd(Y)), X, E)
    _assert_close_rel(got, want, TOL, "svd HVP against torch.linalg.svd")


# ------------------------------------------ the second-derivative operators


@pytest.mark.parametrize("fn,p", [("log", None), ("pow", 2.5)], ids=["log", "pow2.5"])
def test_sym_fn_second_derivative_op(fn, p):
    op = _matbp_op("sym_fn_second_derivative")
    A = _spectrum([0.5, 0.5, 0.5, 2.0], seed=100)
    G, H = _sym(randn(4, 4, seed=101)), _sym(randn(4, 4, seed=102))
    _, L, V = torch.ops.matbp.sym_fn_with_eig(A, fn, 1.0 if p is None else p)
    D = op(G, H, L, V, fn, 1.0 if p is None else p)
    assert D.shape == A.shape and D.dtype == F64
    _assert_close_rel(D, sym_fn_hvp_reference(A, G, H, fn, p), TOL, f"sym_fn_second_derivative {fn}")
    _assert_close_rel(op(H, G, L, V, fn, 1.0 if p is None else p), D, 1e-13, "symmetry in G and H")


def test_projector_second_derivative_op():
    op = _matbp_op("projector_second_derivative")
    A, G, H = _projector_problem("rank3-of-5")
    _, L, V = torch.ops.matbp.projector_with_eig(A, 1e-8)
    D = op(_sym(G), H, L, V, 1e-8)
    assert D.shape == A.shape and D.dtype == F64
    _assert_close_rel(D, projector_hvp_reference(A, G, H, rtol=1e-8), TOL, "projector_second_derivative")
    # Symmetric in G and H (both rank-preserving directions here).
    B = randn(5, 3, seed=60)
    Fm = randn(5, 3, seed=103)
    G2 = _sym(B @ Fm.mT + Fm @ B.mT)
    _assert_close_rel(op(G2, H, L, V, 1e-8), op(H, G2, L, V, 1e-8), 1e-13, "symmetry in G and H")


# ------------------------------------------------- batches and devices


def test_batched_hvp_on_device(device):
    # One call on a batch; each matrix against its own reference.
    A = torch.stack([_spectrum(SPECTRA["repeated"], seed=110), _spectrum(SPECTRA["clustered"], seed=111)])
    W, E = randn(2, 5, 5, seed=112), _sym(randn(2, 5, 5, seed=113))
    X = torch.stack([_with_singular_values(3, 5, [1.7, 1.0, 1.0], seed=114), _low_rank(3, 5, 2, seed=115)])
    WX, EX = randn(2, 5, 5, seed=116), randn(2, 3, 5, seed=117)
    Xc = torch.stack([_with_singular_values(6, 4, [1.7, 1.0, 1.0, 1.0], seed=118), _low_rank(6, 4, 2, seed=119)])
    WXc, EXc = randn(2, 4, 4, seed=120), randn(2, 6, 4, seed=121)
    on = lambda *ts: [t.to(device) for t in ts]  # noqa: E731
    hv_log = double_grad_hvp(_sym_fn_scalar(*on(W), "log", None), *on(A, E))
    hv_pow = double_grad_hvp(_sym_fn_scalar(*on(W), "pow", 0.5), *on(A, E))
    hv_rows = double_grad_hvp(_o2p_scalar(*on(WX)), *on(X, EX))
    hv_cols = double_grad_hvp(_o2p_scalar(*on(WXc)), *on(Xc, EXc))
    for hv in (hv_log, hv_pow, hv_rows, hv_cols):
        assert hv.device.type == device and hv.dtype == F64
    for b in range(2):
        _assert_close_rel(hv_log[b].cpu(), sym_fn_hvp_reference(A[b], W[b], E[b], "log"), TOL, f"log [{b}]")
        _assert_close_rel(hv_pow[b].cpu(), sym_fn_hvp_reference(A[b], W[b], E[b], "pow", 0.5), TOL, f"pow [{b}]")
        _assert_close_rel(hv_rows[b].cpu(), o2p_log_hvp_reference(X[b], WX[b], EX[b], 1e-3), TOL, f"rows [{b}]")
        _assert_close_rel(hv_cols[b].cpu(), o2p_log_hvp_reference(Xc[b], WXc[b], EXc[b], 1e-3), TOL, f"cols [{b}]")


def test_projector_and_ncut_hvp_on_device_match_the_cpu(device):
    # The projector's second-derivative kernel and the normalized-cuts double
    # backward (a QR and the projector) on each device, against the CPU.
    B = randn(2, 5, 3, seed=122)
    W, dB = randn(2, 5, 5, seed=123), randn(2, 5, 3, seed=124)
    X = torch.rand(2, 12, 3, generator=torch.Generator().manual_seed(125), dtype=F64) + 0.1
    labels = torch.arange(12).repeat(2, 1) % 3
    dX = randn(2, 12, 3, seed=126)
    cases = [
        (lambda B: (W.to(B.device) * matbp.projector(B @ B.mT, rtol=1e-8)).sum(), B, dB),
        (lambda X: matbp.ncut_j2(X, labels.to(X.device)).sum(), X, dX),
        (lambda X: matbp.ncut_j1(X, labels.to(X.device)).sum(), X, dX),
    ]
    for f, x, v in cases:
        got = double_grad_hvp(f, x.to(device), v.to(device))
        assert got.device.type == device
        _assert_close_rel(got.cpu(), double_grad_hvp(f, x, v), 1e-10, f"{device} vs cpu")


def test_create_graph_gradient_equals_the_plain_gradient():
    # create_graph=True changes nothing in the first derivative's value.
    A, W, _ = _sym_fn_problem("repeated")
    f = _sym_fn_scalar(W, "log", None)
    Ar = A.clone().requires_grad_()
    (g_graph,) = torch.autograd.grad(f(Ar), Ar, create_graph=True)
    (g_plain,) = torch.autograd.grad(f(Ar), Ar)
    assert g_graph.requires_grad
    torch.testing.assert_close(g_graph.detach(), g_plain, rtol=1e-14, atol=1e-15)
    _assert_close_rel(g_plain, sym_fn_gradient_reference(A, W, "log"), 1e-12, "first-order gradient")


# -------------------------------------------------------- triple backward

TRIPLE_CASES = {
    "sym_fn": ("matbp.sym_fn", lambda B: matbp.sym_fn(_sym(B), "log"), random_spd((), 4, seed=130)),
    "o2p_log-rows": ("matbp.o2p_log", lambda X: matbp.o2p_log(X), randn(3, 5, seed=131)),
    "o2p_log-cols": ("matbp.o2p_log", lambda X: matbp.o2p_log(X), randn(6, 4, seed=132)),
    "projector": ("matbp.projector", lambda B: matbp.projector(B @ B.mT, rtol=1e-8), randn(5, 3, seed=133)),
}
# sym_eig and svd are left out: their double backward is their backward
# restated as torch ops, which higher derivatives may follow.


@pytest.mark.parametrize("case", list(TRIPLE_CASES))
def test_triple_backward_raises_naming_the_op(case):
    name, f, x = TRIPLE_CASES[case]
    xr = x.clone().requires_grad_()
    out = f(xr)
    (g1,) = torch.autograd.grad((out * randn(*out.shape, seed=134)).sum(), xr, create_graph=True)  # must work
    with pytest.raises(NotImplementedError, match=re.escape(name)):
        # Raised by the second grad (create_graph=True) or by the third.
        (g2,) = torch.autograd.grad((g1 * randn(*x.shape, seed=135)).sum(), xr, create_graph=True)
        torch.autograd.grad((g2 * randn(*x.shape, seed=136)).sum(), xr)


# ------------------------------------------------ gradient-penalty training


class _EighSecondOrderPooling(torch.nn.Module):
    """SecondOrderPooling with C composed through torch.linalg.eigh."""

    def __init__(self, eps=1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, features):
        positions = features.shape[-1] * features.shape[-2]
        X = features.flatten(-2).mT / positions**0.5
        return eigh_o2p_log(X, self.eps)


class _Net(torch.nn.Module):
    def __init__(self, pool, c_in, c, classes=3):
        super().__init__()
        self.proj = torch.nn.Conv2d(c_in, c, 1, bias=False)
        self.pool = pool
        self.head = torch.nn.Linear(c * c, classes)

    def forward(self, x):
        return self.head(self.pool(self.proj(x)).flatten(1))


def _penalised_step(net, x, y):
    """loss = task + ||∇_x task||², backward; (loss, parameter gradients)."""
    x = x.clone().requires_grad_()
    task = F.cross_entropy(net(x), y)
    (gx,) = torch.autograd.grad(task, x, create_graph=True)
    loss = task + gx.square().sum()
    net.zero_grad()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in net.parameters()]


def _nets(c_in, c, seed):
    torch.manual_seed(seed)
    net = _Net(matbp.nn.SecondOrderPooling(1e-3), c_in, c).double()
    ref = _Net(_EighSecondOrderPooling(1e-3), c_in, c).double()
    ref.load_state_dict(net.state_dict())
    return net, ref


def test_gradient_penalty_step_matches_torch_at_a_separated_spectrum():
    # Cols path: 3×3 = 9 positions >= 4 channels; the spectrum of the
    # covariance is well separated, so torch's double backward through eigh
    # is exact and the two must agree.
    net, ref = _nets(c_in=3, c=4, seed=140)
    x, y = randn(2, 3, 3, 3, seed=141), torch.tensor([0, 2])
    with torch.no_grad():
        feats = net.proj(x).flatten(-2).mT / 3.0
        L = torch.linalg.eigvalsh(feats.mT @ feats)
    assert _min_gap(L) > 1e-2
    loss, grads = _penalised_step(net, x, y)
    loss_ref, grads_ref = _penalised_step(ref, x, y)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=0)
    for (name, _), g, g_ref in zip(net.named_parameters(), grads, grads_ref):
        assert torch.isfinite(g).all(), name
        _assert_close_rel(g, g_ref, 1e-8, f"gradient of {name}")
    # The penalty's second-order term is there: without it the gradients differ.
    net.zero_grad()
    x1 = x.clone().requires_grad_()
    F.cross_entropy(net(x1), y).backward()
    assert any(rel_err(p.grad, g) > 1e-3 for p, g in zip(net.parameters(), grads))


def test_gradient_penalty_step_rows_path_is_finite_and_trains():
    # Rows path: 2×2 = 4 positions < 6 channels, so XᵀX/m + eps I has two
    # eigenvalues exactly eps; matbp's double backward stays finite there.
    net, _ = _nets(c_in=3, c=6, seed=150)
    x, y = randn(3, 3, 2, 2, seed=151), torch.tensor([0, 1, 2])
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    loss0, grads = _penalised_step(net, x, y)
    for g in grads:
        assert torch.isfinite(g).all()
    opt.step()
    loss1, _ = _penalised_step(net, x, y)
    assert torch.isfinite(loss1) and loss1 < loss0


# ------------------------------------------------ the reference's own checks


def test_reference_methods_agree():
    # Central difference of the Daleckii–Krein gradient vs f of a block
    # triangular matrix (mpmath's expm / sqrtm / powm): no shared formula.
    A = _spectrum([1.0, 1.0, 2.0], seed=160)
    W, E = randn(3, 3, seed=161), _sym(randn(3, 3, seed=162))
    for fn, p in [("exp", None), ("sqrt", None), ("pow", 2.5)]:
        assert sym_fn_hvp_methods_disagreement(A, W, E, fn, p) < 1e-30, fn


def test_reference_matches_torch_at_a_separated_spectrum():
    A, W, E = _sym_fn_problem("separated")
    for fn, p in FNS:
        want = double_grad_hvp(lambda B: (W * eigh_sym_fn(_sym(B), fn, p)).sum(), A, E)
        _assert_close_rel(sym_fn_hvp_reference(A, W, E, fn, p), want, TOL, f"reference {fn} vs torch")
    X, WX, EX = _o2p_problem("cols", "separated")
    want = double_grad_hvp(lambda Y: (WX * eigh_o2p_log(Y, 1e-3)).sum(), X, EX)
    _assert_close_rel(o2p_log_hvp_reference(X, WX, EX, 1e-3), want, TOL, "o2p_log reference vs torch")
