"""The CUDA backend: every op against its CPU kernel (values and gradients, float32
and float64, degenerate spectra, batch shapes), gradcheck, opcheck,
torch.compile, CUDA graph capture, no host synchronisation, sync checks and
NaN poisoning, non-default streams, a second device and concurrent threads.

Every test carries the ``cuda`` marker. Without a CUDA device (or with a
CPU-only build of matbp) they are skipped, except
``test_every_tensor_op_has_a_cuda_or_composite_kernel``, which only needs a
CUDA build of the extension, and the sync-checks setting tests, which only
need the Python API.

Conventions: the CPU kernels are the reference (they are tested against
high-precision references elsewhere); eigen- and singular vectors are compared
through gauge-invariant functions (V diag(w) Vᵀ, cluster projectors, U diag(w)
Vᵀ); gradients are those of a fixed random linear functional of the outputs.
"""

import contextlib
import importlib.util
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch.autograd import gradcheck

import matbp
from conftest import BATCH_SHAPES, random_spd, random_symmetric, with_spectrum

pytestmark = pytest.mark.cuda

F32, F64 = torch.float32, torch.float64
NAN, INF = float("nan"), float("inf")

# Ops that are compositions of other ops (CompositeImplicitAutograd); every
# other op taking tensors needs a CUDA kernel of its own.
COMPOSITE_OPS = {"matbp::sym_fn", "matbp::o2p_log", "matbp::projector", "matbp::ncut_projector_distance"}
KERNEL_OPS = {
    "matbp::sym_eig",
    "matbp::sym_eig_backward",
    "matbp::svd",
    "matbp::svd_backward",
    "matbp::sym_fn_with_eig",
    "matbp::sym_fn_backward",
    "matbp::o2p_log_with_eig",
    "matbp::o2p_log_backward",
    "matbp::projector_with_eig",
    "matbp::projector_backward",
    "matbp::ncut_projector_distance_with_basis",
    "matbp::ncut_projector_distance_backward",
}


def _has_kernel(name, key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(name, key)


def _built_with_cuda():
    return bool(getattr(matbp, "built_with_cuda", lambda: False)())


_CUDA_BUILD = _has_kernel("matbp::sym_eig", "CUDA") or _built_with_cuda()
_HAS_GPU = torch.cuda.is_available()

needs_cuda = pytest.mark.skipif(
    not (_HAS_GPU and _CUDA_BUILD),
    reason="needs a CUDA device" if not _HAS_GPU else "matbp was built without CUDA",
)
needs_sync_checks_api = pytest.mark.skipif(
    not hasattr(matbp, "set_sync_checks"), reason="this matbp has no set_sync_checks"
)


# --------------------------------------------------------------------- helpers


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=gen(seed), dtype=F64).to(dtype)


def cpu64(t):
    return t.detach().to(device="cpu", dtype=F64)


def rel(got, want):
    """||got - want||_F / ||want||_F in float64 on the CPU (absolute when want = 0)."""
    got, want = cpu64(got), cpu64(want)
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got - want).norm().item()
    scale = want.norm().item()
    return diff / scale if scale > 0 else diff


def assert_rel(got, want, tol, what="value"):
    err = rel(got, want)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"  # NaN fails too


def tols(dtype, f64, f32):
    return f64 if dtype == F64 else f32


def run_on(device, fn, inputs, diff, seed):
    """fn(*inputs) on `device`, and the gradients w.r.t. inputs[diff] of a
    fixed random linear functional of its floating-point outputs."""
    ins = [x.detach().to(device) if isinstance(x, torch.Tensor) else x for x in inputs]
    for i in diff:
        ins[i].requires_grad_()
    outs = fn(*ins)
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    g = gen(seed)
    loss = 0
    for o in outs:
        if o.is_floating_point():
            w = torch.randn(o.shape, generator=g, dtype=F64).to(device=device, dtype=o.dtype)
            loss = loss + (o * w).sum()
    grads = list(torch.autograd.grad(loss, [ins[i] for i in diff])) if diff else []
    return [o.detach() for o in outs], grads


def check_cuda_matches_cpu(fn, inputs, *, diff=(0,), tol, grad_tol, seed=1234):
    """fn on CUDA against fn on the CPU: outputs (device, dtype, shape,
    values) and gradients of the same random functional."""
    outs_c, grads_c = run_on("cpu", fn, inputs, diff, seed)
    outs_g, grads_g = run_on("cuda", fn, inputs, diff, seed)
    assert len(outs_c) == len(outs_g)
    for k, (got, want) in enumerate(zip(outs_g, outs_c)):
        assert got.is_cuda, f"output {k} is on {got.device}"
        assert got.dtype == want.dtype and got.shape == want.shape, (k, got.dtype, want.dtype, got.shape, want.shape)
        if got.is_floating_point():
            assert_rel(got, want, tol, f"output {k}")
        else:
            assert torch.equal(got.cpu(), want), f"output {k}: {got.cpu()} != {want}"
    for k, (got, want) in enumerate(zip(grads_g, grads_c)):
        assert got.is_cuda and got.dtype == want.dtype and got.shape == want.shape
        assert torch.isfinite(got).all(), f"gradient {k} is not finite"
        assert_rel(got, want, grad_tol, f"gradient {k}")
    return outs_g, grads_g


def eig_invariants(A):
    """Functions of sym_eig that do not depend on the eigenvectors' signs
    (the second one needs distinct eigenvalues)."""
    L, V = matbp.sym_eig(A)
    w = torch.linspace(-1.0, 2.0, A.shape[-1], dtype=A.dtype, device=A.device)
    return L, (V * w) @ V.mT, (V * L.unsqueeze(-2)) @ V.mT


def svd_invariants(X):
    U, S, V = matbp.svd(X)
    w = torch.linspace(0.5, 2.0, S.shape[-1], dtype=X.dtype, device=X.device)
    return S, (U * w) @ V.mT, (U * w) @ U.mT, (V * w) @ V.mT, (U * S.unsqueeze(-2)) @ V.mT


def low_rank(batch, m, d, r, seed=0, scale=1.0):
    g = gen(seed)
    a = torch.randn(*batch, m, r, generator=g, dtype=F64)
    b = torch.randn(*batch, r, d, generator=g, dtype=F64)
    return scale * (a @ b) / max(m, 1) ** 0.5


@pytest.fixture(autouse=True)
def _sync_checks_off():
    """Every test starts with sync checks off (whatever MATBP_SYNC_CHECKS says)
    and leaves the setting as it found it."""
    if not hasattr(matbp, "set_sync_checks"):
        yield
        return
    prev = matbp.set_sync_checks(False)
    try:
        yield
    finally:
        matbp.set_sync_checks(prev)


@contextlib.contextmanager
def sync_debug_error():
    """torch.cuda.set_sync_debug_mode('error') for the block, restored after."""
    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(prev)


# ---------------------------------------------------------------- registration


def _tensor_ops():
    """(qualified name, overload) of every matbp op that takes a tensor."""
    found = []
    for full in sorted(torch._C._dispatch_get_all_op_names()):
        if not full.startswith("matbp::"):
            continue
        name, _, overload = full.partition(".")
        packet = getattr(torch.ops.matbp, name.split("::", 1)[1])
        schema = getattr(packet, overload or "default")._schema
        if any("Tensor" in str(a.type) for a in schema.arguments):
            found.append(full)
    return found


