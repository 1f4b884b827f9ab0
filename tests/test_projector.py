"""The projector op, matbp.projector(A) = A A⁺ (the orthogonal projector onto
range(A) of a symmetric A): against QR, gradients at rank-deficient and
indefinite A (gradcheck and finite differences along rank-preserving
directions), against A pinv(A), rtol and bad input, opcheck and torch.compile."""

import pytest
import torch
from torch.autograd import gradcheck

import matbp
from conftest import F32, F64, check_on_device, gen, randn, random_spd, tols, with_spectrum


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_projector_matches_qr(rank):
    Xf = torch.randn(2, 5, rank, generator=gen(28), dtype=torch.float64)
    A = Xf @ Xf.mT
    Q, _ = torch.linalg.qr(Xf)
    torch.testing.assert_close(matbp.projector(A), Q @ Q.mT, atol=1e-12, rtol=0)
    assert matbp.projector(A.float()).dtype == torch.float32


def test_projector_gradcheck_rank_deficient(device):
    Xf = torch.randn(2, 6, 3, generator=gen(29), dtype=torch.float64).to(device).requires_grad_()
    assert gradcheck(lambda X: matbp.projector(X @ X.mT), (Xf,))
    B = torch.randn(4, 4, generator=gen(30), dtype=torch.float64)
    # Indefinite, rank 3: eigenvalues of both signs.
    L, V = torch.linalg.eigh(B + B.T)
    A = ((V * torch.tensor([-2.0, 0.0, 1.0, 3.0], dtype=torch.float64)) @ V.T).to(device)
    dirs = torch.randn(4, 4, generator=gen(31), dtype=torch.float64).to(device)
    A_r = A.clone().requires_grad_()
    G = torch.randn(4, 4, generator=gen(32), dtype=torch.float64).to(device)
    (matbp.projector(A_r) * G).sum().backward()
    # Finite difference along a rank-preserving direction: A(t) = e^{tS} A e^{-tS}.
    S = dirs - dirs.T
    h = 1e-6
    Ap = torch.linalg.matrix_exp(h * S) @ A @ torch.linalg.matrix_exp(-h * S)
    Am = torch.linalg.matrix_exp(-h * S) @ A @ torch.linalg.matrix_exp(h * S)
    fd = ((matbp.projector(Ap) - matbp.projector(Am)) * G).sum() / (2 * h)
    dA = S @ A - A @ S
    assert abs((A_r.grad * dA).sum() - fd) < 1e-7


def _projector_input(kind):
    """(A float64, the rank tolerance for float64 input)."""
    if kind == "rank3-of-8":
        # An explicit rtol: rounding leaves the zero eigenvalues near the
        # default n·eps·max|λ|, where CPU and GPU solvers could decide apart.
        Xf = randn(3, 8, 3, seed=28)
        return Xf @ Xf.mT, 1e-10
    if kind == "indefinite":
        A, _ = with_spectrum(torch.tensor([[-2.0, 0.0, 1.0, 3.0], [0.0, 0.0, 5.0, -1.0]]), seed=30)
        return A, 1e-10
    if kind == "spd-33":
        return random_spd((2,), 33, seed=31), None
    if kind == "rank10-of-40":
        Xf = randn(2, 40, 10, seed=32)
        return Xf @ Xf.mT, None
    raise ValueError(kind)


def pinv_projector(A, rtol=None):
    """A A⁺ by torch.linalg.pinv in float64, of sym(A): a reference for the
    projector and (pinv's backward) its gradient while the rank is constant."""
    A64 = A.double()
    A64 = (A64 + A64.mT) / 2
    rtol = A.shape[-1] * torch.finfo(F64).eps if rtol is None else rtol
    return (A64 @ torch.linalg.pinv(A64, rtol=rtol, hermitian=True)).to(A.dtype)


