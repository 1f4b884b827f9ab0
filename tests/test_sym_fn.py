import mpmath
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

import matbp
from conftest import (
    BATCH_SHAPES,
    assert_rel,
    check_on_device,
    cpu64,
    random_spd,
    random_symmetric,
    randn,
    tols,
    with_spectrum,
)

FNS = [("log", None), ("sqrt", None), ("pow", 0.5), ("pow", -1.5), ("pow", 3.0), ("exp", None)]
IDS = ["log", "sqrt", "pow0.5", "pow-1.5", "pow3", "exp"]

mpmath.mp.dps = 50


def mp_f(fn, p):
    return {
        "log": mpmath.log,
        "sqrt": mpmath.sqrt,
        "pow": lambda x: mpmath.power(x, p),
        "exp": mpmath.exp,
    }[fn]


def mp_fprime(fn, p):
    return {
        "log": lambda x: 1 / x,
        "sqrt": lambda x: 1 / (2 * mpmath.sqrt(x)),
        "pow": lambda x: p * mpmath.power(x, p - 1),
        "exp": mpmath.exp,
    }[fn]


def mp_divided_differences(lam, fn, p):
    """F¹_ij at 50 digits from the float64 eigenvalues."""
    f, fprime = mp_f(fn, p), mp_fprime(fn, p)
    vals = [mpmath.mpf(float(x)) for x in lam]
    n = len(vals)
    out = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            a, b = vals[i], vals[j]
            out[i, j] = float(fprime(a) if a == b else (f(a) - f(b)) / (a - b))
    return out


def reference_gradient(Q, lam, G, fn, p):
    """Exact Daleckii–Krein gradient of <G, f(A)> at A = Q diag(lam) Qᵀ."""
    F1 = mp_divided_differences(lam, fn, p)
    Gs = 0.5 * (G + G.mT)
    return Q @ (F1 * (Q.mT @ Gs @ Q)) @ Q.mT


def reference_value(Q, lam, fn, p):
    f = mp_f(fn, p)
    flam = torch.tensor([float(f(mpmath.mpf(float(x)))) for x in lam], dtype=torch.float64)
    return (Q * flam) @ Q.mT


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("fn,p", FNS, ids=IDS)
@pytest.mark.parametrize(
    "spectrum",
    [
        [2.0, 2.0, 2.0, 0.5, 0.5, 3.0],  # exactly repeated
        [1.5] * 5,  # scalar matrix
        [1.0, 1.0 + 1e-12, 1.0 + 2e-12, 1.0 + 3e-9, 4.0],  # clustered
        [1e-3, 1e-3, 1.0, 1e3],  # wide range with a tie
    ],
    ids=["repeated", "scalar", "clustered", "wide"],
)
def test_gradient_exact_at_repeated_eigenvalues(fn, p, spectrum, device):
    lam = torch.tensor(spectrum, dtype=torch.float64)
    if fn == "exp":
        lam = lam.clamp(max=20.0)
    A, Q = with_spectrum(lam, seed=11)
    G = random_symmetric((), lam.numel(), seed=12) + randn(lam.numel(), lam.numel(), seed=13)
    Ar = A.detach().to(device).requires_grad_()
    F = matbp.sym_fn(Ar, fn, p)
    (gA,) = torch.autograd.grad((F * G.to(device)).sum(), Ar)
    ref = reference_gradient(Q, lam, G, fn, p)
    assert rel_err(cpu64(gA), ref) < 1e-9
    # Any backward-stable eigensolver perturbs eigenvalues by ~eps ||A||, so
    # the forward error of f scales with the condition number of A.
    cond = (lam.abs().max() / lam.abs().min()).item()
    assert rel_err(cpu64(F), reference_value(Q, lam, fn, p)) < max(1e-12, 10 * 2.2e-16 * cond)
    # On CUDA: the CPU kernel's value and gradient of a random functional.
    check_on_device(lambda A: matbp.sym_fn(A, fn, p), [A], device, tol=1e-11, grad_tol=1e-9)


@pytest.mark.parametrize("fn,p", FNS, ids=IDS)
def test_gradcheck(fn, p, device):
    X = randn(2, 5, 5, seed=2).to(device).requires_grad_()

    def f(X):
        A = X @ X.mT + 0.5 * torch.eye(5, dtype=torch.float64, device=device)
        if fn == "exp":
            A = A / 4
        return matbp.sym_fn(A, fn, p)

    assert gradcheck(f, (X,))


def test_gradcheck_through_all_outputs_of_sym_fn_with_eig():
    X = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.arange(4, dtype=torch.float64)

    def f(X):
        A = X @ X.mT + torch.eye(4, dtype=torch.float64)
        F, L, V = torch.ops.matbp.sym_fn_with_eig(A, "sqrt", 1.0)
        return F, L, (V * w) @ V.mT

    assert gradcheck(f, (X,))