def test_every_tensor_op_has_a_cuda_or_composite_kernel():
    # Needs no device: a CUDA build registers its kernels without one.
    if not _has_kernel("matbp::sym_eig", "CUDA") and not _built_with_cuda():
        pytest.skip("matbp was built without CUDA")
    ops = _tensor_ops()
    assert (KERNEL_OPS | COMPOSITE_OPS) <= set(ops), sorted((KERNEL_OPS | COMPOSITE_OPS) - set(ops))
    missing = [n for n in ops if not (_has_kernel(n, "CUDA") or _has_kernel(n, "CompositeImplicitAutograd"))]
    assert not missing, f"no CUDA (or CompositeImplicitAutograd) kernel: {missing}"
    assert not [n for n in KERNEL_OPS if not _has_kernel(n, "CUDA")]
    assert not [n for n in COMPOSITE_OPS if not _has_kernel(n, "CompositeImplicitAutograd")]
    if hasattr(matbp, "built_with_cuda"):
        assert matbp.built_with_cuda() is True


# ---------------------------------------------------------------- sym_eig


@needs_cuda
@pytest.mark.parametrize("batch", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("n", [1, 8, 32, 33, 64])
def test_sym_eig_matches_cpu(batch, n, dtype):
    A = random_symmetric(batch, n, dtype, seed=n)
    (L, W, R), _ = check_cuda_matches_cpu(
        eig_invariants, [A], diff=(), tol=tols(dtype, 1e-10, 1e-5), grad_tol=0
    )
    # Orthonormal eigenvectors and A = V diag(L) Vᵀ on the device itself.
    _, V = matbp.sym_eig(A.cuda())
    eye = torch.eye(n, dtype=F64).expand(*batch, n, n)
    assert_rel(V.double().mT @ V.double(), eye, tols(dtype, 1e-12 * n, 1e-5), "VᵀV")
    assert_rel(R, A, tols(dtype, 1e-12 * n, 1e-5), "V diag(L) Vᵀ")
    if L.numel() and n > 1:
        assert (L[..., 1:] >= L[..., :-1]).all(), "eigenvalues not ascending"


@needs_cuda
@pytest.mark.parametrize("n", [1, 8, 32, 33, 64])
def test_sym_eig_gradient_matches_cpu(n, dtype):
    # A well-separated spectrum: the eigenvector terms are well-conditioned.
    lam = torch.linspace(-1.0, 1.0, n, dtype=F64).expand(3, n) * n
    A, _ = with_spectrum(lam, seed=n + 1)
    check_cuda_matches_cpu(eig_invariants, [A.to(dtype)], tol=tols(dtype, 1e-10, 1e-5), grad_tol=tols(dtype, 1e-8, 1e-4))


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


@needs_cuda
@pytest.mark.parametrize("kind", ["repeated", "clustered", "zero", "scalar"])
@pytest.mark.parametrize("n", [8, 33, 64])
def test_sym_eig_degenerate_spectra(kind, n, dtype):
    lam, ids = _spectrum(kind, n)
    A64, Q = with_spectrum(lam.expand(2, n), seed=7)
    A = A64.to(dtype)
    scale = max(1.0, lam.abs().max().item())
    Lc, Vc = matbp.sym_eig(A)
    Lg, Vg = matbp.sym_eig(A.cuda())
    assert Lg.is_cuda and Lg.dtype == dtype and Vg.dtype == dtype
    # Eigenvalues: against the CPU and against the exact spectrum.
    assert (cpu64(Lg) - cpu64(Lc)).abs().max().item() <= tols(dtype, 1e-12, 1e-6) * scale
    assert (cpu64(Lg) - lam).abs().max().item() <= tols(dtype, 1e-12, 1e-6) * scale * n
    # Reconstruction and orthonormality on the device.
    Vd, Ld = Vg.double(), Lg.double()
    assert_rel((Vd * Ld.unsqueeze(-2)) @ Vd.mT, A.double().cuda(), tols(dtype, 1e-12 * n, 1e-5), "V diag(L) Vᵀ")
    assert_rel(Vd.mT @ Vd, torch.eye(n, dtype=F64).expand(2, n, n), tols(dtype, 1e-12 * n, 1e-5), "VᵀV")
    # Eigenspaces (gauge invariant at ties): against the CPU, and the exact ones.
    Pg, Pc = cluster_projectors(Vg, ids), cluster_projectors(Vc, ids)
    assert_rel(Pg, Pc, tols(dtype, 1e-9, 1e-4), "cluster projectors vs CPU")
    if dtype == F64:
        assert_rel(Pg, cluster_projectors(Q, ids), 1e-9, "cluster projectors vs exact")
    # d/dA Σ (λ_i² + λ_i) = 2A + I exactly, ties or not; the eigenvector
    # gradient is finite (ties get F_ij = 0).
    Ar = A.cuda().requires_grad_()
    L, V = matbp.sym_eig(Ar)
    (gA,) = torch.autograd.grad((L * L + L).sum(), Ar)
    assert gA.dtype == dtype
    assert_rel(gA, 2 * A.double() + torch.eye(n, dtype=F64), tols(dtype, 1e-10, 1e-5), "gradient of Σ λ² + λ")
    Ar = A.cuda().requires_grad_()
    L, V = matbp.sym_eig(Ar)
    w = torch.arange(n, dtype=dtype, device="cuda")
    (gA,) = torch.autograd.grad(((V * w) @ V.mT).sum() + L.sum(), Ar)
    assert torch.isfinite(gA).all()


@needs_cuda
def test_sym_eig_float32_is_decomposed_in_float64():
    # Eigenvalues spanning 1e-7..1: float32 cuSOLVER would lose the small ones.
    A, _ = with_spectrum([[1e-7, 1e-6, 0.5, 1.0]])
    L, _ = matbp.sym_eig(A.float().cuda())
    assert L.dtype == F32
    L_ref = torch.linalg.eigvalsh(A.float().double())
    torch.testing.assert_close(cpu64(L), L_ref.float().double(), rtol=1e-6, atol=0)


@needs_cuda
def test_sym_eig_reads_lower_triangle_only():
    A = random_symmetric((3,), 6)
    junk = torch.triu(randn(3, 6, 6, seed=1), diagonal=1) * 100
    L1, _ = matbp.sym_eig(A.cuda())
    L2, _ = matbp.sym_eig((torch.tril(A) + junk).cuda())
    assert_rel(L2, L1, 1e-12, "eigenvalues")


# -------------------------------------------------------------------- svd


@needs_cuda
@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (32, 32), (40, 36), (36, 40)], ids=str)
def test_svd_matches_cpu(shape, dtype):
    X = randn(3, *shape, seed=sum(shape)).to(dtype)
    outs, _ = check_cuda_matches_cpu(svd_invariants, [X], tol=tols(dtype, 1e-10, 1e-5), grad_tol=tols(dtype, 1e-8, 1e-4))
    U, S, V = matbp.svd(X.cuda())
    k = min(shape)
    assert U.shape == (3, shape[0], k) and S.shape == (3, k) and V.shape == (3, shape[1], k)
    assert (S[..., :-1] >= S[..., 1:]).all(), "singular values not descending"
    eye = torch.eye(k, dtype=F64).expand(3, k, k)
    assert_rel(U.double().mT @ U.double(), eye, tols(dtype, 1e-12 * k, 1e-5), "UᵀU")
    assert_rel(V.double().mT @ V.double(), eye, tols(dtype, 1e-12 * k, 1e-5), "VᵀV")
    assert_rel(outs[-1], X, tols(dtype, 1e-12 * k, 1e-5), "U diag(S) Vᵀ")


