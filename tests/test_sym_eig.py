import threading

import pytest
import torch
from torch.autograd import gradcheck

import matbp
from conftest import (
    BATCH_SHAPES,
    F64,
    assert_rel,
    check_on_device,
    cpu64,
    eig_invariants,
    random_symmetric,
    randn,
    tols,
    with_spectrum,
)


def reconstruct(L, V):
    return (V * L.unsqueeze(-2)) @ V.mT


@pytest.mark.parametrize("batch", BATCH_SHAPES)
@pytest.mark.parametrize("n", [0, 1, 2, 5, 8, 32, 33, 64])
def test_matches_torch_eigh(batch, n, dtype, device):
    A = random_symmetric(batch, n, dtype, seed=n)
    L, V = matbp.sym_eig(A.to(device))
    assert L.shape == (*batch, n) and V.shape == (*batch, n, n)
    assert L.dtype == dtype and V.dtype == dtype
    assert L.device.type == V.device.type == device
    L, V = cpu64(L), cpu64(V)
    L_ref = torch.linalg.eigvalsh(A.double())
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    scale = max(1.0, A.abs().max().item()) if A.numel() else 1.0
    torch.testing.assert_close(L, L_ref, atol=tol * scale, rtol=0)
    torch.testing.assert_close(reconstruct(L, V), A.double(), atol=tol * scale * 10, rtol=0)
    eye = torch.eye(n, dtype=torch.float64).expand(*batch, n, n)
    torch.testing.assert_close(V.mT @ V, eye, atol=tol * 10, rtol=0)
    if L.numel() and n > 1:
        assert (L[..., 1:] >= L[..., :-1]).all(), "eigenvalues not ascending"
    # On CUDA: the CPU kernel's eigenvalues and gauge-invariant functions of V.
    check_on_device(eig_invariants, [A], device, diff=(), tol=tols(dtype, 1e-10, 1e-5), grad_tol=0)


def test_float32_is_decomposed_in_float64(device):
    # Eigenvalues spanning 1e-7..1: float32 LAPACK or cuSOLVER would lose the small ones.
    A, _ = with_spectrum([[1e-7, 1e-6, 0.5, 1.0]])
    L, _ = matbp.sym_eig(A.float().to(device))
    assert L.dtype == torch.float32
    L_ref = torch.linalg.eigvalsh(A.float().double())
    torch.testing.assert_close(cpu64(L), L_ref.float().double(), rtol=1e-6, atol=0)


def test_reads_lower_triangle_only(device):
    A = random_symmetric((3,), 6)
    junk = torch.triu(randn(3, 6, 6, seed=1), diagonal=1) * 100
    L1, _ = matbp.sym_eig(A.to(device))
    L2, _ = matbp.sym_eig((torch.tril(A) + junk).to(device))
    torch.testing.assert_close(L2.cpu(), L1.cpu(), atol=1e-12, rtol=0)


def test_non_contiguous_and_expanded(device):
    base = random_symmetric((4,), 7)
    on_device = base.to(device)
    A_nc = on_device.transpose(0, 0)[::2]  # strided batch
    L, V = matbp.sym_eig(A_nc)
    assert_rel(L, torch.linalg.eigvalsh(base[::2]), 1e-12, "strided batch")
    A_t = on_device.mT  # transposed view (still symmetric)
    assert_rel(matbp.sym_eig(A_t)[0], torch.linalg.eigvalsh(base), 1e-12, "transposed view")
    A_exp = on_device[0].expand(5, 7, 7)
    L_exp, _ = matbp.sym_eig(A_exp)
    assert_rel(L_exp, torch.linalg.eigvalsh(base[0]).expand(5, 7), 1e-12, "expanded")


def gauge_invariant(A, weights):
    """Functions of (L, V) that do not depend on the eigenvectors' signs."""
    L, V = matbp.sym_eig(A + A.mT)
    return L, (V * weights) @ V.mT, V.abs().sum(-1)


def test_gradcheck(device):
    A = randn(2, 5, 5, seed=2).to(device).requires_grad_()
    w = torch.arange(5, dtype=torch.float64, device=device)
    assert gradcheck(lambda A: gauge_invariant(A, w), (A,))


