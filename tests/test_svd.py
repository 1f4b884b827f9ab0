import pytest
import torch
from torch.autograd import gradcheck

import matbp
from conftest import BATCH_SHAPES, F64, assert_rel, check_on_device, cpu64, low_rank, svd_invariants, tols


def rand(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


SHAPES = [(0, 3), (3, 0), (1, 1), (1, 4), (4, 1), (5, 3), (3, 5), (6, 6), (8, 5), (5, 8), (32, 32), (40, 36), (36, 40)]


@pytest.mark.parametrize("batch", BATCH_SHAPES)
@pytest.mark.parametrize("m,n", SHAPES)
def test_matches_torch_svd(batch, m, n, dtype, device):
    X = rand((*batch, m, n), seed=m + n, dtype=dtype)
    U, S, V = matbp.svd(X.to(device))
    k = min(m, n)
    assert U.shape == (*batch, m, k) and S.shape == (*batch, k) and V.shape == (*batch, n, k)
    assert U.dtype == S.dtype == V.dtype == dtype
    assert U.device.type == S.device.type == V.device.type == device
    # On CUDA: the CPU kernel's singular values, gauge-invariant functions of
    # the vectors and their gradients.
    check_on_device(svd_invariants, [X], device, tol=tols(dtype, 1e-10, 1e-5), grad_tol=tols(dtype, 1e-8, 1e-4))
    U, S, V = U.cpu(), S.cpu(), V.cpu()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(S.double(), torch.linalg.svdvals(X.double()), atol=tol * 10, rtol=0)
    torch.testing.assert_close((U.double() * S.double().unsqueeze(-2)) @ V.double().mT, X.double(), atol=tol * 10, rtol=0)
    eye = torch.eye(k, dtype=torch.float64).expand(*batch, k, k)
    torch.testing.assert_close(U.double().mT @ U.double(), eye, atol=tol * 10, rtol=0)
    torch.testing.assert_close(V.double().mT @ V.double(), eye, atol=tol * 10, rtol=0)
    if k > 1 and S.numel():
        assert (S[..., :-1] >= S[..., 1:]).all()


def test_non_contiguous_and_expanded(device):
    X = rand((4, 7, 5))
    Xt = X.to(device).mT  # (4, 5, 7), non-contiguous
    assert_rel(matbp.svd(Xt)[1], torch.linalg.svdvals(X.mT), 1e-12, "svd of a transposed view")
    Xe = X[0].to(device).expand(3, 7, 5)
    assert_rel(matbp.svd(Xe)[1], torch.linalg.svdvals(X[0]).expand(3, 5), 1e-12, "svd of an expanded matrix")


def gauge_invariant(X):
    U, S, V = matbp.svd(X)
    k = S.shape[-1]
    w = torch.arange(1, k + 1, dtype=X.dtype, device=X.device)
    # U diag(w) Uᵀ, V diag(w) Vᵀ and U diag(S) Vᵀ-like pairs are sign-invariant.
    return S, (U * w) @ U.mT, (V * w) @ V.mT, (U * w) @ V.mT


@pytest.mark.parametrize("shape", [(2, 6, 4), (2, 4, 6), (5, 5), (1, 3, 1), (1, 1, 3)])
def test_gradcheck(shape, device):
    X = rand(shape, seed=1).to(device).requires_grad_()
    assert gradcheck(gauge_invariant, (X,))


@pytest.mark.parametrize("shape", [(2, 6, 4), (2, 4, 6), (5, 5)])
def test_gradgradcheck(shape, device):
    # The derivative of the backward, with its tie policy (separated values here).
    X = rand(shape, seed=1).to(device).requires_grad_()
    assert torch.autograd.gradgradcheck(gauge_invariant, (X,))


@pytest.mark.parametrize("m,n", [(6, 4), (4, 6), (5, 5)])
def test_double_backward_composition_matches_the_backward_op(m, n):
    # The double backward differentiates this torch restatement of the
    # backward kernel: both must agree, at ties and rank loss too.
    from matbp._ops import _svd_backward_composition

    X = rand((3, m, n), seed=3)
    X[1] = low_rank((), m, n, 2, seed=4)  # rank loss: tied zero singular values
    X[2] = torch.eye(m, n, dtype=F64)  # all singular values tied
    U, S, V = matbp.svd(X)
    grads = rand(U.shape, seed=5), rand(S.shape, seed=6), rand(V.shape, seed=7)
    for present in ((0, 1, 2), (0,), (1,), (2,), (0, 2)):
        args = [g if i in present else None for i, g in enumerate(grads)]
        torch.testing.assert_close(_svd_backward_composition(*args, U, S, V),
                                   torch.ops.matbp.svd_backward(*args, U, S, V), rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("which", ["U", "S", "V"])
def test_gradcheck_single_output(which):
    X = rand((2, 6, 4), seed=2).requires_grad_()
    w = torch.arange(1, 5, dtype=torch.float64)

    def f(X):
        U, S, V = matbp.svd(X)
        return {"U": (U * w) @ U.mT, "S": S, "V": (V * w) @ V.mT}[which]

    assert gradcheck(f, (X,))


def test_backward_matches_torch():
    X = rand((3, 7, 4), seed=4).requires_grad_()
    X2 = X.detach().clone().requires_grad_()
    w = torch.randn(4, dtype=torch.float64)
    U, S, V = matbp.svd(X)
    ((U * w) @ V.mT).pow(2).sum().add(S.pow(3).sum()).add(((U * w) @ U.mT).sum()).backward()
    U2, S2, Vh2 = torch.linalg.svd(X2, full_matrices=False)
    V2 = Vh2.mT
    ((U2 * w) @ V2.mT).pow(2).sum().add(S2.pow(3).sum()).add(((U2 * w) @ U2.mT).sum()).backward()
    torch.testing.assert_close(X.grad, X2.grad, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
def test_gradient_finite_on_rank_deficient_and_tied_input(shape):
    # Rank 1 input: repeated zero singular values and S⁻¹ terms at zero.
    u = rand((shape[0], 1), seed=5)
    v = rand((shape[1], 1), seed=6)
    X = (u @ v.mT).requires_grad_()
    U, S, V = matbp.svd(X)
    w = torch.arange(1, min(shape) + 1, dtype=torch.float64)
    ((U * w) @ U.mT).sum().add(((V * w) @ V.mT).sum()).add(S.sum()).backward()
    assert torch.isfinite(X.grad).all()
    # Orthogonal input: all singular values tied.
    Q, _ = torch.linalg.qr(rand((5, 5), seed=7))
    Q.requires_grad_()
    U, S, V = matbp.svd(Q)
    ((U * torch.arange(5.0, dtype=torch.float64)) @ V.mT).sum().backward()
    assert torch.isfinite(Q.grad).all()


@pytest.mark.parametrize("shape,rank", [((8, 5), 2), ((5, 8), 2), ((40, 36), 5)], ids=str)
def test_rank_deficient(shape, rank, dtype, device):
    X = low_rank((2,), *shape, rank, seed=4).to(dtype)
    U, S, V = matbp.svd(X.to(device))
    # The singular values: torch's on the CPU, the CPU kernel's on CUDA.
    S_want = matbp.svd(X)[1] if device != "cpu" else torch.linalg.svdvals(X.double())
    smax = S_want.abs().max().item()
    assert (cpu64(S) - cpu64(S_want)).abs().max().item() <= tols(dtype, 1e-12, 1e-6) * smax
    k = min(shape)
    eye = torch.eye(k, dtype=F64).expand(2, k, k)
    U, S, V = cpu64(U), cpu64(S), cpu64(V)
    assert_rel(U.mT @ U, eye, tols(dtype, 1e-12 * k, 1e-5), "UᵀU")
    assert_rel(V.mT @ V, eye, tols(dtype, 1e-12 * k, 1e-5), "VᵀV")
    assert_rel((U * S.unsqueeze(-2)) @ V.mT, X, tols(dtype, 1e-12 * k, 1e-5), "U diag(S) Vᵀ")
    # Tied zero singular values: the gradient is finite.
    Xr = X.detach().to(device).requires_grad_()
    U, S, V = matbp.svd(Xr)
    w = torch.arange(1, k + 1, dtype=dtype, device=device)
    (g,) = torch.autograd.grad(S.sum() + ((U * w) @ U.mT).sum() + ((V * w) @ V.mT).sum(), Xr)
    assert torch.isfinite(g).all()


def test_singular_values_gradient_exact_on_rank_deficient_input():
    # dS/dX = U Vᵀ needs no tie handling: it must agree with torch exactly.
    X = torch.zeros(4, 3, dtype=torch.float64)
    X[0, 0], X[1, 1] = 2.0, 1.0
    X.requires_grad_()
    matbp.svd(X)[1].sum().backward()
    X2 = X.detach().clone().requires_grad_()
    torch.linalg.svdvals(X2)[:2].sum().backward()
    torch.testing.assert_close(X.grad[:, :2], X2.grad[:, :2])


def test_opcheck(device):
    for shape in [(2, 5, 3), (2, 3, 5)]:
        X = rand(shape).to(device)
        torch.library.opcheck(torch.ops.matbp.svd.default, (X,))
        torch.library.opcheck(torch.ops.matbp.svd.default, (X.clone().requires_grad_(),))
        U, S, V = matbp.svd(X)
        args = (torch.randn_like(U), torch.randn_like(S), torch.randn_like(V), U, S, V)
        torch.library.opcheck(torch.ops.matbp.svd_backward.default, args)
        torch.library.opcheck(torch.ops.matbp.svd_backward.default, (None, args[1], None, U, S, V))
        torch.library.opcheck(torch.ops.matbp.svd_backward.default,
                              (args[0].requires_grad_(), args[1], None, U, S.clone().requires_grad_(), V))


def test_torch_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(X):
        U, S, V = matbp.svd(X)
        return (U * S.unsqueeze(-2).sqrt()) @ V.mT

    X = rand((3, 6, 4)).requires_grad_()
    out = f(X)
    out.sum().backward()
    X2 = X.detach().clone().requires_grad_()
    U, S, V = matbp.svd(X2)
    ref = (U * S.unsqueeze(-2).sqrt()) @ V.mT
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(X.grad, X2.grad)


@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 3, 0), (0, 4, 2), (1, 1)])
def test_backward_of_empty_and_1x1(shape, dtype, device):
    X = torch.ones(shape, dtype=dtype, device=device, requires_grad=True)
    U, S, V = matbp.svd(X)
    (U.sum() + S.sum() + V.sum()).backward()
    assert X.grad.shape == X.shape and torch.isfinite(X.grad).all()
    if X.numel() == 0:
        assert (X.grad == 0).all()
