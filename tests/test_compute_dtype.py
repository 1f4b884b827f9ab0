"""The float32 compute mode (compute_dtype=torch.float32 of sym_eig and
sym_fn; float64, the default, is tested in every other file): float32
decompositions (the batched QL solver in packs of 16, LAPACK ssyevd above
its crossover) and products, the divided differences still evaluated stably,
so the gradient is never NaN at ties and within 1e-4 of a 50-digit reference
on the adversarial spectra where float32 input determines it; tie and domain
tolerances at float32's rounding; the argument checked like any other."""

import contextlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.autograd.functional import hvp

import matbp
from conftest import F32, F64, adversarial, assert_lapack_accuracy, random_spd, randn, with_spectrum
from hvp_reference import sym_fn_gradient_reference

EPS32 = torch.finfo(F32).eps
# The bound on the float32 compute mode's gradient error, on
# well-conditioned spectra (measured 3e-7..1e-6 on the random, repeated and
# clustered ones: bench/results/sym_fn_cpu.md).
GRAD_TOL = 1e-4

SPECTRAL_FNS = [("log", None), ("sqrt", None), ("pow", -0.5), ("pow", 1.5), ("exp", None)]


def sym_fn32(A, fn, p=None):
    return matbp.sym_fn(A, fn, p, compute_dtype=F32)


def rel(got, want):
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


# ------------------------------------------------------------ decomposition


@pytest.mark.parametrize("n", [1, 2, 3, 8, 17, 32, 33, 64, 65])
@pytest.mark.parametrize("solver", ["default", "lapack"])
def test_adversarial_spectra_at_float32_accuracy(n, solver, monkeypatch):
    # 21 matrices: a full pack of 16 and a partial one; the extreme scales
    # stay inside float32's range.
    if solver == "lapack":
        monkeypatch.setenv("MATBP_QL_MAX_N", "0")
    A = adversarial(n, batch=21, extreme=1e30)
    L, V = matbp.sym_eig(A, compute_dtype=F32)
    assert L.dtype == V.dtype == F64  # A's dtype, float32 precision
    assert_lapack_accuracy(A, L, V, torch.linalg.eigvalsh(A), eps=EPS32)


def test_outputs_and_saved_decomposition_dtypes():
    A = random_spd((3,), 5)
    L, V = matbp.sym_eig(A.float(), compute_dtype=F32)
    assert L.dtype == V.dtype == F32
    F, L, V = torch.ops.matbp.sym_fn_with_eig(A, "log", compute_dtype=F32)
    assert F.dtype == F64 and L.dtype == V.dtype == F32
    F, L, V = torch.ops.matbp.sym_fn_with_eig(A.half(), "log", compute_dtype=F32)
    assert F.dtype == torch.float16 and L.dtype == V.dtype == F32
    F, L, V = torch.ops.matbp.sym_fn_with_eig(A.float(), "log")
    assert L.dtype == V.dtype == F64  # the default mode saves float64


def test_explicit_float64_is_the_default():
    A = random_spd((4,), 6, dtype=F32)
    torch.testing.assert_close(matbp.sym_fn(A, "log", compute_dtype=F64), matbp.sym_fn(A, "log"),
                               rtol=0, atol=0)


def test_nonfinite_in_float32_is_named():
    # A float64 entry beyond float32's range is Inf in the compute dtype.
    A = random_spd((3,), 4)
    A[1, 2, 1] = 1e300
    with pytest.raises(RuntimeError, match=r"matbp\.sym_eig.*matrix 1 "):
        matbp.sym_eig(A, compute_dtype=F32)


# ---------------------------------------------------------------- gradients


def _families(n=6):
    """Spectra that float32 input determines to float32 accuracy, the graded
    one (kappa = 1e4) to kappa eps32: eigenvalues below eps32 ||A|| would be
    rounding noise in float32."""
    i = torch.arange(n, dtype=F64)
    return {
        "random": torch.tensor([0.5, 0.7, 1.1, 1.3, 1.7, 2.0], dtype=F64),
        "repeated": torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 3.0], dtype=F64),
        "clustered": torch.tensor([1.0, 1 + 1e-12, 1 + 2e-12, 2.0, 2 + 1e-12, 3.0], dtype=F64),
        "graded": 10.0 ** (-4.0 * (n - 1 - i) / (n - 1)),
    }