@pytest.mark.parametrize("batch", BATCH_SHAPES)
@pytest.mark.parametrize("n", [0, 1, 4])
def test_batch_shapes_and_dtypes(batch, n, dtype):
    A = random_spd(batch, n, dtype=dtype)
    F = matbp.sym_fn(A, "log")
    assert F.shape == A.shape and F.dtype == dtype
    L, V = torch.linalg.eigh(A.double())
    ref = (V * L.log().unsqueeze(-2)) @ V.mT
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(F.double(), ref, atol=tol, rtol=0)


@pytest.mark.parametrize("fn,p", FNS, ids=IDS)
@pytest.mark.parametrize("n", [6, 40])
def test_random_spd_against_reference(fn, p, n, dtype, device):
    # Value and gradient of <G, f(A)>: the 50-digit Daleckii–Krein reference
    # from A's float64 eigendecomposition (and on CUDA, the CPU kernel's).
    A = random_spd((2,), n, dtype=dtype, seed=n, shift=0.5)
    G = randn(2, n, n, seed=n + 1, dtype=dtype)
    Ar = A.detach().to(device).requires_grad_()
    F = matbp.sym_fn(Ar, fn, p)
    assert F.dtype == dtype and F.device.type == device
    (gA,) = torch.autograd.grad((F * G.to(device)).sum(), Ar)
    lam, Q = torch.linalg.eigh(A.double())
    for b in range(2):
        assert_rel(F[b], reference_value(Q[b], lam[b], fn, p), tols(dtype, 1e-11, 1e-5), "f(A)")
        assert_rel(gA[b], reference_gradient(Q[b], lam[b], G[b].double(), fn, p), tols(dtype, 1e-9, 1e-4), "gradient")
    check_on_device(lambda A: matbp.sym_fn(A, fn, p), [A], device,
                    tol=tols(dtype, 1e-11, 1e-5), grad_tol=tols(dtype, 1e-9, 1e-4))


def test_float32_gradient_computed_in_float64():
    A, Q = with_spectrum(torch.tensor([1.0, 1.0, 2.0, 2.0 + 1e-6]), seed=5)
    A32 = A.float().requires_grad_()
    G = random_symmetric((), 4, seed=6)
    (matbp.sym_fn(A32, "log") * G.float()).sum().backward()
    assert A32.grad.dtype == torch.float32
    lam = torch.linalg.eigvalsh(A.float().double())
    Qf = torch.linalg.eigh(A.float().double())[1]
    ref = reference_gradient(Qf, lam, G, "log", None)
    assert rel_err(A32.grad.double(), ref) < 1e-6


def test_psd_input_with_zero_eigenvalues_for_sqrt(device):
    # Rank-deficient PSD matrix: solver eigenvalues may be -1e-17; sqrt must not NaN.
    X = randn(6, 3, seed=5)
    A = (X @ X.mT).to(device)
    F = matbp.sym_fn(A, "sqrt")
    assert torch.isfinite(F).all()
    torch.testing.assert_close(F @ F, A, atol=1e-10, rtol=0)


@pytest.mark.parametrize("fn,p,bad", [("log", None, 0.0), ("log", None, -1.0), ("sqrt", None, -1.0), ("pow", -0.5, 0.0)])
def test_outside_domain_raises(fn, p, bad):
    # A rotated singular matrix's computed zero eigenvalue is ±n·eps·||A||, of
    # either sign; the diagonal one's is exactly zero.
    A = torch.diag(torch.tensor([1.0, 2.0, bad], dtype=torch.float64)).unsqueeze(0)
    if bad != 0.0:
        A, _ = with_spectrum([[1.0, 2.0, bad]])
    with pytest.raises(RuntimeError, match=f"matbp.sym_fn: fn='{fn}' is not defined for matrix 0"):
        matbp.sym_fn(A, fn, p)


def test_wrapper_argument_errors():
    A = random_spd((), 3)
    with pytest.raises(ValueError, match="argument 'fn' must be one of"):
        matbp.sym_fn(A, "cos")
    with pytest.raises(ValueError, match="needs the exponent 'p'"):
        matbp.sym_fn(A, "pow")
    with pytest.raises(ValueError, match="only used by fn='pow'"):
        matbp.sym_fn(A, "log", 2.0)
    with pytest.raises(RuntimeError, match="matbp.sym_fn: argument 'fn' must be one of"):
        torch.ops.matbp.sym_fn(A, "cos", 1.0)


def test_module(device):
    m = matbp.nn.SymFn("pow", 0.5)
    A = random_spd((2,), 3)
    assert_rel(m(A.to(device)), matbp.sym_fn(A, "sqrt"), 1e-11, "SymFn")
    assert "pow" in repr(m)


