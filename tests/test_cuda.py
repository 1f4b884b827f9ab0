"""What only the CUDA backend has: a CUDA kernel registered for every op,
float64 auxiliary outputs kept on the device, CUDA graph capture, no host
synchronisation (sync debug mode, and the host not waiting for a busy GPU),
argument errors without synchronising, sync checks and NaN poisoning,
non-default streams, a second device, concurrent threads and a training run
on the GPU.

Every op's values, gradients, gradcheck, opcheck, torch.compile, edge cases
and modules on CUDA are checked by that op's own test file, whose tests take
the ``device`` fixture (tests/conftest.py): the same test on the CPU and on
CUDA, where CUDA is compared with the CPU kernels.

Every test here carries the ``cuda`` marker. Without a CUDA device (or with a
CPU-only build of matbp) they are skipped, except
``test_every_tensor_op_has_a_cuda_or_composite_kernel``, which only needs a
CUDA build of the extension, and the sync-checks setting tests, which only
need the Python API.
"""

import contextlib
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

import matbp
from conftest import (
    CUDA_BUILD,
    F32,
    F64,
    HAS_GPU,
    assert_rel,
    eig_invariants,
    needs_cuda,
    random_spd,
    random_symmetric,
    randn,
    with_spectrum,
)

pytestmark = pytest.mark.cuda

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
    "matbp::sym_fn_second_derivative",
    "matbp::o2p_log_with_eig",
    "matbp::o2p_log_backward",
    "matbp::o2p_log_jvp",
    "matbp::projector_with_eig",
    "matbp::projector_backward",
    "matbp::projector_second_derivative",
    "matbp::ncut_projector_distance_with_basis",
    "matbp::ncut_projector_distance_backward",
}


def _has_kernel(name, key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(name, key)


@pytest.fixture(autouse=True)
def _sync_checks_off():
    """Every test starts with sync checks off (whatever MATBP_SYNC_CHECKS says)
    and leaves the setting as it found it."""
    with matbp.sync_checks(False):
        yield


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
    if not CUDA_BUILD:
        pytest.skip("matbp was built without CUDA")
    ops = _tensor_ops()
    assert (KERNEL_OPS | COMPOSITE_OPS) <= set(ops), sorted((KERNEL_OPS | COMPOSITE_OPS) - set(ops))
    missing = [n for n in ops if not (_has_kernel(n, "CUDA") or _has_kernel(n, "CompositeImplicitAutograd"))]
    assert not missing, f"no CUDA (or CompositeImplicitAutograd) kernel: {missing}"
    assert not [n for n in KERNEL_OPS if not _has_kernel(n, "CUDA")]
    assert not [n for n in COMPOSITE_OPS if not _has_kernel(n, "CompositeImplicitAutograd")]


# ------------------------------------------------- float64 inside, on the device


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
    A_int, X_int = A.to(torch.int64), X.to(torch.int64)
    rect = torch.ones(2, 3, 4, dtype=F64, device="cuda")
    vec = torch.ones(4, dtype=F64, device="cuda")
    L, V = matbp.sym_eig(A)
    bad_gV = torch.zeros(2, 4, 4, dtype=F64, device="cuda")
    cases = [
        (lambda: matbp.sym_eig(rect), r"matbp.sym_eig: argument 'A' must be a batch of square matrices"),
        (lambda: matbp.sym_eig(A_int), r"matbp.sym_eig: argument 'A' must be a floating-point tensor"),
        (lambda: matbp.svd(vec), r"matbp.svd: argument 'X' must be a batch of matrices"),
        (lambda: matbp.o2p_log(X, 0.0), r"matbp.o2p_log: argument 'eps' must be a positive finite number"),
        (lambda: matbp.o2p_log(X, -1e-3), r"matbp.o2p_log: argument 'eps' must be a positive finite number"),
        (lambda: matbp.o2p_log(X_int), r"matbp.o2p_log: argument 'X' must be a floating-point tensor"),
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


def test_sync_checks_environment_variable():
    code = "\n".join(
        [
            "import torch, matbp",
            "print('SETTING', matbp.set_sync_checks(True))",
            "if torch.cuda.is_available() and matbp.built_with_cuda():",
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
    if HAS_GPU and CUDA_BUILD:
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
