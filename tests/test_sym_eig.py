import threading

import pytest
import torch
from torch.autograd import gradcheck

import matbp
from conftest import BATCH_SHAPES, random_symmetric, with_spectrum


def reconstruct(L, V):
    return (V * L.unsqueeze(-2)) @ V.mT


@pytest.mark.parametrize("batch", BATCH_SHAPES)
@pytest.mark.parametrize("n", [0, 1, 2, 5, 33])
def test_matches_torch_eigh(batch, n, dtype):
    A = random_symmetric(batch, n, dtype)
    L, V = matbp.sym_eig(A)
    assert L.shape == (*batch, n) and V.shape == (*batch, n, n)
    assert L.dtype == dtype and V.dtype == dtype
    L_ref = torch.linalg.eigvalsh(A.double())
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    scale = max(1.0, A.abs().max().item()) if A.numel() else 1.0
    torch.testing.assert_close(L.double(), L_ref, atol=tol * scale, rtol=0)
    torch.testing.assert_close(reconstruct(L.double(), V.double()), A.double(), atol=tol * scale * 10, rtol=0)
    eye = torch.eye(n, dtype=torch.float64).expand(*batch, n, n)
    torch.testing.assert_close(V.double().mT @ V.double(), eye, atol=tol * 10, rtol=0)


def test_float32_is_decomposed_in_float64():
    # Eigenvalues spanning 1e-7..1: float32 LAPACK would lose the small ones.
    A, _ = with_spectrum([[1e-7, 1e-6, 0.5, 1.0]])
    L, _ = matbp.sym_eig(A.float())
    L_ref = torch.linalg.eigvalsh(A.float().double())
    torch.testing.assert_close(L.double(), L_ref.float().double(), rtol=1e-6, atol=0)


def test_reads_lower_triangle_only():
    A = random_symmetric((3,), 6)
    junk = torch.triu(torch.randn(3, 6, 6, dtype=torch.float64), diagonal=1) * 100
    L1, _ = matbp.sym_eig(A)
    L2, _ = matbp.sym_eig(torch.tril(A) + junk)
    torch.testing.assert_close(L1, L2, atol=1e-12, rtol=0)


def test_non_contiguous_and_expanded():
    base = random_symmetric((4,), 7)
    A_nc = base.transpose(0, 0)[::2]  # strided batch
    L, V = matbp.sym_eig(A_nc)
    torch.testing.assert_close(L, torch.linalg.eigvalsh(A_nc))
    A_t = base.mT  # transposed view (still symmetric)
    torch.testing.assert_close(matbp.sym_eig(A_t)[0], torch.linalg.eigvalsh(base))
    A_exp = base[0].expand(5, 7, 7)
    L_exp, _ = matbp.sym_eig(A_exp)
    torch.testing.assert_close(L_exp, torch.linalg.eigvalsh(base[0]).expand(5, 7))


def gauge_invariant(A, weights):
    """Functions of (L, V) that do not depend on the eigenvectors' signs."""
    L, V = matbp.sym_eig(A + A.mT)
    return L, (V * weights) @ V.mT, V.abs().sum(-1)


def test_gradcheck():
    A = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.arange(5, dtype=torch.float64)
    assert gradcheck(lambda A: gauge_invariant(A, w), (A,))


def test_double_backward_raises_clearly():
    A = random_symmetric((2,), 4).requires_grad_()
    L, _ = matbp.sym_eig(A)
    # The backward raises as soon as it runs with create_graph=True.
    with pytest.raises(NotImplementedError, match="matbp.sym_eig: double backward"):
        torch.autograd.grad(L.pow(2).sum(), A, create_graph=True)


def test_gradcheck_eigenvalues_only_and_vectors_only():
    A = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda A: matbp.sym_eig(A + A.mT)[0], (A,))
    w = torch.tensor([0.0, 1.0, 3.0, 7.0], dtype=torch.float64)
    assert gradcheck(lambda A: (lambda V: (V * w) @ V.mT)(matbp.sym_eig(A + A.mT)[1]), (A,))


def test_backward_matches_torch():
    A = random_symmetric((3,), 6).requires_grad_()
    A2 = A.detach().clone().requires_grad_()
    w = torch.randn(6, dtype=torch.float64)
    L, V = matbp.sym_eig(A)
    ((V * w) @ V.mT).pow(2).sum().add(L.pow(3).sum()).backward()
    L2, V2 = torch.linalg.eigh(A2)
    ((V2 * w) @ V2.mT).pow(2).sum().add(L2.pow(3).sum()).backward()
    torch.testing.assert_close(A.grad, A2.grad, atol=1e-10, rtol=1e-10)


