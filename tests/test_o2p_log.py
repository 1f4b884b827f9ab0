import pytest
import torch
from torch.autograd import gradcheck

import matbp
from conftest import BATCH_SHAPES, F64, assert_rel, check_on_device, cpu64, gen, randn, tols
from conftest import low_rank as batched_low_rank
from o2p_reference import o2p_log_directional_reference, o2p_log_reference


def low_rank(m, d, r, scale=1.0, seed=0):
    g = gen(seed)
    return scale * torch.randn(m, r, generator=g, dtype=torch.float64) @ torch.randn(r, d, generator=g, dtype=torch.float64)


def with_singular_values(m, d, sv, seed=0):
    g = gen(seed)
    k = len(sv)
    P, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    W, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    return (P * torch.tensor(sv, dtype=torch.float64)) @ W.mT


def gaussian(m, d, scale=1.0, seed=0):
    return scale * torch.randn(m, d, generator=gen(seed), dtype=torch.float64)


# (name, X, eps); every family in both paths: m < d (X Xᵀ) and m >= d (Xᵀ X).
FAMILIES = []
for shape, path in [((6, 10), "rows"), ((12, 8), "cols")]:
    m, d = shape
    FAMILIES += [
        (f"rank-deficient-{path}", low_rank(m, d, 3, seed=1), 1e-3),
        (f"zero-{path}", torch.zeros(m, d, dtype=torch.float64), 1e-3),
        (f"repeated-{path}", with_singular_values(m, d, [2.0, 2.0, 2.0, 0.5, 0.5, 1.0], seed=2), 1e-3),
        (
            f"clustered-{path}",
            with_singular_values(m, d, [1.0, 1.0 + 1e-12, 1.0 + 2e-12, 1.0 + 1e-9, 1.0 + 1e-6, 3.0], seed=3),
            1e-3,
        ),
        (f"tiny-eps-large-entries-{path}", gaussian(m, d, 1e3, seed=4), 1e-8),
        (f"square-ish-{path}", gaussian(m, d, seed=5), 0.1),
    ]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("name,X,eps", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_forward_and_gradient_against_high_precision(name, X, eps):
    C = matbp.o2p_log(X, eps)
    assert rel(C, o2p_log_reference(X, eps)) < 1e-12
    g = gen(7)
    E = torch.randn(X.shape, generator=g, dtype=torch.float64)
    G = torch.randn(X.shape[1], X.shape[1], generator=g, dtype=torch.float64)
    Xr = X.clone().requires_grad_()
    (matbp.o2p_log(Xr, eps) * G).sum().backward()
    got = (Xr.grad * E).sum().item()
    want = o2p_log_directional_reference(X, E, G, eps)
    # Directional derivative, relative to the gradient's scale (0 at X = 0).
    scale = max(abs(want), (Xr.grad.norm() * E.norm()).item(), 1e-300)
    assert abs(got - want) <= 1e-10 * scale, (got, want)


@pytest.mark.parametrize("shape", [(5, 9), (9, 5)])
def test_rank_deficient_tiny_eps_forward(shape, device):
    # With eps = 1e-8 and entries ~1e3, rank deficiency makes the *gradient*
    # ill-conditioned (a 1e-16 relative change of X moves it by ~1e-3; checked
    # against the 80-digit reference), but C itself is well-conditioned and
    # must stay exact: the null-space eigenvalues are refined from X.
    X = low_rank(*shape, 2, scale=1e3, seed=8)
    Xr = X.detach().to(device).requires_grad_()
    C = matbp.o2p_log(Xr, 1e-8)
    if device == "cpu":
        assert rel(C.detach(), o2p_log_reference(X, 1e-8)) < 1e-12
    else:
        assert_rel(C, matbp.o2p_log(X, 1e-8), 1e-11, "C against the CPU")
    (g,) = torch.autograd.grad(C.sum(), Xr)
    assert torch.isfinite(g).all()


def _batched_input(kind, shape, dtype):
    B, m, d = shape
    if kind == "gaussian":
        X = randn(B, m, d, seed=m + d) / m ** 0.5
    elif kind == "rank-deficient":
        X = batched_low_rank((B,), m, d, 5, seed=m * d)
    elif kind == "zero-in-batch":
        X = randn(B, m, d, seed=3) / m ** 0.5
        X[1] = 0
    elif kind == "repeated":
        # Orthogonal columns with equal norms: XᵀX has a repeated eigenvalue.
        q, _ = torch.linalg.qr(randn(B, max(m, d), max(m, d), seed=5))
        X = 2.0 * q[:, :m, :d]
    else:
        raise ValueError(kind)
    return X.to(dtype)


def log_of_gram(X, eps=1e-3):
    """log(XᵀX + eps I) by matbp.sym_fn in float64: a reference for o2p_log."""
    X64 = X.double()
    eye = torch.eye(X.shape[-1], dtype=F64, device=X.device)
    return matbp.sym_fn(X64.mT @ X64 + eps * eye, "log").to(X.dtype)


@pytest.mark.parametrize("kind", ["gaussian", "rank-deficient", "zero-in-batch", "repeated"])
@pytest.mark.parametrize("shape", [(4, 20, 48), (4, 48, 20)], ids=["m<d", "m>=d"])
def test_batched_against_log_of_gram(kind, shape, dtype, device):
    # Value and gradient: against sym_fn of the Gram matrix on the CPU, and
    # against the CPU kernel on CUDA.
    X = _batched_input(kind, shape, dtype)
    check_on_device(lambda X: matbp.o2p_log(X, 1e-3), [X], device, reference=log_of_gram,
                    tol=tols(dtype, 1e-10, 1e-5), grad_tol=tols(dtype, 1e-8, 1e-4))


@pytest.mark.parametrize("shape", [(6, 10), (12, 8)])
def test_float32_input_computed_in_float64(shape):
    X = low_rank(*shape, 3, seed=9)
    C = matbp.o2p_log(X.float())
    assert C.dtype == torch.float32
    ref = o2p_log_reference(X.float().double(), 1e-3)
    assert rel(C.double(), ref) < 1e-6
    Xr = X.float().requires_grad_()
    G = torch.randn(shape[1], shape[1], generator=gen(1))
    (matbp.o2p_log(Xr) * G).sum().backward()
    X64 = X.float().double().requires_grad_()
    (matbp.o2p_log(X64) * G.double()).sum().backward()
    assert Xr.grad.dtype == torch.float32
    assert rel(Xr.grad.double(), X64.grad) < 1e-6


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 5, 3), (4, 4), (1, 1, 3), (1, 3, 1)])
@pytest.mark.parametrize("eps", [1e-3, 0.5])
def test_gradcheck(shape, eps, device):
    X = torch.randn(shape, generator=gen(2), dtype=torch.float64).to(device).requires_grad_()
    assert gradcheck(lambda X: matbp.o2p_log(X, eps), (X,))