@pytest.mark.parametrize("family", list(_families()))
@pytest.mark.parametrize("fn,p", SPECTRAL_FNS)
def test_gradient_against_the_50_digit_reference(fn, p, family):
    A, _ = with_spectrum(_families()[family], seed=3)
    A32 = A.float()
    W = randn(6, 6, seed=1)
    a = A32.clone().requires_grad_()
    (sym_fn32(a, fn, p) * W.float()).sum().backward()
    g = (a.grad.double() + a.grad.double().mT) / 2
    assert torch.isfinite(g).all()
    # The reference at the float32-rounded input: what float32 computation can
    # reach. The graded spectrum's small eigenvalues carry float32's absolute
    # error, eps32 ||A||, relative to themselves: kappa = 1e4 times more.
    # Over 20 rotations of it log's error has median 1.0e-4 and reaches
    # 2.7e-4 (torch's float32 eigh composition: 5e-5, at most 6e-4), so its
    # bound is n eps32 kappa, and GRAD_TOL holds only where kappa is small.
    tol = 6 * EPS32 * 1e4 if family == "graded" else GRAD_TOL
    assert rel(g, sym_fn_gradient_reference(A32.double(), W, fn, p)) <= tol


@pytest.mark.parametrize("fn,p", SPECTRAL_FNS)
def test_exact_ties_never_nan(fn, p):
    # diag(λ) with λ₀ = λ₁ exactly: eigh's composition divides 0 by 0 there.
    lam = torch.tensor([0.5, 0.5, 1.0, 1.5, 2.0], dtype=F32)
    A = torch.diag_embed(lam).expand(4, 5, 5).contiguous().requires_grad_()
    G = randn(4, 5, 5, seed=2, dtype=F32)
    sym_fn32(A, fn, p).backward(G)
    assert torch.isfinite(A.grad).all()
    for b in range(4):
        want = sym_fn_gradient_reference(torch.diag(lam.double()), G[b].double(), fn, p)
        assert rel((A.grad[b] + A.grad[b].mT) / 2, want) <= 1e-6


def test_adversarial_batch_is_finite_or_raises():
    # Every adversarial family through exp (defined everywhere): finite values
    # and gradients, never NaN, at every size and on both solvers' sides.
    for n in (5, 33, 70):
        A = adversarial(n, batch=21, extreme=1e15).clamp(-30, 30).requires_grad_()
        F = sym_fn32(A / 30, "exp")
        F.backward(torch.ones_like(F))
        assert torch.isfinite(F).all() and torch.isfinite(A.grad).all()


def test_log_of_a_float32_singular_matrix_raises():
    # Graded to 1e-12: float32's rounding makes the small eigenvalues noise of
    # either sign; outside log's domain is an error, not NaN.
    A, _ = with_spectrum(10.0 ** -torch.linspace(12, 0, 8, dtype=F64), seed=4)
    with pytest.raises(RuntimeError, match="fn='log' is not defined for matrix 0"):
        sym_fn32(A.float(), "log")


def test_singular_psd_sqrt_in_float32():
    # Eigenvalues of about -n eps32 ||A|| count as zero at float32's tolerance.
    X = randn(6, 3, seed=5)
    A = (X @ X.mT).float()
    F = sym_fn32(A, "sqrt")
    assert torch.isfinite(F).all()
    torch.testing.assert_close((F @ F).double(), A.double(), atol=1e-5, rtol=0)


def test_sym_eig_backward_ties_at_float32_tolerance():
    # A gap of 1e-9 is resolved in float64 but a tie in float32: the
    # eigenvector coupling across it is dropped, not 1e9.
    A = torch.diag(torch.tensor([1.0, 1.0 + 1e-9, 2.0, 3.0], dtype=F64)).unsqueeze(0).requires_grad_()
    L, V = matbp.sym_eig(A, compute_dtype=F32)
    (V * randn(1, 4, 4, seed=6)).sum().backward()
    assert A.grad.abs().max() < 10


def test_sym_eig_gauge_invariant_gradient_matches_float64():
    A = random_spd((3,), 7).requires_grad_()
    w = torch.arange(7, dtype=F64)

    def loss(compute_dtype):
        L, V = matbp.sym_eig(A, compute_dtype=compute_dtype)
        return (((V * w) @ V.mT) ** 2).sum() + (L ** 2).sum()

    g32, = torch.autograd.grad(loss(F32), A)
    g64, = torch.autograd.grad(loss(None), A)
    assert rel(g32, g64) <= GRAD_TOL