def test_float32_backward_in_float64():
    A = random_symmetric((2,), 5)
    A32 = A.float().requires_grad_()
    L, V = matbp.sym_eig(A32)
    L.sum().backward()
    assert A32.grad.dtype == torch.float32
    # d(tr A)/dA = I regardless of the eigenvectors.
    torch.testing.assert_close(A32.grad, torch.eye(5).expand(2, 5, 5), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "spectrum",
    [[1.0, 1.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0], [1.0, 1.0 + 1e-14, 2.0, 5.0]],
    ids=["triple", "zero", "scalar", "cluster"],
)
def test_gradient_finite_at_ties(spectrum):
    A, _ = with_spectrum([spectrum], seed=3)
    A.requires_grad_()
    L, V = matbp.sym_eig(A)
    w = torch.arange(4, dtype=torch.float64)
    ((V * w) @ V.mT).sum().add(L.sum()).backward()
    assert torch.isfinite(A.grad).all()


def test_gradient_at_tie_is_approximate_but_fused_op_is_exact():
    # The example of docs/design.md §4: a composition V f(L) Vᵀ through sym_eig is
    # not differentiable at a triple eigenvalue; sym_fn is exact there.
    A, Q = with_spectrum([[1.0, 1.0, 1.0, 2.0]], seed=1)
    E = random_symmetric((1,), 4, seed=2)
    A1 = A.clone().requires_grad_()
    L, V = matbp.sym_eig(A1)
    ((V * L.log().unsqueeze(-2)) @ V.mT * E).sum().backward()
    A2 = A.clone().requires_grad_()
    (matbp.sym_fn(A2, "log") * E).sum().backward()
    assert torch.isfinite(A1.grad).all() and torch.isfinite(A2.grad).all()
    # Exact directional derivative of <E, log(A)> along E by Daleckii–Krein
    # with the known spectrum.
    lam = torch.tensor([1.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    d = lam[:, None] - lam[None, :]
    F1 = torch.where(d == 0, 1 / lam[:, None].expand(4, 4), (lam.log()[:, None] - lam.log()[None, :]) / torch.where(d == 0, 1, d))
    Et = Q[0].mT @ E[0] @ Q[0]
    exact = (F1 * Et * Et).sum()
    assert torch.allclose((A2.grad * E).sum(), exact, rtol=1e-12, atol=0)


def test_opcheck():
    A = random_symmetric((2,), 4)
    torch.library.opcheck(torch.ops.matbp.sym_eig.default, (A,))
    torch.library.opcheck(torch.ops.matbp.sym_eig.default, (A.clone().requires_grad_(),))
    L, V = matbp.sym_eig(A)
    gL, gV = torch.randn_like(L), torch.randn_like(V)
    torch.library.opcheck(torch.ops.matbp.sym_eig_backward.default, (gL, gV, L, V))
    torch.library.opcheck(torch.ops.matbp.sym_eig_backward.default, (None, gV, L, V))
    torch.library.opcheck(torch.ops.matbp.sym_eig_backward.default, (gL, None, L, V))


def test_torch_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(A):
        L, V = matbp.sym_eig(A)
        return (V * L.unsqueeze(-2).exp()) @ V.mT

    A = random_symmetric((3,), 5).requires_grad_()
    out = f(A)
    out.sum().backward()
    A2 = A.detach().clone().requires_grad_()
    L, V = matbp.sym_eig(A2)
    ((V * L.unsqueeze(-2).exp()) @ V.mT).sum().backward()
    torch.testing.assert_close(out, (V * L.unsqueeze(-2).exp()) @ V.mT)
    torch.testing.assert_close(A.grad, A2.grad)


def test_concurrent_calls_from_threads():
    inputs = [random_symmetric((16,), 12, seed=s) for s in range(8)]
    expected = [torch.linalg.eigvalsh(A) for A in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(5):
            results[i] = matbp.sym_eig(inputs[i])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(2, 0, 0), (0, 3, 3), (1, 1)])
def test_backward_of_empty_and_1x1(shape):
    A = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    L, V = matbp.sym_eig(A)
    (L.sum() + V.abs().sum()).backward()
    assert A.grad.shape == A.shape and torch.isfinite(A.grad).all()
    A2 = (2 * torch.ones(shape, dtype=torch.float64)).requires_grad_()
    matbp.sym_fn(A2, "log").sum().backward()
    assert A2.grad.shape == A2.shape and torch.isfinite(A2.grad).all()