def test_opcheck(device):
    A = random_spd((2,), 4).to(device)
    for fn in ["log", "pow"]:
        torch.library.opcheck(torch.ops.matbp.sym_fn.default, (A, fn, 0.5))
        torch.library.opcheck(torch.ops.matbp.sym_fn_with_eig.default, (A, fn, 0.5))
        torch.library.opcheck(torch.ops.matbp.sym_fn_with_eig.default, (A.clone().requires_grad_(), fn, 0.5))
    F, L, V = torch.ops.matbp.sym_fn_with_eig(A, "log", 1.0)
    torch.library.opcheck(torch.ops.matbp.sym_fn_backward.default, (torch.randn_like(F), L, V, "log", 1.0))
    torch.library.opcheck(torch.ops.matbp.sym_fn_backward.default,
                          (torch.randn_like(F).requires_grad_(), L, V, "log", 1.0))
    torch.library.opcheck(torch.ops.matbp.sym_fn_second_derivative.default,
                          (torch.randn_like(F).requires_grad_(), torch.randn_like(F), L, V, "log", 1.0))


def test_torch_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(X):
        return matbp.sym_fn(X @ X.mT + torch.eye(4, dtype=X.dtype), "log").sum(-1)

    X = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    out = f(X)
    out.sum().backward()
    X2 = X.detach().clone().requires_grad_()
    ref = matbp.sym_fn(X2 @ X2.mT + torch.eye(4, dtype=X.dtype), "log").sum(-1)
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(X.grad, X2.grad)


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.25, 1.0, 1.0 + 1e-13, 2.0, 7.5]), min_size=1, max_size=6),
    fn=st.sampled_from(["log", "sqrt", "exp"]),
    seed=st.integers(0, 2**16),
)
def test_property_gradient_matches_divided_differences(values, fn, seed):
    lam = torch.tensor(values, dtype=torch.float64)
    A, Q = with_spectrum(lam, seed=seed)
    G = random_symmetric((), lam.numel(), seed=seed + 1)
    A.requires_grad_()
    (matbp.sym_fn(A, fn) * G).sum().backward()
    ref = reference_gradient(Q, lam, G, fn, None)
    assert torch.isfinite(A.grad).all()
    assert rel_err(A.grad, ref) < 1e-9


@pytest.mark.parametrize("p", [3.0, -1.5, 0.3])
def test_pow_far_apart_eigenvalues_finite_and_exact(p):
    # Eigenvalue ratio 1e60: the divided difference must neither overflow nor
    # lose accuracy (it switches to the direct quotient there).
    lam = torch.tensor([1e-60, 1e-60, 1.0], dtype=torch.float64)
    Q = torch.eye(3, dtype=torch.float64)
    A = torch.diag(lam).requires_grad_()
    G = random_symmetric((), 3, seed=3)
    (matbp.sym_fn(A, "pow", p) * G).sum().backward()
    assert torch.isfinite(A.grad).all()
    assert rel_err(A.grad, reference_gradient(Q, lam, G, "pow", p)) < 1e-12


# Tolerances follow the input's precision: a singular PSD matrix rounded to
# float32 (or half) has eigenvalues of about -n eps ||A|| in that precision;
# they count as zero, as rounding of a float64 input does at float64's eps.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_singular_psd_in_low_precision_counts_rounding_negatives_as_zero(dtype, device):
    g = torch.Generator().manual_seed(21)
    F = torch.randn(3, 64, 10, generator=g, dtype=torch.float64)
    A = (F @ F.mT).to(dtype)                     # rank 10 of 64, rounded
    L64 = torch.linalg.eigvalsh(A.double())
    assert (L64.min(-1).values < 0).any()        # rounding made the matrices indefinite
    R = matbp.sym_fn(A.to(device), "sqrt")
    assert R.dtype == dtype and torch.isfinite(R.float()).all()
    L, V = torch.linalg.eigh(A.double())
    expected = (V * L.clamp_min(0).sqrt().unsqueeze(-2)) @ V.mT
    err = (R.double().cpu() - expected).norm() / expected.norm()
    assert err <= 4 * torch.finfo(dtype).eps ** 0.5, err   # sqrt near zero: half the digits


def test_float32_tolerance_still_rejects_a_truly_indefinite_matrix(device):
    A = torch.diag(torch.tensor([-1e-3, 0.5, 1.0])).float().to(device)
    with pytest.raises(RuntimeError, match="matbp.sym_fn: fn='sqrt' is not defined for matrix 0"), \
            matbp.sync_checks(True):
        matbp.sym_fn(A, "sqrt")


def test_float64_input_keeps_the_float64_tolerance():
    A = torch.diag(torch.tensor([-1e-9, 0.5, 1.0], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="matbp.sym_fn: fn='sqrt' is not defined for matrix 0"):
        matbp.sym_fn(A, "sqrt")
    assert torch.isfinite(matbp.sym_fn(A.float(), "sqrt")).all()  # -1e-9 is float32 rounding