def test_gradcheck_rank_deficient_and_zero(device):
    for X in [low_rank(4, 6, 2, seed=3), low_rank(7, 5, 2, seed=4), torch.zeros(3, 4, dtype=torch.float64)]:
        assert gradcheck(lambda X: matbp.o2p_log(X, 0.1), (X.to(device).requires_grad_(),))


@pytest.mark.parametrize("batch", BATCH_SHAPES)
@pytest.mark.parametrize("m,d", [(0, 3), (3, 0), (1, 1), (1, 4), (4, 1), (3, 5), (5, 3)])
def test_batch_shapes_match_torch(batch, m, d, dtype, device):
    X = torch.randn(*batch, m, d, generator=gen(5), dtype=torch.float64)
    C = matbp.o2p_log(X.to(device, dtype), 0.1)
    assert C.shape == (*batch, d, d) and C.dtype == dtype and C.device.type == device
    L, V = torch.linalg.eigh(X.mT @ X + 0.1 * torch.eye(d, dtype=torch.float64))
    ref = (V * L.log().unsqueeze(-2)) @ V.mT
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(cpu64(C), ref, atol=tol, rtol=0)
    Xr = X.detach().to(device, dtype).requires_grad_()
    matbp.o2p_log(Xr, 0.1).sum().backward()
    assert Xr.grad.shape == X.shape and torch.isfinite(Xr.grad).all()