@needs_cuda
@pytest.mark.parametrize("batch", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (40, 36)], ids=str)
def test_svd_batch_shapes(batch, shape, dtype):
    X = randn(*batch, *shape, seed=3).to(dtype)
    check_cuda_matches_cpu(svd_invariants, [X], tol=tols(dtype, 1e-10, 1e-5), grad_tol=tols(dtype, 1e-8, 1e-4))


@needs_cuda
@pytest.mark.parametrize("shape,rank", [((8, 5), 2), ((5, 8), 2), ((40, 36), 5)], ids=str)
def test_svd_rank_deficient(shape, rank, dtype):
    X = low_rank((2,), *shape, rank, seed=4).to(dtype)
    Sc = matbp.svd(X)[1]
    U, S, V = matbp.svd(X.cuda())
    smax = Sc.abs().max().item()
    assert (cpu64(S) - cpu64(Sc)).abs().max().item() <= tols(dtype, 1e-12, 1e-6) * smax
    k = min(shape)
    eye = torch.eye(k, dtype=F64).expand(2, k, k)
    assert_rel(U.double().mT @ U.double(), eye, tols(dtype, 1e-12 * k, 1e-5), "UᵀU")
    assert_rel(V.double().mT @ V.double(), eye, tols(dtype, 1e-12 * k, 1e-5), "VᵀV")
    assert_rel((U.double() * S.double().unsqueeze(-2)) @ V.double().mT, X, tols(dtype, 1e-12 * k, 1e-5), "U diag(S) Vᵀ")
    Xr = X.cuda().requires_grad_()
    U, S, V = matbp.svd(Xr)
    w = torch.arange(1, k + 1, dtype=dtype, device="cuda")
    (g,) = torch.autograd.grad(S.sum() + ((U * w) @ U.mT).sum() + ((V * w) @ V.mT).sum(), Xr)
    assert torch.isfinite(g).all()


# ----------------------------------------------------------------- sym_fn

FNS = [("log", None), ("sqrt", None), ("pow", 0.5), ("pow", -1.5), ("exp", None)]
FN_IDS = ["log", "sqrt", "pow0.5", "pow-1.5", "exp"]


@needs_cuda
@pytest.mark.parametrize("fn,p", FNS, ids=FN_IDS)
@pytest.mark.parametrize("n", [6, 40])
def test_sym_fn_matches_cpu(fn, p, n, dtype):
    A = random_spd((2,), n, dtype=dtype, seed=n, shift=0.5)
    check_cuda_matches_cpu(
        lambda A: matbp.sym_fn(A, fn, p), [A], tol=tols(dtype, 1e-11, 1e-5), grad_tol=tols(dtype, 1e-9, 1e-4)
    )


@needs_cuda
@pytest.mark.parametrize("fn,p", FNS, ids=FN_IDS)
def test_sym_fn_exact_at_repeated_eigenvalues(fn, p):
    lam = torch.tensor([[2.0, 2.0, 2.0, 0.5, 0.5, 3.0], [1.5] * 6], dtype=F64)
    A, _ = with_spectrum(lam, seed=11)
    outs, grads = check_cuda_matches_cpu(lambda A: matbp.sym_fn(A, fn, p), [A], tol=1e-11, grad_tol=1e-9)
    assert torch.isfinite(grads[0]).all()


@needs_cuda
def test_sym_fn_sqrt_of_singular_psd_is_finite():
    X = randn(6, 3, seed=5)
    A = (X @ X.mT).cuda()
    F = matbp.sym_fn(A, "sqrt")
    assert torch.isfinite(F).all()
    assert_rel(F @ F, A, 1e-10, "sqrt(A)²")


@needs_cuda
def test_with_eig_auxiliary_outputs_are_float64_on_the_device():
    A = random_spd((2,), 5, dtype=F32).cuda()
    F, L, V = torch.ops.matbp.sym_fn_with_eig(A, "log", 1.0)
    assert F.dtype == F32 and L.dtype == F64 and V.dtype == F64
    assert F.is_cuda and L.is_cuda and V.is_cuda
    P, L, V = torch.ops.matbp.projector_with_eig(A, None)
    assert P.dtype == F32 and L.dtype == F64 and V.dtype == F64 and P.is_cuda and V.is_cuda
    for shape in [(2, 3, 7), (2, 7, 3)]:
        X = randn(*shape, seed=2, dtype=F32).cuda()
        C, S, U, Y = torch.ops.matbp.o2p_log_with_eig(X, 1e-3)
        m, d = shape[-2:]
        k = min(m, d)
        assert C.dtype == F32 and C.shape == (2, d, d)
        assert S.dtype == U.dtype == Y.dtype == F64
        assert S.shape == (2, k) and U.shape == (2, k, k) and Y.shape == (2, m if m < d else 0, d)
        assert all(t.is_cuda for t in (C, S, U, Y))


# ---------------------------------------------------------------- o2p_log


def _o2p_input(kind, shape, dtype):
    B, m, d = shape
    if kind == "gaussian":
        X = randn(B, m, d, seed=m + d) / m ** 0.5
    elif kind == "rank-deficient":
        X = low_rank((B,), m, d, 5, seed=m * d)
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


@needs_cuda
@pytest.mark.parametrize("kind", ["gaussian", "rank-deficient", "zero-in-batch", "repeated"])
@pytest.mark.parametrize("shape", [(4, 20, 48), (4, 48, 20)], ids=["m<d", "m>=d"])
def test_o2p_log_matches_cpu(kind, shape, dtype):
    X = _o2p_input(kind, shape, dtype)
    check_cuda_matches_cpu(
        lambda X: matbp.o2p_log(X, 1e-3), [X], tol=tols(dtype, 1e-10, 1e-5), grad_tol=tols(dtype, 1e-8, 1e-4)
    )


@needs_cuda
@pytest.mark.parametrize("shape", [(3, 5, 9), (3, 9, 5)], ids=["m<d", "m>=d"])
def test_o2p_log_tiny_eps_large_entries(shape):
    # Rank-deficient with eps << ||X||²·1e-16: C stays exact (the gradient is
    # ill-conditioned there, so only its finiteness is checked).
    X = low_rank((shape[0],), *shape[1:], 2, seed=8, scale=1e3)
    C_cpu = matbp.o2p_log(X, 1e-8)
    Xg = X.cuda().requires_grad_()
    C = matbp.o2p_log(Xg, 1e-8)
    assert_rel(C, C_cpu, 1e-11, "C")
    (g,) = torch.autograd.grad(C.sum(), Xg)
    assert torch.isfinite(g).all()


@needs_cuda
def test_o2p_log_schema_default_eps_and_paths_agree():
    X = randn(2, 6, 7, seed=8)
    Xz = torch.cat([X, torch.zeros(2, 1, 7, dtype=F64)], dim=1)  # m = d: the other path
    Xa, Xb = X.cuda().requires_grad_(), Xz.cuda().requires_grad_()
    G = randn(7, 7, seed=9).cuda()
    Ca, Cb = torch.ops.matbp.o2p_log(Xa), matbp.o2p_log(Xb, 1e-3)
    (ga,) = torch.autograd.grad((Ca * G).sum(), Xa)
    (gb,) = torch.autograd.grad((Cb * G).sum(), Xb)
    assert_rel(Ca, Cb, 1e-12, "C")
    assert_rel(ga, gb[:, :6], 1e-10, "gradient")