def test_double_backward_composition_matches_the_backward_op():
    # The double backward differentiates this torch restatement of the
    # backward kernel: both must agree, ties included.
    from matbp._ops import _sym_eig_backward_composition

    # A gap of 1e-9 is a tie at float32's tolerance only.
    A = random_symmetric((3,), 4)
    A[1] = torch.diag(torch.tensor([1.0, 1.0, 2.0, 3.0], dtype=torch.float64))
    A[2] = torch.diag(torch.tensor([1.0, 1.0 + 1e-9, 2.0, 3.0], dtype=torch.float64))
    L, V = matbp.sym_eig(A)
    gL, gV = randn(3, 4, seed=7), randn(3, 4, 4, seed=8)
    for compute_dtype, tol in ((None, 1e-12), (torch.float32, 1e-5)):
        eps = torch.finfo(compute_dtype or torch.float64).eps
        for args in ((gL, gV), (None, gV), (gL, None)):
            torch.testing.assert_close(
                _sym_eig_backward_composition(*args, L, V, eps),
                torch.ops.matbp.sym_eig_backward(*args, L, V, compute_dtype=compute_dtype),
                rtol=tol, atol=tol)


def test_gradgradcheck_gauge_invariant(device):
    A = randn(2, 4, 4, seed=3).to(device).requires_grad_()
    w = torch.arange(4, dtype=torch.float64, device=device)
    assert torch.autograd.gradgradcheck(lambda A: gauge_invariant(A, w), (A,))


def test_gradcheck_eigenvalues_only_and_vectors_only():
    A = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda A: matbp.sym_eig(A + A.mT)[0], (A,))
    w = torch.tensor([0.0, 1.0, 3.0, 7.0], dtype=torch.float64)
    assert gradcheck(lambda A: (lambda V: (V * w) @ V.mT)(matbp.sym_eig(A + A.mT)[1]), (A,))


def torch_eig_invariants(A):
    """eig_invariants by torch.linalg.eigh in float64."""
    L, V = torch.linalg.eigh(A.double())
    w = torch.linspace(-1.0, 2.0, A.shape[-1], dtype=F64)
    return tuple(t.to(A.dtype) for t in (L, (V * w) @ V.mT, (V * L.unsqueeze(-2)) @ V.mT))


@pytest.mark.parametrize("n", [1, 6, 8, 32, 33, 64])
def test_backward_matches_torch(n, dtype, device):
    # A well-separated spectrum: the eigenvector terms are well-conditioned.
    # Against torch.linalg.eigh on the CPU, against the CPU kernel on CUDA.
    lam = torch.linspace(-1.0, 1.0, n, dtype=F64).expand(3, n) * n
    A, _ = with_spectrum(lam, seed=n + 1)
    check_on_device(eig_invariants, [A.to(dtype)], device, reference=torch_eig_invariants,
                    tol=tols(dtype, 1e-10, 1e-5), grad_tol=tols(dtype, 1e-8, 1e-4))


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


