"""The CPU's per-matrix pipelines of the eigenbasis products
(csrc/ops/cpu/eigenbasis_pipeline.h): V inner(Vᵀ G V) V^T and V diag(d) Vᵀ
one matrix at a time in cache, with small_gemm (tests/cpp/test_math_small_gemm.cpp)
up to n = 128 and BLAS above, the overflow check folded in. They carry the
backwards of sym_eig, sym_fn and projector and the forwards of sym_fn and
projector. Here each is checked against the same products written as
batch-wide torch expressions, at sizes on both sides of every kernel edge
(8-column blocks, 4-row blocks, the BLAS crossover at 128), with float32
incoming gradients, NaN in one matrix's gradient, and thread counts."""

import pytest
import torch

import matbp
from conftest import randn, with_spectrum

SIZES = [1, 2, 5, 8, 13, 33, 64, 128, 129]


def separated(n, batch=3, low=0.5, high=2.0, seed=0):
    """SPD matrices with eigenvalues spread evenly over [low, high] (gaps of
    (high - low)/n: torch's eigh composition is accurate there)."""
    spectrum = torch.linspace(low, high, n, dtype=torch.float64)
    return torch.stack([with_spectrum(spectrum, seed=seed + b)[0] for b in range(batch)])


def sym(M):
    return 0.5 * (M + M.mT)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("grad_dtype", [torch.float64, torch.float32], ids=["g64", "g32"])
def test_sym_fn_forward_and_backward_against_batch_wide_products(n, grad_dtype):
    A = separated(n, seed=n)
    L, V = torch.linalg.eigh(A)
    F, Lm, Vm = torch.ops.matbp.sym_fn_with_eig(A, "log", 1.0)
    torch.testing.assert_close(F, (V * L.log().unsqueeze(-2)) @ V.mT, rtol=0, atol=1e-13 * n)
    G = randn(3, n, n, seed=n + 1).to(grad_dtype)  # not symmetric
    gA = torch.ops.matbp.sym_fn_backward(G, Lm, Vm, "log", 1.0)
    assert gA.dtype == grad_dtype and gA.shape == A.shape
    li, lj = L.unsqueeze(-1), L.unsqueeze(-2)
    eye = torch.eye(n, dtype=torch.bool)
    K = torch.where(eye, 1 / li, (li.log() - lj.log()) / torch.where(eye, 1.0, li - lj))
    want = V @ (K * sym(V.mT @ G.double() @ V)) @ V.mT
    tol = 1e-11 * n if grad_dtype == torch.float64 else 1e-6
    torch.testing.assert_close(gA.double(), want, rtol=0, atol=tol * want.abs().max().item())


@pytest.mark.parametrize("n", SIZES)
def test_sym_eig_backward_against_batch_wide_products(n):
    A = separated(n, seed=2 * n)
    L, V = matbp.sym_eig(A)
    gL, gV = randn(3, n, seed=3), randn(3, n, n, seed=4)
    li, lj = L.unsqueeze(-1), L.unsqueeze(-2)
    eye = torch.eye(n, dtype=torch.bool)
    F = torch.where(eye, 0.0, 1 / torch.where(eye, 1.0, lj - li))
    M = V.mT @ gV
    inner = F * 0.5 * (M - M.mT)  # F o skew(Vᵀ gV)
    scale = lambda t: 1e-11 * n * t.abs().max().item()
    both = torch.ops.matbp.sym_eig_backward(gL, gV, L, V)
    want = V @ (inner + torch.diag_embed(gL)) @ V.mT
    torch.testing.assert_close(both, want, rtol=0, atol=scale(want))
    only_v = torch.ops.matbp.sym_eig_backward(None, gV, L, V)
    want = V @ inner @ V.mT
    torch.testing.assert_close(only_v, want, rtol=0, atol=scale(want))
    only_l = torch.ops.matbp.sym_eig_backward(gL, None, L, V)
    want = (V * gL.unsqueeze(-2)) @ V.mT
    torch.testing.assert_close(only_l, want, rtol=0, atol=scale(want))


@pytest.mark.parametrize("n", SIZES)
def test_projector_forward_and_backward_against_batch_wide_products(n):
    # Rank n - n//3: the null eigenvalues exactly zero, the others apart.
    rank = n - n // 3
    spectrum = torch.cat([torch.zeros(n - rank, dtype=torch.float64),
                          torch.linspace(1.0, 3.0, rank, dtype=torch.float64)])
    A = torch.stack([with_spectrum(spectrum, seed=n + b)[0] for b in range(3)])
    P, L, V = torch.ops.matbp.projector_with_eig(A, None)
    Vr = torch.linalg.eigh(A)[1][..., n - rank:]
    torch.testing.assert_close(P, Vr @ Vr.mT, rtol=0, atol=1e-12 * n)
    G = randn(3, n, n, seed=n + 7)
    gA = torch.ops.matbp.projector_backward(G, L, V, None)
    pinv = torch.linalg.pinv(A, hermitian=True)
    X = (torch.eye(n, dtype=torch.float64) - P) @ sym(G) @ pinv
    want = X + X.mT
    torch.testing.assert_close(gA, want, rtol=0, atol=1e-10 * n * max(want.abs().max().item(), 1.0))


def test_nan_in_one_incoming_gradient_stays_in_its_matrix():
    # A non-finite incoming gradient is the caller's: it propagates into its
    # own matrix, raises nothing, and leaves the other matrices as they were.
    n = 20
    A = separated(n, batch=4, seed=5)
    _, L, V = torch.ops.matbp.sym_fn_with_eig(A, "log", 1.0)
    G = randn(4, n, n, seed=6)
    clean = torch.ops.matbp.sym_fn_backward(G, L, V, "log", 1.0)
    G[2, 3, 4] = float("nan")
    dirty = torch.ops.matbp.sym_fn_backward(G, L, V, "log", 1.0)
    assert torch.isnan(dirty[2]).any()
    keep = torch.tensor([0, 1, 3])
    assert torch.equal(dirty[keep], clean[keep])


@pytest.mark.parametrize("op", ["sym_fn", "sym_eig"])
def test_overflow_found_in_the_pipeline_is_still_named(op):
    # Matrix 1 at 1e-310 (subnormal eigenvalues and gaps): its true gradient,
    # ~1/lambda or ~1/gap, is beyond float64. The fused pass sees the
    # overflow; the error names the matrix as the batch-wide check did.
    n = 6
    A = separated(n, batch=3, seed=8)
    A[1] *= 1e-310
    G = randn(3, n, n, seed=9)
    if op == "sym_fn":
        _, L, V = torch.ops.matbp.sym_fn_with_eig(A, "log", 1.0)
        with pytest.raises(RuntimeError, match=r"matbp.sym_fn_backward: the gradient of matrix 1 "):
            torch.ops.matbp.sym_fn_backward(G, L, V, "log", 1.0)
    else:
        L, V = matbp.sym_eig(A)
        with pytest.raises(RuntimeError, match=r"matbp.sym_eig_backward: the gradient of matrix 1 "):
            torch.ops.matbp.sym_eig_backward(None, G, L, V)


def test_results_do_not_depend_on_the_thread_count():
    n = 24
    A = separated(n, batch=37, seed=10)
    G = randn(37, n, n, seed=11)
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2):
            torch.set_num_threads(t)
            F, L, V = torch.ops.matbp.sym_fn_with_eig(A, "log", 1.0)
            results.append((F, torch.ops.matbp.sym_fn_backward(G, L, V, "log", 1.0)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