# -------------------------------------------------------------- projector


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


@needs_cuda
@pytest.mark.parametrize("kind", ["rank3-of-8", "indefinite", "spd-33", "rank10-of-40"])
def test_projector_matches_cpu(kind, dtype):
    A, rtol = _projector_input(kind)
    A = A.to(dtype)
    if dtype == F32:
        # float32 rounding lifts exact zeros to ~1e-7·|A|: a float32-sized
        # rank tolerance keeps the rank (the default n·eps is float64's).
        rtol = 1e-4
    check_cuda_matches_cpu(
        lambda A: matbp.projector(A, rtol), [A], tol=tols(dtype, 1e-10, 1e-5), grad_tol=tols(dtype, 1e-8, 1e-4)
    )


# -------------------------------------------------------- normalized cuts


def synthetic_images(h=12, w=12, batch=2, seed=0):
    """Four colour quadrants plus noise; features (r, g, b, y, x) + 0.05 > 0."""
    g = gen(seed)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    quadrant = (ys >= h // 2).long() * 2 + (xs >= w // 2).long()
    pos = torch.stack([ys, xs], -1).to(F64) / max(h, w)
    ids = [torch.tensor([0, 5, 9, 40]), torch.tensor([3, 3, 7, 8])]  # sparse ids; merged segments
    feats, labels = [], []
    for b in range(batch):
        colors = torch.rand(4, 3, generator=g, dtype=F64)
        rgb = colors[quadrant] + 0.05 * torch.rand(h, w, 3, generator=g, dtype=F64)
        feats.append(torch.cat([rgb, pos], -1).reshape(h * w, 5) + 0.05)
        labels.append(ids[b % 2][quadrant].reshape(-1))
    return torch.stack(feats), torch.stack(labels)


@needs_cuda
@pytest.mark.parametrize("with_lambda", [False, True], ids=["no-lambda", "lambda"])
@pytest.mark.parametrize("objective", ["j1", "j2"])
def test_ncut_matches_cpu(objective, with_lambda, dtype):
    X, labels = synthetic_images()
    X = X.to(dtype)
    f = {"j1": matbp.ncut_j1, "j2": matbp.ncut_j2}[objective]
    if with_lambda:
        # Entrywise positive Λ: positive degrees for J1.
        a = torch.rand(5, 5, generator=gen(3), dtype=F64)
        Lam = (a @ a.T + 0.1 * torch.eye(5, dtype=F64)).to(dtype)
        # With a full-rank Λ, J2's Λ-gradient is 0 up to round-off (range of
        # X Λ Xᵀ = range of X): nothing to compare relatively there.
        diff = (0, 2) if objective == "j1" else (0,)
        fn, inputs = (lambda X, lab, Lam: f(X, lab, Lam)), [X, labels, Lam]
    else:
        fn, inputs, diff = (lambda X, lab: f(X, lab)), [X, labels], (0,)
    check_cuda_matches_cpu(fn, inputs, diff=diff, tol=tols(dtype, 1e-10, 1e-5), grad_tol=tols(dtype, 1e-8, 1e-4))
    _, rank_c = f(X, labels, return_rank=True)
    _, rank_g = f(X.cuda(), labels.cuda(), return_rank=True)
    assert rank_g.is_cuda and torch.equal(rank_g.cpu(), rank_c)


@needs_cuda
def test_ncut_tall_images_blocked_qr_matches_cpu():
    # Tall enough for the QR by row blocks: ATen's batched blocks on CUDA,
    # one LAPACK call per block on the CPU; a zero row block and a
    # duplicated column make R singular.
    m = 3 * 2048 + 777
    X = torch.rand(2, m, 5, generator=gen(21), dtype=F64) + 0.05
    X = torch.cat([X, X[..., :1]], dim=-1)
    X[1, 2048:4096] = 0
    labels = torch.randint(0, 6, (2, m), generator=gen(22))
    check_cuda_matches_cpu(lambda X, lab: matbp.ncut_j2(X, lab), [X, labels], tol=1e-10, grad_tol=1e-8)
    assert matbp.affinity_rank(X.cuda()).cpu().tolist() == [5, 5]


@needs_cuda
def test_ncut_rank_deficient_features_and_modules():
    X, labels = synthetic_images(batch=2, seed=1)
    X = torch.cat([X, X[..., :2]], dim=-1)  # duplicated columns: rank 5 < d = 7
    assert matbp.affinity_rank(X.cuda()).cpu().tolist() == [5, 5]
    check_cuda_matches_cpu(lambda X, lab: matbp.ncut_j2(X, lab), [X, labels], tol=1e-10, grad_tol=1e-8)
    for objective in ("j1", "j2"):
        loss = matbp.nn.NormalizedCutsLoss(objective)
        torch.testing.assert_close(loss(X.cuda(), labels.cuda()).cpu(), loss(X, labels), rtol=1e-10, atol=0)
        assert loss.last_rank.cpu().tolist() == [5, 5]


@needs_cuda
def test_modules_on_cuda():
    feats = randn(2, 7, 3, 4, seed=11)  # N, C, H, W
    sop = matbp.nn.SecondOrderPooling(eps=0.01)
    assert_rel(sop(feats.cuda()), sop(feats), 1e-11, "SecondOrderPooling")
    pool = matbp.nn.O2PLog(eps=0.01)
    X = randn(2, 5, 7, seed=10)
    assert_rel(pool(X.cuda()), pool(X), 1e-11, "O2PLog")
    m = matbp.nn.SymFn("pow", 0.5)
    A = random_spd((2,), 3)
    assert_rel(m(A.cuda()), m(A), 1e-11, "SymFn")


# ------------------------------------------------- shapes, views, edge cases


@needs_cuda
def test_empty_and_1x1_on_cuda(dtype):
    def dev(*shape):
        return torch.ones(*shape, dtype=dtype, device="cuda", requires_grad=True)

    for shape in [(2, 0, 0), (0, 3, 3), (1, 1), (2, 1, 1)]:
        A = dev(*shape)
        L, V = matbp.sym_eig(A)
        assert L.shape == shape[:-1] and V.shape == shape
        (g,) = torch.autograd.grad(L.sum() + V.abs().sum(), A)
        assert g.shape == A.shape and torch.isfinite(g).all()
        A = (2 * dev(*shape)).detach().requires_grad_()
        (g,) = torch.autograd.grad(matbp.sym_fn(A, "log").sum() + matbp.projector(A).sum(), A)
        assert g.shape == A.shape and torch.isfinite(g).all()
    for shape in [(2, 0, 3), (2, 3, 0), (0, 4, 2), (1, 1)]:
        X = dev(*shape)
        U, S, V = matbp.svd(X)
        (g,) = torch.autograd.grad(U.sum() + S.sum() + V.sum(), X)
        assert g.shape == X.shape and torch.isfinite(g).all()
        C = matbp.o2p_log(X, 0.1)
        assert C.shape == (*shape[:-2], shape[-1], shape[-1]) and C.is_cuda
        (g,) = torch.autograd.grad(C.sum(), X)
        assert g.shape == X.shape and torch.isfinite(g).all()


@needs_cuda
def test_non_contiguous_and_expanded_on_cuda():
    base = random_symmetric((4,), 7).cuda()
    L, _ = matbp.sym_eig(base[::2])
    assert_rel(L, torch.linalg.eigvalsh(base[::2].cpu()), 1e-12, "strided batch")
    assert_rel(matbp.sym_eig(base.mT)[0], torch.linalg.eigvalsh(base.cpu()), 1e-12, "transposed view")
    L_exp, _ = matbp.sym_eig(base[0].expand(5, 7, 7))
    assert_rel(L_exp, torch.linalg.eigvalsh(base[0].cpu()).expand(5, 7), 1e-12, "expanded")
    X = randn(3, 8, 5, seed=6)
    Xg = X.cuda()
    assert_rel(matbp.o2p_log(Xg.mT), matbp.o2p_log(X.mT.contiguous()), 1e-11, "o2p_log of a transposed view")
    assert_rel(matbp.o2p_log(Xg[0].expand(4, 8, 5)), matbp.o2p_log(X[0]).expand(4, 5, 5), 1e-11, "o2p_log expanded")
    assert_rel(matbp.svd(Xg.mT)[1], torch.linalg.svdvals(X.mT), 1e-12, "svd of a transposed view")


# ---------------------------------------------------------------- gradcheck


def _gc_cases():
    def spd(X, shrink=1.0):
        n = X.shape[-1]
        return (X @ X.mT + 0.5 * torch.eye(n, dtype=X.dtype, device=X.device)) * shrink

    cases = {
        "o2p_log-m<d": ((2, 3, 5), lambda X: matbp.o2p_log(X, 1e-3)),
        "o2p_log-m>=d": ((2, 5, 3), lambda X: matbp.o2p_log(X, 1e-3)),
        "o2p_log-eps0.5": ((1, 4, 4), lambda X: matbp.o2p_log(X, 0.5)),
        "o2p_log-rank-deficient": (None, lambda X: matbp.o2p_log(X, 0.1)),
        "projector": ((2, 5, 2), lambda X: matbp.projector(X @ X.mT)),
        "sym_eig": ((2, 4, 4), lambda X: eig_invariants(X + X.mT)[:2]),
        "svd": ((2, 5, 3), lambda X: svd_invariants(X)[:4]),
    }
    for (fn, p), name in zip(FNS, FN_IDS):
        cases[f"sym_fn-{name}"] = ((2, 4, 4), lambda X, fn=fn, p=p: matbp.sym_fn(spd(X, 0.25 if fn == "exp" else 1.0), fn, p))
    return cases


GRADCHECK_CASES = _gc_cases()


@needs_cuda
@pytest.mark.parametrize("name", list(GRADCHECK_CASES))
def test_gradcheck_on_cuda(name):
    shape, f = GRADCHECK_CASES[name]
    X = low_rank((2,), 4, 6, 2, seed=3) if shape is None else randn(*shape, seed=2)
    X = X.cuda().requires_grad_()
    assert gradcheck(f, (X,))


# ------------------------------------------------------------------ opcheck


@needs_cuda
def test_opcheck_sym_eig_and_svd():
    A = random_symmetric((2,), 4).cuda()
    torch.library.opcheck(torch.ops.matbp.sym_eig.default, (A,))
    torch.library.opcheck(torch.ops.matbp.sym_eig.default, (A.clone().requires_grad_(),))
    L, V = matbp.sym_eig(A)
    gL, gV = torch.randn_like(L), torch.randn_like(V)
    for args in [(gL, gV, L, V), (None, gV, L, V), (gL, None, L, V)]:
        torch.library.opcheck(torch.ops.matbp.sym_eig_backward.default, args)
    for shape in [(2, 5, 3), (2, 3, 5)]:
        X = randn(*shape).cuda()
        torch.library.opcheck(torch.ops.matbp.svd.default, (X,))
        torch.library.opcheck(torch.ops.matbp.svd.default, (X.clone().requires_grad_(),))
        U, S, W = matbp.svd(X)
        args = (torch.randn_like(U), torch.randn_like(S), torch.randn_like(W), U, S, W)
        torch.library.opcheck(torch.ops.matbp.svd_backward.default, args)
        torch.library.opcheck(torch.ops.matbp.svd_backward.default, (None, args[1], None, U, S, W))


@needs_cuda
def test_opcheck_sym_fn_o2p_log_projector():
    A = random_spd((2,), 4).cuda()
    for fn in ["log", "pow"]:
        torch.library.opcheck(torch.ops.matbp.sym_fn.default, (A, fn, 0.5))
        torch.library.opcheck(torch.ops.matbp.sym_fn_with_eig.default, (A, fn, 0.5))
        torch.library.opcheck(torch.ops.matbp.sym_fn_with_eig.default, (A.clone().requires_grad_(), fn, 0.5))
    F, L, V = torch.ops.matbp.sym_fn_with_eig(A, "log", 1.0)
    torch.library.opcheck(torch.ops.matbp.sym_fn_backward.default, (torch.randn_like(F), L, V, "log", 1.0))
    for shape in [(2, 3, 5), (2, 5, 3)]:
        X = randn(*shape, seed=12).cuda()
        for op in [torch.ops.matbp.o2p_log.default, torch.ops.matbp.o2p_log_with_eig.default]:
            torch.library.opcheck(op, (X, 1e-3))
            torch.library.opcheck(op, (X.clone().requires_grad_(), 1e-3))
        C, S, U, Y = torch.ops.matbp.o2p_log_with_eig(X, 1e-3)
        torch.library.opcheck(torch.ops.matbp.o2p_log_backward.default, (torch.randn_like(C), X, S, U, Y, 1e-3))
    Xf = randn(2, 5, 2, seed=33)
    P_in = (Xf @ Xf.mT).cuda()
    torch.library.opcheck(torch.ops.matbp.projector.default, (P_in, None))
    torch.library.opcheck(torch.ops.matbp.projector_with_eig.default, (P_in, None))
    torch.library.opcheck(torch.ops.matbp.projector_with_eig.default, (P_in.clone().requires_grad_(), 1e-10))
    P, L, V = torch.ops.matbp.projector_with_eig(P_in, None)
    torch.library.opcheck(torch.ops.matbp.projector_backward.default, (torch.randn_like(P), L, V, None))


@needs_cuda
def test_opcheck_ncut():
    X = (torch.rand(2, 12, 3, generator=gen(20), dtype=F64) + 0.05).cuda()
    labels = torch.tensor([0, 4])[torch.randint(0, 2, (2, 12), generator=gen(21))].cuda()
    w = (torch.rand(2, 12, generator=gen(22), dtype=F64) + 0.1).cuda()
    a = randn(3, 3, seed=23)
    Lam = (a @ a.T + 0.1 * torch.eye(3, dtype=F64)).cuda()
    for args in [
        (X, w, labels, None, None),
        (X.clone().requires_grad_(), w.clone().requires_grad_(), labels, Lam.clone().requires_grad_(), 1e-12),
    ]:
        torch.library.opcheck(torch.ops.matbp.ncut_projector_distance_with_basis.default, args)
        torch.library.opcheck(torch.ops.matbp.ncut_projector_distance.default, args)
    J, rank, *basis = torch.ops.matbp.ncut_projector_distance_with_basis(X, w, labels, Lam, None)
    torch.library.opcheck(torch.ops.matbp.ncut_projector_distance_backward.default, (torch.ones_like(J), w, Lam, *basis))


# ------------------------------------------------------------ torch.compile


def _compiled_model(X):
    C = matbp.o2p_log(X, 1e-3)
    d = X.shape[-1]
    A = C @ C.mT / d + torch.eye(d, dtype=X.dtype, device=X.device)
    return matbp.sym_fn(A, "sqrt").sum(-1) + matbp.sym_fn(A, "pow", -0.5).diagonal(dim1=-2, dim2=-1)


def _check_compiled(backend, dtype):
    X = randn(3, 6, 9, seed=13, dtype=dtype).cuda()
    f = torch.compile(_compiled_model, fullgraph=True, backend=backend)
    Xa, Xb = X.clone().requires_grad_(), X.clone().requires_grad_()
    out = f(Xa)
    (ga,) = torch.autograd.grad(out.sum(), Xa)
    ref = _compiled_model(Xb)
    (gb,) = torch.autograd.grad(ref.sum(), Xb)
    assert out.is_cuda and ga.is_cuda
    tol = tols(dtype, 1e-10, 1e-5)
    assert_rel(out, ref, tol, "compiled output")
    assert_rel(ga, gb, tol, "compiled gradient")


@needs_cuda
def test_torch_compile_fullgraph_aot_eager(dtype):
    _check_compiled("aot_eager", dtype)


@needs_cuda
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="inductor on CUDA needs triton")
def test_torch_compile_fullgraph_inductor():
    _check_compiled("inductor", F64)