def test_non_contiguous_and_expanded(device):
    # Against the CPU kernel on contiguous copies.
    X = torch.randn(3, 8, 5, generator=gen(6), dtype=torch.float64)
    Xt = X.to(device).mT  # (3, 5, 8): m < d path on a transposed view
    assert_rel(matbp.o2p_log(Xt), matbp.o2p_log(X.mT.contiguous()), 1e-11, "o2p_log of a transposed view")
    Xe = X[0].to(device).expand(4, 8, 5)
    assert_rel(matbp.o2p_log(Xe), matbp.o2p_log(X[0]).expand(4, 5, 5), 1e-11, "o2p_log of an expanded matrix")


def test_schema_default_eps(device):
    X = torch.randn(2, 4, 6, generator=gen(7), dtype=torch.float64).to(device)
    torch.testing.assert_close(torch.ops.matbp.o2p_log(X), matbp.o2p_log(X, 1e-3))


def test_paths_agree_across_the_switch(device):
    # m = d - 1 takes the rows path, m = d the cols path: appending a zero
    # row does not change XᵀX, so both must give the same C and gradient.
    X = torch.randn(2, 6, 7, generator=gen(8), dtype=torch.float64)
    Xz = torch.cat([X, torch.zeros(2, 1, 7, dtype=torch.float64)], dim=1)
    Xa, Xb = X.to(device).requires_grad_(), Xz.to(device).requires_grad_()
    G = torch.randn(7, 7, generator=gen(9), dtype=torch.float64).to(device)
    Ca, Cb = matbp.o2p_log(Xa), matbp.o2p_log(Xb)
    (Ca * G).sum().backward()
    (Cb * G).sum().backward()
    torch.testing.assert_close(Ca, Cb, atol=1e-12, rtol=0)
    torch.testing.assert_close(Xa.grad, Xb.grad[:, :6], atol=1e-10, rtol=0)


def test_module(device):
    # On the device, against the op on the CPU.
    pool = matbp.nn.O2PLog(eps=0.01)
    X = torch.randn(2, 5, 7, generator=gen(10), dtype=torch.float64)
    assert_rel(pool(X.to(device)), matbp.o2p_log(X, 0.01), 1e-11, "O2PLog")
    assert "eps=0.01" in repr(pool)
    sop = matbp.nn.SecondOrderPooling(eps=0.01)
    feats = torch.randn(2, 7, 3, 4, generator=gen(11), dtype=torch.float64)  # N, C, H, W
    X = feats.flatten(2).mT / (12 ** 0.5)
    assert_rel(sop(feats.to(device)), matbp.o2p_log(X, 0.01), 1e-11, "SecondOrderPooling")


def test_opcheck(device):
    for shape in [(2, 3, 5), (2, 5, 3)]:
        X = torch.randn(shape, generator=gen(12), dtype=torch.float64).to(device)
        for op in [torch.ops.matbp.o2p_log.default, torch.ops.matbp.o2p_log_with_eig.default]:
            torch.library.opcheck(op, (X, 1e-3))
            torch.library.opcheck(op, (X.clone().requires_grad_(), 1e-3))
        C, S, U, Y = torch.ops.matbp.o2p_log_with_eig(X, 1e-3)
        torch.library.opcheck(torch.ops.matbp.o2p_log_backward.default, (torch.randn_like(C), X, S, U, Y, 1e-3))
        torch.library.opcheck(torch.ops.matbp.o2p_log_jvp.default, (torch.randn_like(X), X, S, U, Y, 1e-3))
        torch.library.opcheck(torch.ops.matbp.o2p_log_jvp.default,
                              (torch.randn_like(X).requires_grad_(), X, S, U, Y, 1e-3))
        torch.library.opcheck(torch.ops.matbp.o2p_log_backward.default,
                              (torch.randn_like(C).requires_grad_(), X.clone().requires_grad_(), S, U, Y, 1e-3))