@pytest.mark.parametrize("kind", ["rank3-of-8", "indefinite", "spd-33", "rank10-of-40"])
def test_projector_against_pinv(kind, dtype, device):
    # Value and gradient: against A pinv(A) on the CPU, against the CPU kernel on CUDA.
    A, rtol = _projector_input(kind)
    A = A.to(dtype)
    if dtype == F32:
        # float32 rounding lifts exact zeros to ~1e-7·|A|: a float32-sized
        # rank tolerance keeps the rank (the default n·eps is float64's).
        rtol = 1e-4

    def reference(A):
        if kind == "spd-33":  # full rank: Π = I, a constant
            return torch.eye(A.shape[-1], dtype=A.dtype) + 0 * A
        return pinv_projector(A, rtol)

    check_on_device(lambda A: matbp.projector(A, rtol), [A], device, reference=reference,
                    tol=tols(dtype, 1e-10, 1e-5), grad_tol=tols(dtype, 1e-8, 1e-4))


def test_projector_rtol_and_errors():
    A = torch.diag(torch.tensor([1.0, 1e-6, 0.0], dtype=torch.float64))
    assert torch.allclose(matbp.projector(A).diagonal(), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(matbp.projector(A, rtol=1e-3).diagonal(), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="matbp.projector: argument 'rtol' must be a finite number >= 0"):
        matbp.projector(A, rtol=-1.0)
    with pytest.raises(RuntimeError, match="matbp.projector: argument 'A' must be a batch of square matrices"):
        matbp.projector(torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="matbp.projector: argument 'A' contains NaN or Inf"):
        matbp.projector(torch.full((2, 2), float("nan"), dtype=torch.float64))


def test_backward_is_the_derivative_of_the_thresholded_projector():
    # Null eigenvalues below a large rtol but not zero: the derivative of
    # what the forward computes has 1/(λ_range − λ_null), not eq. 19's
    # 1/λ_range (28% off here before).
    Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen(40), dtype=F64))
    A = Q @ torch.diag(torch.tensor([0.01, 0.05, 1.0, 2.0], dtype=F64)) @ Q.mT
    E = torch.randn(4, 4, generator=gen(41), dtype=F64)
    E = (E + E.mT) / 2
    G = torch.randn(4, 4, generator=gen(42), dtype=F64)
    Ar = A.clone().requires_grad_()
    (gA,) = torch.autograd.grad((matbp.projector(Ar, rtol=0.2) * G).sum(), Ar)
    h = 1e-6
    fd = ((matbp.projector(A + h * E, rtol=0.2) - matbp.projector(A - h * E, rtol=0.2)) * G).sum() / (2 * h)
    torch.testing.assert_close((gA * E).sum(), fd, rtol=1e-8, atol=1e-10)
    assert torch.autograd.gradgradcheck(lambda A: matbp.projector((A + A.mT) / 2, rtol=0.2), (Ar,))


def test_projector_opcheck_and_compile(device):
    Xf = torch.randn(2, 5, 2, generator=gen(33), dtype=torch.float64)
    A = (Xf @ Xf.mT).to(device)
    torch.library.opcheck(torch.ops.matbp.projector.default, (A, None))
    torch.library.opcheck(torch.ops.matbp.projector_with_eig.default, (A, None))
    torch.library.opcheck(torch.ops.matbp.projector_with_eig.default, (A.clone().requires_grad_(), 1e-10))
    P, L, V = torch.ops.matbp.projector_with_eig(A, None)
    torch.library.opcheck(torch.ops.matbp.projector_backward.default, (torch.randn_like(P), L, V, None))
    torch.library.opcheck(torch.ops.matbp.projector_backward.default,
                          (torch.randn_like(P).requires_grad_(), L, V, None))
    torch.library.opcheck(torch.ops.matbp.projector_second_derivative.default,
                          (torch.randn_like(P), torch.randn_like(P).requires_grad_(), L, V, None))
    f = torch.compile(lambda A: matbp.projector(A).sum(), fullgraph=True, backend="aot_eager")
    A_r = A.clone().requires_grad_()
    f(A_r).backward()
    A_e = A.clone().requires_grad_()
    matbp.projector(A_e).sum().backward()
    torch.testing.assert_close(A_r.grad, A_e.grad)