# --------------------------------------------------------------- CUDA graphs


def _capture_and_replay(step, static_in, new_values):
    """PyTorch's whole-network capture recipe: warm up on a side stream,
    capture step() into a graph, then copy each new input into the static
    input and replay. Returns the outputs (cloned) of every replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_out = step()
    results = []
    for value in new_values:
        with torch.no_grad():
            static_in.copy_(value)
        g.replay()
        results.append([t.clone() for t in static_out])
    torch.cuda.synchronize()
    return results


@needs_cuda
@pytest.mark.parametrize("shape", [(4, 20, 32), (4, 40, 16)], ids=["m<d", "m>=d"])
def test_cuda_graph_o2p_log_forward_backward(shape):
    X0, X1 = (randn(*shape, seed=s).cuda() / shape[1] ** 0.5 for s in (1, 2))
    G = randn(shape[0], shape[2], shape[2], seed=3).cuda()
    static_X = X0.clone().requires_grad_()

    def step():
        C = matbp.o2p_log(static_X)
        (gX,) = torch.autograd.grad((C * G).sum(), static_X)
        return C, gX

    replays = _capture_and_replay(step, static_X, [X1, X0])
    for (C, gX), X in zip(replays, [X1, X0]):
        Xe = X.clone().requires_grad_()
        Ce = matbp.o2p_log(Xe)
        (ge,) = torch.autograd.grad((Ce * G).sum(), Xe)
        assert_rel(C, Ce, 1e-12, "replayed C")
        assert_rel(gX, ge, 1e-10, "replayed gradient")


@needs_cuda
@pytest.mark.parametrize("n", [8, 64])
def test_cuda_graph_sym_eig_forward_backward(n):
    lam = torch.linspace(-1.0, 1.0, n, dtype=F64).expand(4, n) * n
    A0, _ = with_spectrum(lam, seed=1)
    A1, _ = with_spectrum(lam * 0.5 + 0.1, seed=2)
    A0, A1 = A0.cuda(), A1.cuda()
    G = randn(4, n, n, seed=3).cuda()
    static_A = A0.clone().requires_grad_()

    def step():
        L, W, _ = eig_invariants(static_A)
        (gA,) = torch.autograd.grad(L.sum() + (W * G).sum(), static_A)
        return L, W, gA

    replays = _capture_and_replay(step, static_A, [A1, A0])
    for (L, W, gA), A in zip(replays, [A1, A0]):
        Ae = A.clone().requires_grad_()
        Le, We, _ = eig_invariants(Ae)
        (ge,) = torch.autograd.grad(Le.sum() + (We * G).sum(), Ae)
        assert_rel(L, Le, 1e-12, "replayed L")
        assert_rel(W, We, 1e-10, "replayed V diag(w) Vᵀ")
        assert_rel(gA, ge, 1e-9, "replayed gradient")


# ------------------------------------------------------------ no host sync

SYNC_FREE_CASES = [
    "sym_eig-n8",
    "sym_eig-n64",
    "sym_eig-n64-f32",
    "sym_fn-log",
    "sym_fn-pow",
    "sym_fn-exp-f32",
    "o2p_log-m<d",
    "o2p_log-m>=d",
    "o2p_log-m<d-f32",
    "projector",
    "svd-8x5",
    "svd-5x8",
]


def _sync_free_case(name):
    """(function of one CUDA tensor returning a tuple of outputs, that tensor)."""
    dtype = F32 if name.endswith("-f32") else F64
    if name.startswith("sym_eig"):
        n = int(name.split("-")[1][1:])
        w = torch.linspace(-1.0, 2.0, n, dtype=dtype, device="cuda")

        def f(A):
            L, V = matbp.sym_eig(A)
            return L, (V * w) @ V.mT

        return f, random_symmetric((4,), n, dtype).cuda()
    if name.startswith("sym_fn"):
        fn = name.split("-")[1]
        return (lambda A: (matbp.sym_fn(A, fn, -0.5 if fn == "pow" else None),)), random_spd((4,), 16, dtype).cuda()
    if name.startswith("o2p_log"):
        shape = (4, 20, 48) if "m<d" in name else (4, 48, 20)
        return (lambda X: (matbp.o2p_log(X),)), (randn(*shape, seed=4) / 5).to(dtype).cuda()
    if name == "projector":
        Xf = randn(4, 12, 5, seed=5)
        return (lambda A: (matbp.projector(A),)), (Xf @ Xf.mT).cuda()
    if name.startswith("svd"):
        m, n = map(int, name.split("-")[1].split("x"))
        k = min(m, n)
        w = torch.linspace(0.5, 2.0, k, dtype=dtype, device="cuda")

        def f(X):
            U, S, V = matbp.svd(X)
            return S, (U * w) @ V.mT

        return f, randn(4, m, n, seed=6).to(dtype).cuda()
    raise ValueError(name)


def _fwd_bwd_step(f, X):
    """A forward+backward of f at X with a fixed random functional of its outputs."""
    X.requires_grad_()
    weights = [torch.randn_like(o) for o in f(X)]

    def step():
        outs = f(X)
        loss = 0
        for o, w in zip(outs, weights):
            loss = loss + (o * w).sum()
        (g,) = torch.autograd.grad(loss, X)
        return outs, g

    return step


@needs_cuda
@pytest.mark.parametrize("name", SYNC_FREE_CASES)
def test_forward_and_backward_do_not_synchronize(name):
    step = _fwd_bwd_step(*_sync_free_case(name))

    step()  # warm-up: one-time initialisation (handles, workspaces) may synchronise
    torch.cuda.synchronize()
    with sync_debug_error():
        outs, g = step()
    torch.cuda.synchronize()
    assert all(torch.isfinite(o).all() for o in outs) and torch.isfinite(g).all()


def _gpu_sleep_seconds(cycles):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


@needs_cuda
@pytest.mark.parametrize("name", SYNC_FREE_CASES)
def test_host_does_not_wait_for_the_gpu(name):
    """Sync debug mode only sees synchronisations made through torch; this
    sees any (cudaStreamSynchronize, a blocking copy, a cuSOLVER host
    workspace): with the GPU kept busy by a long sleep kernel, queuing the
    forward and backward must return to the host long before the GPU is done."""
    step = _fwd_bwd_step(*_sync_free_case(name))

    for _ in range(2):  # warm-up: handles, workspaces and cached allocations
        step()
    cycles = 500_000_000
    gpu_s = _gpu_sleep_seconds(cycles)
    assert gpu_s > 0.05, f"torch.cuda._sleep({cycles}) took only {gpu_s:.3f} s"
    torch.cuda._sleep(cycles)
    t0 = time.perf_counter()
    outs, g = step()
    host_s = time.perf_counter() - t0
    busy = not torch.cuda.current_stream().query()
    torch.cuda.synchronize()
    assert host_s < 0.5 * gpu_s and busy, (
        f"{name}: queuing forward+backward took {host_s:.3f} s while the GPU slept {gpu_s:.3f} s "
        "(the host waited for the GPU: something synchronised)"
    )
    assert all(torch.isfinite(o).all() for o in outs) and torch.isfinite(g).all()


@needs_cuda
def test_argument_errors_raise_without_synchronizing():
    A = random_symmetric((2,), 3).cuda()
    X = randn(2, 3, 4).cuda()
    half, X_half = A.half(), X.half()
    rect = torch.ones(2, 3, 4, dtype=F64, device="cuda")
    vec = torch.ones(4, dtype=F64, device="cuda")
    L, V = matbp.sym_eig(A)
    bad_gV = torch.zeros(2, 4, 4, dtype=F64, device="cuda")
    cases = [
        (lambda: matbp.sym_eig(rect), r"matbp.sym_eig: argument 'A' must be a batch of square matrices"),
        (lambda: matbp.sym_eig(half), r"matbp.sym_eig: argument 'A' must be float32 or float64"),
        (lambda: matbp.svd(vec), r"matbp.svd: argument 'X' must be a batch of matrices"),
        (lambda: matbp.o2p_log(X, 0.0), r"matbp.o2p_log: argument 'eps' must be a positive finite number"),
        (lambda: matbp.o2p_log(X, -1e-3), r"matbp.o2p_log: argument 'eps' must be a positive finite number"),
        (lambda: matbp.o2p_log(X_half), r"matbp.o2p_log: argument 'X' must be float32 or float64"),
        (lambda: matbp.projector(A, rtol=-1.0), r"matbp.projector: argument 'rtol' must be a finite number >= 0"),
        (lambda: torch.ops.matbp.sym_fn(A, "cos", 1.0), r"matbp.sym_fn: argument 'fn' must be one of"),
        (lambda: torch.ops.matbp.sym_eig_backward(None, bad_gV, L, V), r"matbp.sym_eig_backward: 'gV' must have the shape of 'V'"),
    ]
    with sync_debug_error():
        for call, message in cases:
            with pytest.raises(RuntimeError, match=message):
                call()


@needs_cuda
def test_device_mismatch_raises():
    A = random_symmetric((2,), 3).cuda()
    L, V = matbp.sym_eig(A)
    with pytest.raises(RuntimeError, match=r"matbp\.sym_eig_backward: .*same device"):
        torch.ops.matbp.sym_eig_backward(None, torch.zeros(2, 3, 3, dtype=F64), L, V)
    X = randn(2, 3, 5).cuda()
    C, S, U, Y = torch.ops.matbp.o2p_log_with_eig(X, 1e-3)
    with pytest.raises(RuntimeError, match=r"matbp\.o2p_log_backward: .*same device"):
        torch.ops.matbp.o2p_log_backward(torch.zeros(2, 5, 5, dtype=F64), X, S, U, Y, 1e-3)


# ------------------------------------------------ sync checks and NaN poisoning


@needs_sync_checks_api
def test_sync_checks_setting_and_context_manager():
    prev = matbp.set_sync_checks(False)
    try:
        assert matbp.set_sync_checks(True) is False
        assert matbp.set_sync_checks(False) is True
        with matbp.sync_checks():
            assert matbp.set_sync_checks(True) is True  # on inside the block
        assert matbp.set_sync_checks(False) is False  # restored on exit
        with pytest.raises(ValueError):
            with matbp.sync_checks():
                raise ValueError("inside")
        assert matbp.set_sync_checks(False) is False  # restored after an exception too
    finally:
        matbp.set_sync_checks(prev)


@needs_sync_checks_api
def test_sync_checks_environment_variable():
    code = "\n".join(
        [
            "import torch, matbp",
            "print('SETTING', matbp.set_sync_checks(True))",
            "if torch.cuda.is_available() and torch._C._dispatch_has_kernel_for_dispatch_key('matbp::sym_eig', 'CUDA'):",
            "    A = torch.eye(3, dtype=torch.float64, device='cuda')",
            "    A[1, 0] = float('nan')",
            "    try:",
            "        matbp.sym_eig(A)",
            "        print('NO RAISE')",
            "    except RuntimeError as e:",
            "        print('RAISED', str(e).splitlines()[0])",
        ]
    )
    env = dict(os.environ, MATBP_SYNC_CHECKS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    assert out.returncode == 0, out.stderr
    assert "SETTING True" in out.stdout, out.stdout
    if _HAS_GPU and _CUDA_BUILD:
        assert "RAISED matbp.sym_eig: argument 'A' contains NaN or Inf" in out.stdout, out.stdout


def _bad_input_cases():
    """(op name, argument, call, clean input (3, ...) float64 CPU)."""
    spd = random_spd((3,), 6, seed=40)
    return [
        ("matbp.sym_eig", "A", lambda A: tuple(matbp.sym_eig(A)), spd),
        ("matbp.sym_fn", "A", lambda A: (matbp.sym_fn(A, "log"),), spd),
        ("matbp.projector", "A", lambda A: (matbp.projector(A),), spd),
        ("matbp.svd", "X", lambda X: tuple(matbp.svd(X)), randn(3, 8, 5, seed=41)),
        ("matbp.o2p_log", "X", lambda X: (matbp.o2p_log(X),), randn(3, 4, 7, seed=42)),
        ("matbp.o2p_log", "X", lambda X: (matbp.o2p_log(X),), randn(3, 7, 4, seed=43)),
    ]


BAD_IDS = ["sym_eig", "sym_fn", "projector", "svd", "o2p_log-m<d", "o2p_log-m>=d"]


def _poison(X, bad):
    X = X.clone()
    # One entry of matrix 1, in the lower triangle (and its mirror) so that
    # lower-triangle readers see it too.
    X[1, 3, 1] = bad
    if X.shape[-1] == X.shape[-2]:
        X[1, 1, 3] = bad
    return X


@needs_cuda
@pytest.mark.parametrize("bad", [NAN, INF], ids=["nan", "inf"])
@pytest.mark.parametrize("case", range(6), ids=BAD_IDS)
def test_sync_checks_raise_on_bad_input(case, bad):
    op, arg, call, X = _bad_input_cases()[case]
    Xg = _poison(X, bad).cuda()
    with matbp.sync_checks():
        with pytest.raises(RuntimeError, match=rf"{op}: argument '{arg}' contains NaN or Inf"):
            call(Xg)
            torch.cuda.synchronize()


@needs_cuda
@pytest.mark.parametrize("bad", [NAN, INF], ids=["nan", "inf"])
@pytest.mark.parametrize("case", range(6), ids=BAD_IDS)
def test_bad_matrix_gives_nan_without_sync_checks(case, bad):
    op, arg, call, X = _bad_input_cases()[case]
    Xg = _poison(X, bad).cuda().requires_grad_()
    outs = call(Xg)
    weights = [randn(*o.shape, seed=k).to(o) for k, o in enumerate(outs)]
    loss = 0
    for o, w in zip(outs, weights):
        loss = loss + (o * w).sum()
    (g,) = torch.autograd.grad(loss, Xg)
    torch.cuda.synchronize()
    for k, o in enumerate(outs):
        assert torch.isnan(o[1]).all(), f"{op}: output {k} of the bad matrix is not all NaN"
    assert not torch.isfinite(g[1]).any(), f"{op}: finite gradient entries for the bad matrix"
    # The other matrices of the batch are untouched: as on the CPU without them.
    good = [0, 2]
    Xc = X[good].clone().requires_grad_()
    outs_c = call(Xc)
    loss_c = 0
    for o, w in zip(outs_c, weights):
        loss_c = loss_c + (o * w[good].cpu()).sum()
    (gc,) = torch.autograd.grad(loss_c, Xc)
    if op == "matbp.sym_eig":  # eigenvectors are sign-dependent: L and V diag(L) Vᵀ
        L, V = outs
        assert_rel(L[good], outs_c[0], 1e-10, "eigenvalues of the good matrices")
        assert_rel((V[good] * L[good].unsqueeze(-2)) @ V[good].mT, X[good], 1e-12, "good reconstruction")
    elif op == "matbp.svd":
        U, S, V = outs
        assert_rel(S[good], outs_c[1], 1e-10, "singular values of the good matrices")
        assert_rel((U[good] * S[good].unsqueeze(-2)) @ V[good].mT, X[good], 1e-12, "good reconstruction")
    else:
        assert_rel(outs[0][good], outs_c[0], 1e-10, f"{op}: output of the good matrices")
        assert_rel(g[good], gc, 1e-8, f"{op}: gradient of the good matrices")


@needs_cuda
def test_sym_fn_domain_violation_nan_or_raise():
    A, _ = with_spectrum(torch.tensor([[1.0, 2.0, 3.0], [1.0, -1.0, 2.0], [0.5, 2.0, 4.0]]), seed=3)
    F = matbp.sym_fn(A.cuda(), "log")
    torch.cuda.synchronize()
    assert torch.isnan(F[1]).all()
    assert_rel(F[[0, 2]], matbp.sym_fn(A[[0, 2]], "log"), 1e-11, "good matrices")
    with matbp.sync_checks():
        with pytest.raises(RuntimeError, match="matbp.sym_fn: fn='log' is not defined for matrix 1"):
            matbp.sym_fn(A.cuda(), "log")


# ------------------------------------------------- streams, devices, threads


@needs_cuda
def test_non_default_stream():
    """Work queued on a side stream: the kernels must run on the current
    stream. The input is only written on that stream after a long sleep, so a
    kernel launched on another stream would read the zeros it held before."""
    A_host = random_symmetric((16,), 12, seed=50)
    X_host = randn(4, 20, 32, seed=51) / 20 ** 0.5
    G = randn(4, 32, 32, seed=52)
    w = torch.linspace(-1.0, 2.0, 12, dtype=F64)

    def work(A, X, G, w):
        L, V = matbp.sym_eig(A)
        C = matbp.o2p_log(X)
        loss = L.pow(2).sum() + (((V * w) @ V.mT) ** 2).sum() + (C * G).sum()
        gA, gX = torch.autograd.grad(loss, (A, X))
        return L, C, gA, gX

    ref = work(A_host.clone().requires_grad_(), X_host.clone().requires_grad_(), G, w)

    A_src, X_src, Gd, wd = A_host.cuda(), X_host.cuda(), G.cuda(), w.cuda()
    A = torch.zeros_like(A_src)
    X = torch.zeros_like(X_src)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        torch.cuda._sleep(100_000_000)  # ~50 ms: anything not on s runs first
        A.copy_(A_src)
        X.copy_(X_src)
        out = work(A.requires_grad_(), X.requires_grad_(), Gd, wd)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    for k, (got, want) in enumerate(zip(out, ref)):
        assert_rel(got, want, 1e-9, f"result {k} on a side stream")


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    dev = torch.device("cuda:1")
    assert torch.cuda.current_device() == 0
    A = random_symmetric((3,), 10, seed=60)
    X = randn(3, 8, 12, seed=61)
    Lc = matbp.sym_eig(A)[0]
    L, V = matbp.sym_eig(A.to(dev))
    assert L.device == dev and V.device == dev
    assert_rel(L, Lc, 1e-12, "eigenvalues on cuda:1")
    check = [(lambda X: matbp.o2p_log(X), X), (lambda A: matbp.sym_fn(A, "exp"), A / 10)]
    for f, inp in check:
        xc = inp.clone().requires_grad_()
        xg = inp.to(dev).requires_grad_()
        oc, og = f(xc), f(xg)
        assert og.device == dev
        Gw = randn(*oc.shape, seed=62)
        (gc,) = torch.autograd.grad((oc * Gw).sum(), xc)
        (gg,) = torch.autograd.grad((og * Gw.to(dev)).sum(), xg)
        assert gg.device == dev
        assert_rel(og, oc, 1e-11, "output on cuda:1")
        assert_rel(gg, gc, 1e-9, "gradient on cuda:1")
    assert torch.cuda.current_device() == 0


@needs_cuda
@pytest.mark.parametrize("own_streams", [False, True], ids=["default-stream", "own-streams"])
def test_concurrent_threads(own_streams):
    # Small n and large n (different cuSOLVER paths), one thread each, plus
    # gradients; every thread compares with its own CPU reference.
    problems = [random_symmetric((64,), 8, seed=70), random_symmetric((16,), 48, seed=71),
                random_symmetric((32,), 20, seed=72), random_symmetric((8,), 64, seed=73)]
    expected = [torch.linalg.eigvalsh(A) for A in problems]
    errors, results = [], [None] * len(problems)
    barrier = threading.Barrier(len(problems), timeout=60)

    def work(i):
        try:
            stream = torch.cuda.Stream() if own_streams else torch.cuda.current_stream()
            with torch.cuda.stream(stream):
                A = problems[i].cuda()
                barrier.wait()
                for _ in range(10):
                    Ar = A.clone().requires_grad_()
                    L, V = matbp.sym_eig(Ar)
                    (g,) = torch.autograd.grad((L * L).sum(), Ar)  # = 2A
                    results[i] = (L.detach(), g)
                stream.synchronize()
        except Exception as e:  # reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    torch.cuda.synchronize()
    assert not errors, errors
    for (L, g), A, want in zip(results, problems, expected):
        assert_rel(L, want, 1e-12, "eigenvalues")
        assert_rel(g, 2 * A, 1e-10, "gradient")


@needs_cuda
def test_deepo2p_trains_on_cuda(tmp_path):
    """A tiny DeepO2P run of the training command on the GPU: the O2P layer
    stays on the device, every step is finite, the summary names the GPU."""
    from matbp import train

    summary = train.main(["o2p", "--data", "textures", "--model", "deepo2p", "--backbone", "small", "--epochs", "1",
                          "--batch-size", "16", "--train-samples", "48", "--val-samples", "32", "--device", "cuda",
                          "--out", str(tmp_path), "--no-progress"])
    assert summary["device"]["type"] == "cuda"
    assert summary["nonfinite_steps"] == 0 and 0.0 <= summary["val_error"] <= 1.0