def test_torch_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(X):
        return torch.ops.matbp.o2p_log(X).flatten(-2).pow(2).sum(-1)

    X = torch.randn(3, 4, 6, generator=gen(13), dtype=torch.float64, requires_grad=True)
    out = f(X)
    out.sum().backward()
    X2 = X.detach().clone().requires_grad_()
    ref = torch.ops.matbp.o2p_log(X2).flatten(-2).pow(2).sum(-1)
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(X.grad, X2.grad)


@pytest.mark.parametrize("eps", [0.0, -1e-3, float("nan"), float("inf")])
def test_bad_eps(eps):
    with pytest.raises(RuntimeError, match="matbp.o2p_log: argument 'eps' must be a positive finite number"):
        matbp.o2p_log(torch.ones(2, 3, dtype=torch.float64), eps)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input(bad):
    X = torch.ones(2, 3, 4, dtype=torch.float64)
    X[1, 0, 2] = bad
    with pytest.raises(RuntimeError, match="matbp.o2p_log: argument 'X' contains NaN or Inf"):
        matbp.o2p_log(X)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_bad_dtype(dtype):
    with pytest.raises(RuntimeError, match="matbp.o2p_log: argument 'X' must be a floating-point tensor"):
        matbp.o2p_log(torch.ones(3, 4).to(dtype))


def test_too_few_dims():
    with pytest.raises(RuntimeError, match="matbp.o2p_log: argument 'X' must be a batch of matrices"):
        matbp.o2p_log(torch.ones(4, dtype=torch.float64))


def test_gradient_finite_when_positions_fewer_than_channels():
    # The motivating case, small: m < d gives d - m eigenvalues exactly eps;
    # eigh-based autograd divides by their (zero) gaps.
    X = torch.randn(4, 20, 32, generator=gen(14), dtype=torch.float64)
    Xr = X.clone().requires_grad_()
    matbp.o2p_log(Xr).sum().backward()
    assert torch.isfinite(Xr.grad).all()


@pytest.mark.parametrize("m,d", [(40, 12), (5, 12), (100, 70), (60, 70)], ids=["cols-ql", "rows-ql", "cols-lapack", "rows-lapack"])
def test_cpu_packs_match_one_matrix_at_a_time(m, d):
    # The CPU decomposes the Gram matrices of up to eight matrices per solver
    # call where they are small (sym_eig_solver.h): a batch of 13 (a full pack
    # and a partial one) gives, matrix by matrix, what each gives alone, with
    # a rank-deficient matrix and a zero one inside the packs.
    X = randn(13, m, d, seed=m + d)
    X[3] = batched_low_rank((), m, d, 2, seed=4)
    X[9] = 0.0
    X.requires_grad_()
    C = matbp.o2p_log(X)
    G = randn(13, d, d, seed=5)
    (gX,) = torch.autograd.grad((C * G).sum(), X)
    for b in range(13):
        xb = X[b].detach().clone().requires_grad_()
        cb = matbp.o2p_log(xb)
        (gb,) = torch.autograd.grad((cb * G[b]).sum(), xb)
        assert_rel(C[b], cb, 1e-13, f"C of matrix {b}")
        assert_rel(gX[b], gb, 1e-11, f"gradient of matrix {b}")


@pytest.mark.parametrize("m,d", [(40, 12), (5, 12)], ids=["cols", "rows"])
def test_overflowing_gram_matrix_is_named(m, d):
    X = randn(13, m, d, seed=1)
    X[10] *= 1e160  # finite X, its Gram matrix beyond float64
    gram = "X\\^T X" if m >= d else "X X\\^T"
    with pytest.raises(RuntimeError, match=rf"matbp.o2p_log: the Gram matrix {gram} of matrix 10 of the flattened batch overflows"):
        matbp.o2p_log(X)
