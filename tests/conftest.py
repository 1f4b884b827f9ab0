"""Shared fixtures and helpers: input generators, the ``dtype`` and ``device``
fixtures, and the checks that compare an op on a device with the CPU.

Every op's tests live in its own file and take ``device`` where the same
check applies on the CPU and on CUDA: the "cuda" parameter carries the
``cuda`` marker (``-m cuda`` selects it, ``-m "not cuda"`` leaves it out) and
is skipped without a CUDA device or with a CPU-only build of matbp. What only
CUDA has (graph capture, synchronisation, streams, sync checks, a second
device) is in test_cuda.py.
"""

import pytest
import torch

import matbp  # noqa: F401  registers the operators

F32, F64 = torch.float32, torch.float64

HAS_GPU = torch.cuda.is_available()
CUDA_BUILD = matbp.built_with_cuda()

needs_cuda = pytest.mark.skipif(
    not (HAS_GPU and CUDA_BUILD),
    reason="needs a CUDA device" if not HAS_GPU else "matbp was built without CUDA",
)


def random_symmetric(shape, n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*shape, n, n, generator=g, dtype=torch.float64)
    return (a + a.mT).to(dtype)


def random_spd(shape, n, dtype=torch.float64, seed=0, shift=1.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*shape, n, n, generator=g, dtype=torch.float64)
    return (a @ a.mT / max(n, 1) + shift * torch.eye(n, dtype=torch.float64)).to(dtype)


def with_spectrum(eigenvalues, seed=0):
    """Q diag(eigenvalues) Qᵀ with a random orthogonal Q (float64), and Q."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    n = lam.shape[-1]
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(*lam.shape[:-1], n, n, generator=g, dtype=torch.float64))
    return (q * lam.unsqueeze(-2)) @ q.mT, q


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=F64):
    """Seeded standard normal entries (drawn in float64 on the CPU)."""
    return torch.randn(*shape, generator=gen(seed), dtype=F64).to(dtype)


def low_rank(batch, m, d, r, seed=0, scale=1.0):
    """A (*batch, m, d) float64 matrix of rank r."""
    g = gen(seed)
    a = torch.randn(*batch, m, r, generator=g, dtype=F64)
    b = torch.randn(*batch, r, d, generator=g, dtype=F64)
    return scale * (a @ b) / max(m, 1) ** 0.5


def adversarial(n, batch=13, seed=0, extreme=1e150):
    """13 matrices (a partial last pack of 8; of 16 in float32): random,
    eigenvalues repeated, clustered to 1e-12, graded 1e-12..1, half zero, all
    zero, and the random one at ``extreme`` and 1 / ``extreme`` (float64)."""
    i = torch.arange(n, dtype=torch.float64)
    spectra = [
        torch.div(i, 3, rounding_mode="floor") - 2.0,
        torch.where(i % 2 == 1, 1.0 + i * 1e-12, i + 2.0),
        10.0 ** (-12.0 * i / max(n - 1, 1)),
        torch.where(i < n // 2, torch.zeros(n, dtype=torch.float64), 1.0 + i),
    ]
    built = [with_spectrum(s, seed=seed + k)[0] for k, s in enumerate(spectra)]
    rand = random_symmetric((), n, seed=seed)
    mats = built + [torch.zeros(n, n, dtype=torch.float64), rand * extreme, rand / extreme]
    mats += [random_symmetric((), n, seed=seed + 10 + k) for k in range(batch - len(mats))]
    return torch.stack(mats)


def assert_lapack_accuracy(A, L, V, L_ref, eps=torch.finfo(F64).eps):
    """LAPACK's accuracy at the unit roundoff ``eps`` of the compute dtype."""
    n = A.shape[-1]
    L, V = L.double(), V.double()
    norm = torch.linalg.matrix_norm(A, ord=2).unsqueeze(-1)
    tol = 10 * n * eps
    assert ((L - L_ref).abs() <= tol * norm).all(), ((L - L_ref).abs() / norm).max()
    eye = torch.eye(n, dtype=torch.float64)
    assert ((V.mT @ V - eye).abs() <= tol).all(), (V.mT @ V - eye).abs().max()
    recon = (V * L.unsqueeze(-2)) @ V.mT
    assert ((recon - A).abs() <= tol * norm.unsqueeze(-1)).all()
    assert (L[..., 1:] >= L[..., :-1]).all()


BATCH_SHAPES = [(), (0,), (2, 3)]


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, needs_cuda])])
def device(request):
    """The device an op's test runs on. On CUDA the test starts with sync
    checks off (whatever MATBP_SYNC_CHECKS says), as test_cuda.py's do."""
    if request.param == "cpu":
        yield "cpu"
        return
    with matbp.sync_checks(False):
        yield "cuda"


# ----------------------------------------------------------- comparisons


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


def check_on_device(fn, inputs, device, *, reference=None, diff=(0,), tol, grad_tol, seed=1234):
    """fn(*inputs) on `device`: outputs on the device, finite gradients (w.r.t.
    inputs[diff]) of a fixed random functional of the outputs. On CUDA they
    are compared with fn on the CPU; on the CPU with `reference` (the same
    function computed another way, run on the CPU), if one is given.
    Outputs: dtype, shape and values to `tol`; gradients to `grad_tol`
    (relative Frobenius norms). Returns the device's outputs and gradients."""
    outs, grads = run_on(device, fn, inputs, diff, seed)
    for k, o in enumerate(outs):
        assert o.device.type == device, f"output {k} is on {o.device}"
    for k, g in enumerate(grads):
        assert g.device.type == device, f"gradient {k} is on {g.device}"
        assert torch.isfinite(g).all(), f"gradient {k} is not finite"
    want_fn = fn if device != "cpu" else reference
    if want_fn is None:
        return outs, grads
    outs_w, grads_w = run_on("cpu", want_fn, inputs, diff, seed)
    against = "the CPU" if device != "cpu" else "the reference"
    assert len(outs) == len(outs_w)
    for k, (got, want) in enumerate(zip(outs, outs_w)):
        assert got.dtype == want.dtype and got.shape == want.shape, (k, got.dtype, want.dtype, got.shape, want.shape)
        if got.is_floating_point():
            assert_rel(got, want, tol, f"output {k} against {against}")
        else:
            assert torch.equal(got.cpu(), want), f"output {k}: {got.cpu()} != {want} ({against})"
    for k, (got, want) in enumerate(zip(grads, grads_w)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert_rel(got, want, grad_tol, f"gradient {k} against {against}")
    return outs, grads


def eig_invariants(A):
    """Functions of sym_eig that do not depend on the eigenvectors' signs
    (the second one needs distinct eigenvalues)."""
    L, V = matbp.sym_eig(A)
    w = torch.linspace(-1.0, 2.0, A.shape[-1], dtype=A.dtype, device=A.device)
    return L, (V * w) @ V.mT, (V * L.unsqueeze(-2)) @ V.mT


def svd_invariants(X):
    """Functions of svd that do not depend on the singular vectors' signs."""
    U, S, V = matbp.svd(X)
    w = torch.linspace(0.5, 2.0, S.shape[-1], dtype=X.dtype, device=X.device)
    return S, (U * w) @ V.mT, (U * w) @ U.mT, (V * w) @ V.mT, (U * S.unsqueeze(-2)) @ V.mT