def test_forward_mode_is_the_adjoint_of_the_backward():
    A = random_spd((2,), 5, dtype=F32)
    dA = randn(2, 5, 5, seed=7, dtype=F32)
    G = randn(2, 5, 5, seed=8, dtype=F32)
    _, tangent = torch.func.jvp(lambda x: sym_fn32(x, "log"), (A,), (dA,))
    a = A.clone().requires_grad_()
    sym_fn32(a, "log").backward(G)
    lhs, rhs = (G.double() * tangent.double()).sum(), (a.grad.double() * dA.double()).sum()
    assert abs(lhs - rhs) <= 1e-5 * abs(rhs)
    (dL, dV), = [torch.func.jvp(lambda x: matbp.sym_eig(x, compute_dtype=F32), (A,), (dA,))[1]]
    assert dL.dtype == F32 and torch.isfinite(dV).all()


def test_double_backward_matches_float64():
    A = random_spd((), 5)
    v = randn(5, 5, seed=9)
    v = (v + v.mT) / 2

    def scalar(compute_dtype):
        return lambda x: (matbp.sym_fn(x, "log", compute_dtype=compute_dtype) ** 2).sum()

    _, h32 = hvp(scalar(F32), A, v)
    _, h64 = hvp(scalar(None), A, v)
    assert rel(h32, h64) <= GRAD_TOL


def test_autocast_and_compile():
    # compute_dtype is a positional schema argument: torch.library's autocast
    # kernels refuse keyword arguments.
    A = random_spd((2,), 5, dtype=F32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F = matbp.sym_fn(A.bfloat16(), "log", compute_dtype=F32)
        L, V = matbp.sym_eig(A.bfloat16(), compute_dtype=F32)
    assert F.dtype == L.dtype == V.dtype == F32
    compiled = torch.compile(lambda a: sym_fn32(a, "log"), fullgraph=True)
    a, b = A.clone().requires_grad_(), A.clone().requires_grad_()
    compiled(a).sum().backward()
    sym_fn32(b, "log").sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_nn_module():
    layer = matbp.nn.SymFn("sqrt", compute_dtype=F32)
    assert "compute_dtype=torch.float32" in repr(layer)
    A = random_spd((2,), 4, dtype=F32)
    torch.testing.assert_close(layer(A), sym_fn32(A, "sqrt"))


# ---------------------------------------------------------- argument checks


def test_opcheck():
    A = random_spd((2,), 4)
    for args in ((A,), (A.float().requires_grad_(),)):
        torch.library.opcheck(torch.ops.matbp.sym_eig.default, args, {"compute_dtype": F32})
        torch.library.opcheck(torch.ops.matbp.sym_fn_with_eig.default, (*args, "log", 1.0),
                              {"compute_dtype": F32})
    L, V = matbp.sym_eig(A, compute_dtype=F32)
    torch.library.opcheck(torch.ops.matbp.sym_eig_backward.default, (None, torch.randn_like(V), L, V),
                          {"compute_dtype": F32})


@pytest.mark.parametrize("bad", [torch.float16, torch.bfloat16, torch.int64, torch.complex64])
@pytest.mark.parametrize("mode", ["eager", "fake"])
def test_unsupported_compute_dtype_is_an_error(bad, mode):
    # The fake kernels (tracing, torch.compile) raise the kernels' message.
    with FakeTensorMode() if mode == "fake" else contextlib.nullcontext():
        A = torch.eye(4, dtype=F64).expand(2, 4, 4) * 2
        for call in (lambda: matbp.sym_eig(A, compute_dtype=bad),
                     lambda: matbp.sym_fn(A, "log", compute_dtype=bad),
                     lambda: torch.ops.matbp.sym_eig_backward(None, A, A[..., 0], A, compute_dtype=bad)):
            with pytest.raises(RuntimeError,
                               match="argument 'compute_dtype' must be torch.float32 or torch.float64"):
                call()


def test_wrong_type_is_a_type_error():
    A = random_spd((), 3)
    with pytest.raises(TypeError, match="matbp.sym_fn: argument 'compute_dtype' must be torch.float32"):
        matbp.sym_fn(A, "log", compute_dtype="float32")
    with pytest.raises(TypeError, match="matbp.sym_eig: argument 'compute_dtype' must be torch.float32"):
        matbp.sym_eig(A, compute_dtype=32)


def test_cuda_refuses_the_float32_mode(device):
    A = random_spd((2,), 4).to(device)
    if device == "cpu":
        assert torch.isfinite(matbp.sym_fn(A, "log", compute_dtype=F32)).all()
        return
    for call in (lambda: matbp.sym_eig(A, compute_dtype=F32), lambda: matbp.sym_fn(A, "log", compute_dtype=F32)):
        with pytest.raises(RuntimeError, match="compute_dtype=torch.float32 is not implemented on CUDA"):
            call()