def _spectrum(kind, n):
    """(ascending eigenvalues, cluster id of each) for the degenerate families."""
    i = torch.arange(n)
    if kind == "repeated":  # triples 0,0,0,1,1,1,... (a zero triple included)
        return (i // 3).double(), i // 3
    if kind == "clustered":  # groups of 4 within 1e-12, groups 1 apart
        return 1.0 + (i // 4).double() + 1e-12 * (i % 4).double(), i // 4
    if kind == "zero":  # rank deficient PSD
        k = n - n // 2
        lam = torch.cat([torch.zeros(k, dtype=F64), torch.linspace(1.0, 2.0, n // 2, dtype=F64)])
        return lam, torch.cat([torch.zeros(k, dtype=torch.long), torch.arange(1, n // 2 + 1)])
    if kind == "scalar":
        return torch.full((n,), 3.0, dtype=F64), torch.zeros(n, dtype=torch.long)
    raise ValueError(kind)


def cluster_projectors(V, ids):
    """Σ_{i in cluster c} v_i v_iᵀ for every cluster c: (*, clusters, n, n)."""
    V = cpu64(V)
    return torch.stack([(V * (ids == c).to(F64)) @ V.mT for c in range(int(ids.max()) + 1)], dim=-3)


@pytest.mark.parametrize("kind", ["repeated", "clustered", "zero", "scalar"])
@pytest.mark.parametrize("n", [8, 33, 64])
def test_degenerate_spectra(kind, n, dtype, device):
    lam, ids = _spectrum(kind, n)
    A64, Q = with_spectrum(lam.expand(2, n), seed=7)
    A = A64.to(dtype)
    scale = max(1.0, lam.abs().max().item())
    Lg, Vg = matbp.sym_eig(A.to(device))
    assert Lg.device.type == device and Lg.dtype == dtype and Vg.dtype == dtype
    # Eigenvalues: against the exact spectrum (and on CUDA, the CPU's).
    assert (cpu64(Lg) - lam).abs().max().item() <= tols(dtype, 1e-12, 1e-6) * scale * n
    # Reconstruction and orthonormality.
    Vd, Ld = cpu64(Vg), cpu64(Lg)
    assert_rel((Vd * Ld.unsqueeze(-2)) @ Vd.mT, A.double(), tols(dtype, 1e-12 * n, 1e-5), "V diag(L) Vᵀ")
    assert_rel(Vd.mT @ Vd, torch.eye(n, dtype=F64).expand(2, n, n), tols(dtype, 1e-12 * n, 1e-5), "VᵀV")
    # Eigenspaces (gauge invariant at ties): the exact ones (and the CPU's).
    Pg = cluster_projectors(Vg, ids)
    if dtype == F64:
        assert_rel(Pg, cluster_projectors(Q, ids), 1e-9, "cluster projectors vs exact")
    if device != "cpu":
        Lc, Vc = matbp.sym_eig(A)
        assert (cpu64(Lg) - cpu64(Lc)).abs().max().item() <= tols(dtype, 1e-12, 1e-6) * scale
        assert_rel(Pg, cluster_projectors(Vc, ids), tols(dtype, 1e-9, 1e-4), "cluster projectors vs CPU")
    # d/dA Σ (λ_i² + λ_i) = 2A + I exactly, ties or not; the eigenvector
    # gradient is finite (ties get F_ij = 0).
    Ar = A.detach().to(device).requires_grad_()
    L, V = matbp.sym_eig(Ar)
    (gA,) = torch.autograd.grad((L * L + L).sum(), Ar)
    assert gA.dtype == dtype
    assert_rel(gA, 2 * A.double() + torch.eye(n, dtype=F64), tols(dtype, 1e-10, 1e-5), "gradient of Σ λ² + λ")
    Ar = A.detach().to(device).requires_grad_()
    L, V = matbp.sym_eig(Ar)
    w = torch.arange(n, dtype=dtype, device=device)
    (gA,) = torch.autograd.grad(((V * w) @ V.mT).sum() + L.sum(), Ar)
    assert torch.isfinite(gA).all()


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


def test_opcheck(device):
    A = random_symmetric((2,), 4).to(device)
    torch.library.opcheck(torch.ops.matbp.sym_eig.default, (A,))
    torch.library.opcheck(torch.ops.matbp.sym_eig.default, (A.clone().requires_grad_(),))
    L, V = matbp.sym_eig(A)
    gL, gV = torch.randn_like(L), torch.randn_like(V)
    torch.library.opcheck(torch.ops.matbp.sym_eig_backward.default, (gL, gV, L, V))
    torch.library.opcheck(torch.ops.matbp.sym_eig_backward.default, (None, gV, L, V))
    torch.library.opcheck(torch.ops.matbp.sym_eig_backward.default,
                          (gL, gV.clone().requires_grad_(), L.clone().requires_grad_(), V))
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


@pytest.mark.parametrize("shape", [(2, 0, 0), (0, 3, 3), (1, 1), (2, 1, 1)])
def test_backward_of_empty_and_1x1(shape, dtype, device):
    A = torch.ones(shape, dtype=dtype, device=device, requires_grad=True)
    L, V = matbp.sym_eig(A)
    assert L.shape == shape[:-1] and V.shape == shape
    (L.sum() + V.abs().sum()).backward()
    assert A.grad.shape == A.shape and torch.isfinite(A.grad).all()
    A2 = (2 * torch.ones(shape, dtype=dtype, device=device)).requires_grad_()
    (matbp.sym_fn(A2, "log").sum() + matbp.projector(A2).sum()).backward()
    assert A2.grad.shape == A2.shape and torch.isfinite(A2.grad).all()
