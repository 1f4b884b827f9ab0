"""Normalized-cuts objectives (matbp.ncut_j1, ncut_j2, ncut_degrees and the
op torch.ops.matbp.ncut_projector_distance), against the paper's dense m×m
formulas (eqs. 17–23) and float64 finite differences. The projector op
(matbp.projector) is tested in test_projector.py, segmentation inference
(matbp.segmentation) in test_segmentation.py."""

import pytest
import torch
from torch.autograd import gradcheck

import matbp
from conftest import F64, check_on_device, gen, tols


def features(m, d, seed=0, batch=()):
    # Non-negative features (as after a ReLU): positive degrees for J1.
    return torch.rand(*batch, m, d, generator=gen(seed), dtype=torch.float64) + 0.05


def random_labels(m, ids, seed=0, batch=()):
    ids = torch.as_tensor(ids)
    return ids[torch.randint(0, len(ids), (*batch, m), generator=gen(seed))]


def spd(d, seed=0, rank=None):
    A = torch.randn(d, rank or d, generator=gen(seed), dtype=torch.float64)
    return A @ A.T + (0 if rank else 0.1) * torch.eye(d, dtype=torch.float64)


# ----------------------------------------------------------------- dense reference


def dense_range_projector(A, rtol):
    L, V = torch.linalg.eigh(0.5 * (A + A.T))
    mask = L.abs() > rtol * L.abs().max()
    Vr = V[:, mask]
    return Vr @ Vr.T, (Vr / L[mask]) @ Vr.T, int(mask.sum())


def indicator(labels):
    ids = torch.unique(labels)
    return (labels[:, None] == ids[None, :]).to(torch.float64)


def default_rtol(m, d):
    return max(m, d) * torch.finfo(torch.float64).eps


def dense_j2(X, labels, Lam=None):
    """J2 and its gradients by the paper's dense formulas, eqs. 20–23."""
    m, d = X.shape
    Lam = torch.eye(d, dtype=X.dtype) if Lam is None else Lam
    W = X @ Lam @ X.T
    # The low-rank op measures rank on the d×d core; the dense eigenvalues
    # of W are the same numbers, so the same relative tolerance applies.
    P, Wp, _ = dense_range_projector(W, default_rtol(m, d))
    E = indicator(labels)
    Psi = E @ torch.linalg.inv(E.T @ E) @ E.T
    J = 0.5 * ((P - Psi) ** 2).sum()
    I = torch.eye(m, dtype=X.dtype)
    gW = -((I - P) @ Psi @ Wp + Wp @ Psi @ (I - P))  # eq. 21: -2 sym((I - Π) Ψ W⁺)
    gX = 2 * gW @ X @ Lam  # eq. 23
    gLam = X.T @ gW @ X  # eq. 22
    return J, gX, gLam


def dense_j1(X, labels, Lam=None):
    """J1 by the paper's dense definition (eqs. 17, 18)."""
    m, d = X.shape
    Lam = torch.eye(d, dtype=X.dtype) if Lam is None else Lam
    W = X @ Lam @ X.T
    D = W.sum(1)
    M = W / D.sqrt()[:, None] / D.sqrt()[None, :]
    PM, _, _ = dense_range_projector(M, default_rtol(m, d))
    E = indicator(labels)
    Omega = D.sqrt()[:, None] * (E @ E.T) * D.sqrt()[None, :]
    PO, _, _ = dense_range_projector(Omega, 1e-12)
    return 0.5 * ((PM - PO) ** 2).sum()


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


# ---------------------------------------------------------------------- J2


@pytest.mark.parametrize("with_lambda", [None, "spd", "low-rank"])
@pytest.mark.parametrize("ids", [[0, 1, 2, 3], [7], [2, 9, 40]], ids=["4seg", "1seg", "sparse-ids"])
def test_j2_value_and_gradient_match_dense_formulas(with_lambda, ids):
    m, d = 48, 6
    X = features(m, d, seed=1)
    labels = random_labels(m, ids, seed=2)
    Lam = None if with_lambda is None else spd(d, seed=3, rank=3 if with_lambda == "low-rank" else None)
    J_ref, gX_ref, gL_ref = dense_j2(X, labels, Lam)
    Xr = X.clone().requires_grad_()
    Lr = None if Lam is None else Lam.clone().requires_grad_()
    J = matbp.ncut_j2(Xr, labels, Lr)
    J.backward()
    assert abs(J.item() - J_ref.item()) <= 1e-10 * abs(J_ref.item())
    assert rel(Xr.grad, gX_ref) < 1e-8
    if Lam is not None:
        # With a full-rank Λ the range of W is that of X: the Λ-gradient is 0.
        scale = max(gL_ref.norm().item(), 1e-6 * Lam.norm().item())
        assert (Lr.grad - gL_ref).norm().item() <= 1e-8 * scale


def test_j2_rank_deficient_features(device):
    # Duplicated feature columns: rank(W) = 4 < d = 6.
    X = features(40, 4, seed=4)
    X = torch.cat([X, X[:, :2]], dim=1)
    labels = random_labels(40, [0, 1, 2], seed=5)
    Xd, Ld = X.to(device), labels.to(device)
    J, rank = matbp.ncut_j2(Xd.clone().requires_grad_(), Ld, return_rank=True)
    assert rank.item() == 4 and rank.device.type == device
    J_ref, gX_ref, _ = dense_j2(X, labels)
    Xr = Xd.clone().requires_grad_()
    matbp.ncut_j2(Xr, Ld).backward()
    assert abs(J.item() - J_ref.item()) <= 1e-10 * J_ref.item()
    assert rel(Xr.grad.cpu(), gX_ref) < 1e-8
    assert matbp.affinity_rank(Xd).item() == 4
    # On CUDA: the CPU kernel's value and gradient.
    check_on_device(lambda X, lab: matbp.ncut_j2(X, lab), [X, labels], device, tol=1e-10, grad_tol=1e-8)


def lowrank_j2(X, labels, Lam=None):
    """J2 by its low-rank form with one unblocked QR of X (differentiable)."""
    m, d = X.shape
    Q, R = torch.linalg.qr(X)
    core = R @ R.T if Lam is None else R @ Lam @ R.T
    mu, Z = torch.linalg.eigh(0.5 * (core + core.T))
    keep = mu.abs() > default_rtol(m, d) * mu.abs().max()
    E = indicator(labels)
    S = E.T @ (Q @ Z[:, keep])
    return 0.5 * (int(keep.sum()) + E.shape[1]) - ((S**2).sum(1) / E.sum(0)).sum(), int(keep.sum())


# Tall enough for the QR by row blocks (2048 rows each, the last one longer).
TALL_M = 3 * 2048 + 777


def test_j2_tall_blocked_qr_matches_one_qr():
    X = features(TALL_M, 6, seed=11, batch=(2,))
    labels = random_labels(TALL_M, [0, 3, 5, 8], seed=12, batch=(2,))
    Lam = spd(6, seed=13)
    for lam in (None, Lam):
        Xr = X.clone().requires_grad_()
        J = matbp.ncut_j2(Xr, labels, lam)
        J.sum().backward()
        for b in range(2):
            Xb = X[b].clone().requires_grad_()
            J_ref, _ = lowrank_j2(Xb, labels[b], lam)
            J_ref.backward()
            assert abs(J[b].item() - J_ref.item()) <= 1e-12 * J_ref.item()
            assert rel(Xr.grad[b], Xb.grad) < 1e-9


def test_j2_tall_blocked_qr_rank_deficient(device):
    # A duplicated column: rank 5 of d = 6; in image 0 also a row block of
    # zeros, a block whose R factor is 0 (row blocks: one LAPACK call each on
    # the CPU, ATen's batched QR on CUDA).
    X = torch.stack([features(TALL_M, 5, seed=14), features(TALL_M, 5, seed=21)])
    X = torch.cat([X, X[..., :1]], dim=-1)
    X[0, 2048:4096] = 0
    labels = torch.stack([random_labels(TALL_M, [1, 2, 4], seed=15), random_labels(TALL_M, range(6), seed=22)])
    Xd, Ld = X.to(device), labels.to(device)
    J, rank = matbp.ncut_j2(Xd, Ld, return_rank=True)
    assert rank.tolist() == [5, 5] and matbp.affinity_rank(Xd).tolist() == [5, 5]
    if device == "cpu":  # against one unblocked QR
        for b in range(2):
            J_ref, rank_ref = lowrank_j2(X[b], labels[b])
            assert rank_ref == 5
            assert abs(J[b].item() - J_ref.item()) <= 1e-12 * J_ref.item()
    # On CUDA: the CPU kernel's value and gradient.
    check_on_device(lambda X, lab: matbp.ncut_j2(X, lab), [X, labels], device, tol=1e-10, grad_tol=1e-8)
    # The gradient along two random directions, by central differences.
    Xr = Xd.clone().requires_grad_()
    matbp.ncut_j2(Xr, Ld).sum().backward()
    for seed in (16, 17):
        V = torch.randn(X.shape, generator=gen(seed), dtype=torch.float64)
        V[..., 5] = V[..., 0]  # stay on the rank-5 manifold: J jumps off it
        V = V.to(device)
        h = 1e-5
        fd = (matbp.ncut_j2(Xd + h * V, Ld) - matbp.ncut_j2(Xd - h * V, Ld)).sum() / (2 * h)
        assert abs((Xr.grad * V).sum().item() - fd.item()) <= 1e-6 * abs(fd.item()) + 1e-9


# ---------------------------------------------------------------------- J1


@pytest.mark.parametrize("with_lambda", [False, True])
@pytest.mark.parametrize("ids", [[0, 1, 2, 3], [5], [1, 30]], ids=["4seg", "1seg", "sparse-ids"])
def test_j1_value_matches_dense_and_gradient_matches_finite_differences(with_lambda, ids):
    m, d = 30, 5
    X = features(m, d, seed=6)
    labels = random_labels(m, ids, seed=7)
    Lam = spd(d, seed=8) if with_lambda else None
    J = matbp.ncut_j1(X, labels, Lam)
    J_ref = dense_j1(X, labels, Lam)
    assert abs(J.item() - J_ref.item()) <= 1e-10 * max(abs(J_ref.item()), 1.0)
    inputs = (X.clone().requires_grad_(),) + ((Lam.clone().requires_grad_(),) if with_lambda else ())
    f = (lambda X, L: matbp.ncut_j1(X, labels, 0.5 * (L + L.T))) if with_lambda else (lambda X: matbp.ncut_j1(X, labels))
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-6, fast_mode=True)


# ------------------------------------------------------- synthetic images


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


@pytest.mark.parametrize("with_lambda", [False, True], ids=["no-lambda", "lambda"])
@pytest.mark.parametrize("objective", ["j1", "j2"])
def test_synthetic_images(objective, with_lambda, dtype, device):
    # A batch of two images: against the dense formulas on the CPU (J1's value,
    # J2's value and X-gradient), against the CPU kernel on CUDA.
    X, labels = synthetic_images()
    X = X.to(dtype)
    f = {"j1": matbp.ncut_j1, "j2": matbp.ncut_j2}[objective]
    Lam = None
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
    tol, grad_tol = tols(dtype, 1e-10, 1e-5), tols(dtype, 1e-8, 1e-4)
    check_on_device(fn, inputs, device, diff=diff, tol=tol, grad_tol=grad_tol)
    Xr = X.detach().to(device).requires_grad_()
    J, rank = f(Xr, labels.to(device), None if Lam is None else Lam.to(device), return_rank=True)
    assert rank.device.type == device and rank.tolist() == [5, 5]
    if device == "cpu":
        J.sum().backward()
        for b in range(2):
            Lb = None if Lam is None else Lam.double()
            if objective == "j1":
                J_ref = dense_j1(X[b].double(), labels[b], Lb)
            else:
                J_ref, gX_ref, _ = dense_j2(X[b].double(), labels[b], Lb)
                assert rel(Xr.grad[b].double(), gX_ref) < grad_tol
            assert abs(J[b].item() - J_ref.item()) <= tol * abs(J_ref.item())


# ----------------------------------------------------------------- batching


@pytest.mark.parametrize("objective", [matbp.ncut_j1, matbp.ncut_j2], ids=["j1", "j2"])
def test_batched_equals_per_image(objective):
    X = features(25, 4, seed=9, batch=(2, 3))
    labels = random_labels(25, [0, 3, 5], seed=10, batch=(2, 3))
    labels[0, 1] = 0  # one image with a single segment
    Lam = spd(4, seed=11)
    Xr = X.clone().requires_grad_()
    Lr = Lam.clone().requires_grad_()
    J = objective(Xr, labels, Lr)
    assert J.shape == (2, 3)
    J.sum().backward()
    gL = torch.zeros_like(Lam)
    for i in range(2):
        for j in range(3):
            x = X[i, j].clone().requires_grad_()
            lr = Lam.clone().requires_grad_()
            Jij = objective(x, labels[i, j], lr)
            Jij.backward()
            gL += lr.grad
            assert abs(Jij.item() - J[i, j].item()) < 1e-12
            torch.testing.assert_close(x.grad, Xr.grad[i, j], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(Lr.grad, gL, atol=1e-12, rtol=1e-10)


def test_batched_lambda_per_image():
    X = features(20, 3, seed=12, batch=(2,))
    labels = random_labels(20, [0, 1], seed=13, batch=(2,))
    Lam = torch.stack([spd(3, seed=14, rank=2), spd(3, seed=15, rank=2)]).requires_grad_()
    J = matbp.ncut_j2(X, labels, Lam)
    J.sum().backward()
    for i in range(2):
        _, _, gL = dense_j2(X[i], labels[i], Lam[i].detach())
        torch.testing.assert_close(Lam.grad[i], 0.5 * (gL + gL.T), atol=1e-10, rtol=1e-8)


def test_float32_features():
    X = features(30, 4, seed=16)
    labels = random_labels(30, [0, 1, 2], seed=17)
    J32 = matbp.ncut_j2(X.float(), labels)
    assert J32.dtype == torch.float32
    assert abs(J32.item() - matbp.ncut_j2(X.float().double(), labels).item()) < 1e-6


# ------------------------------------------------------------------ module


def test_normalized_cuts_loss_module(device):
    # On the device, against the objective on the CPU.
    X = features(20, 3, seed=18, batch=(4,))
    labels = random_labels(20, [0, 1], seed=19, batch=(4,))
    for objective, fn in [("j1", matbp.ncut_j1), ("j2", matbp.ncut_j2)]:
        loss = matbp.nn.NormalizedCutsLoss(objective)
        torch.testing.assert_close(loss(X.to(device), labels.to(device)).cpu(), fn(X, labels).mean(), rtol=1e-10, atol=0)
        assert loss.last_rank.device.type == device and loss.last_rank.tolist() == [3, 3, 3, 3]
    assert matbp.nn.NormalizedCutsLoss("j2", reduction="none")(X, labels).shape == (4,)
    with pytest.raises(ValueError, match="objective must be 'j1' or 'j2'"):
        matbp.nn.NormalizedCutsLoss("j3")


# ------------------------------------------------------ second derivatives


@pytest.mark.parametrize("objective", ["j1", "j2"])
@pytest.mark.parametrize("lam", ["none", "shared", "per image", "low rank"])
def test_gradgradcheck(objective, lam):
    # Hessian-vector products through the objectives (gradient penalties on a
    # segmentation loss): the second derivative of J in X, the weights and Λ.
    X = features(10, 3, seed=30, batch=(2,)).requires_grad_()
    labels = random_labels(10, [0, 2, 5], seed=31, batch=(2,))
    f = getattr(matbp, f"ncut_{objective}")
    if lam == "none":
        assert torch.autograd.gradgradcheck(lambda X: f(X, labels), (X,))
        return
    if lam == "low rank":  # Λ = C Cᵀ keeps rank 2 under the checks' perturbations
        C = torch.rand(3, 2, generator=gen(35), dtype=F64).requires_grad_()
        assert torch.autograd.gradgradcheck(lambda X, C: f(X, labels, Lambda=C @ C.mT), (X, C))
        return
    base = {"shared": spd(3, seed=32), "per image": torch.stack([spd(3, seed=33), spd(3, seed=34)])}[lam].abs()
    L = base.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda X, L: f(X, labels, Lambda=(L + L.mT) / 2), (X, L))


def test_double_backward_composition_matches_the_operator():
    # The double backward differentiates this restatement of J: its value and
    # gradient must be the operator's.
    from matbp._ops import _ncut_composition

    Y = features(12, 3, seed=36, batch=(2,)).requires_grad_()
    w = (torch.rand(2, 12, generator=gen(37), dtype=F64) + 0.1).requires_grad_()
    labels = random_labels(12, [0, 4, 7], seed=38, batch=(2,))
    Lam = spd(3, seed=39, rank=2).requires_grad_()
    J, rank, *basis = torch.ops.matbp.ncut_projector_distance_with_basis(Y, w, labels, Lam, None)
    J_c = _ncut_composition(Y, w, Lam, rank, basis[3], basis[4], None)
    torch.testing.assert_close(J_c, J, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(J.sum(), (Y, w, Lam))
    for g, g_c in zip(grads, torch.autograd.grad(J_c.sum(), (Y, w, Lam))):
        torch.testing.assert_close(g_c, g, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------ opcheck and compile


def test_opcheck(device):
    X = features(12, 3, seed=20, batch=(2,)).to(device)
    labels = random_labels(12, [0, 4], seed=21, batch=(2,)).to(device)
    w = (torch.rand(2, 12, generator=gen(22), dtype=torch.float64) + 0.1).to(device)
    Lam = spd(3, seed=23).to(device)
    for args in [(X, w, labels, None, None), (X.clone().requires_grad_(), w.clone().requires_grad_(), labels, Lam.clone().requires_grad_(), 1e-12)]:
        torch.library.opcheck(torch.ops.matbp.ncut_projector_distance_with_basis.default, args)
        torch.library.opcheck(torch.ops.matbp.ncut_projector_distance.default, args)
    J, rank, *basis = torch.ops.matbp.ncut_projector_distance_with_basis(X, w, labels, Lam, None)
    torch.library.opcheck(
        torch.ops.matbp.ncut_projector_distance_backward.default, (torch.ones_like(J), w, Lam, *basis)
    )


def test_torch_compile_fullgraph():
    X = features(16, 3, seed=24, batch=(2,))
    labels = random_labels(16, [0, 1, 2], seed=25, batch=(2,))

    @torch.compile(fullgraph=True, backend="aot_eager")
    def loss(X):
        return matbp.ncut_j1(X, labels).sum() + matbp.ncut_j2(X, labels).sum()

    Xa = X.clone().requires_grad_()
    out = loss(Xa)
    out.backward()
    Xb = X.clone().requires_grad_()
    ref = matbp.ncut_j1(Xb, labels).sum() + matbp.ncut_j2(Xb, labels).sum()
    ref.backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(Xa.grad, Xb.grad)


# --------------------------------------------------------------- bad input


def test_bad_input():
    X = features(10, 3, seed=26)
    labels = random_labels(10, [0, 1], seed=27)
    with pytest.raises(RuntimeError, match="matbp.ncut_j2: argument 'labels' out of range"):
        matbp.ncut_j2(X, labels - 5)
    with pytest.raises(RuntimeError, match="argument 'labels' must have shape \\(\\*, m\\)"):
        matbp.ncut_j2(X, labels[:9])
    with pytest.raises(RuntimeError, match="argument 'labels' must have shape"):
        matbp.ncut_j2(X, labels.view(2, 5))
    with pytest.raises(RuntimeError, match="argument 'labels' must be an integer tensor"):
        matbp.ncut_j2(X, labels.double())
    Xn = X.clone()
    Xn[3, 1] = float("nan")
    with pytest.raises(RuntimeError, match="matbp.ncut_j2: argument 'X' contains NaN or Inf"):
        matbp.ncut_j2(Xn, labels)
    Xneg = X.clone()
    Xneg[0] = -10 * Xneg[0]  # pixel 0 now has a negative degree
    with pytest.raises(ValueError, match="matbp.ncut_j1: the degrees D = X Λ Xᵀ 1 must be positive"):
        matbp.ncut_j1(Xneg, labels)
    with pytest.raises(RuntimeError, match="argument 'Lambda' must have shape"):
        matbp.ncut_j2(X, labels, torch.eye(4, dtype=torch.float64))


# ----------------------------------------------------------------- hardening


@pytest.mark.parametrize("objective", [matbp.ncut_j1, matbp.ncut_j2], ids=["j1", "j2"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_objectives_reject_non_float_features(objective, dtype):
    # ncut_j1 used to compute integer features and cast J back: J = 0 or 2 instead of 2.24.
    X = (features(10, 3, seed=40) * 3).to(dtype)
    labels = random_labels(10, [0, 1], seed=41)
    with pytest.raises(ValueError, match=f"matbp.{objective.__name__}: argument 'X' must be a floating-point tensor"):
        objective(X, labels)


def test_nonsymmetric_lambda_rejected_everywhere():
    X = features(30, 4, seed=42)
    labels = random_labels(30, [0, 1], seed=43)
    Lam = spd(4, seed=44)
    bad = Lam.clone()
    bad[0, 1] += 0.5
    calls = {
        "matbp.ncut_j1": lambda L: matbp.ncut_j1(X, labels, L),
        "matbp.ncut_j2": lambda L: matbp.ncut_j2(X, labels, L),
        "matbp.ncut_degrees": lambda L: matbp.ncut_degrees(X, L),
        "matbp.nn.NormalizedCutsLoss": lambda L: matbp.nn.NormalizedCutsLoss("j1")(X, labels, L),
        "matbp.segmentation.segment": lambda L: matbp.segmentation.segment(X, (5, 6), ks=2, Lambda=L),
    }
    for op, call in calls.items():
        with pytest.raises(ValueError, match=f"{op}: argument 'Lambda' must be symmetric"):
            call(bad)
        call(Lam)
        # rounding-level asymmetry (a Λ formed as A Aᵀ) is accepted, in float64 and float32
        call(Lam + 1e-13 * torch.triu(torch.ones(4, 4, dtype=torch.float64), 1))
        A = torch.rand(4, 4, generator=gen(45))
        call((A @ A.T + 1e-6 * torch.rand(4, 4, generator=gen(46)).triu(1)).float())
    # per-image Λ: one bad matrix in the batch
    Ls = torch.stack([Lam, bad])
    with pytest.raises(ValueError, match="matbp.ncut_j2: argument 'Lambda' must be symmetric"):
        matbp.ncut_j2(X.expand(2, 30, 4), labels.expand(2, 30), Ls)


X10 = features(10, 3, seed=47)
L10 = random_labels(10, [0, 1], seed=48)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((X10, L10, torch.eye(4, dtype=torch.float64)), ValueError,
         r"argument 'Lambda' must have shape \(d, d\) or \(\*, d, d\) = \(3, 3\) to match 'X' of shape \(10, 3\)"),
        ((X10, L10, torch.eye(3, dtype=torch.int64)), ValueError, "argument 'Lambda' must be a floating-point tensor"),
        ((X10, L10, torch.full((3, 3), float("nan"), dtype=torch.float64)), ValueError, "argument 'Lambda' contains NaN"),
        ((X10, L10[:9]), ValueError, r"argument 'labels' must have shape \(\*, m\) = \(10,\) to match 'X'"),
        ((X10, L10.double()), ValueError, "argument 'labels' must be an integer tensor"),
        ((X10, L10.to("meta")), ValueError, "argument 'labels' is on meta but 'X' is on cpu"),
        ((X10, L10 - 5), ValueError, r"argument 'labels' out of range: ids must be in \[0, 2\^40\), got -5"),
        ((X10[0], L10[:1]), ValueError, "argument 'X' must have shape \\(\\*, m, d\\), got a 1-dimensional"),
        ((X10[:0], L10[:0]), ValueError, r"argument 'X' needs at least one pixel"),
        ((torch.where(X10 > 0.5, float("inf"), X10), L10), ValueError, "argument 'X' contains NaN or Inf"),
        ((X10.tolist(), L10), TypeError, "argument 'X' must be a tensor"),
        ((X10, L10, None, "1e-3"), TypeError, "argument 'rtol' must be None or a finite number >= 0, got str"),
        ((X10, L10, None, -1.0), ValueError, "argument 'rtol' must be None or a finite number >= 0, got -1.0"),
        ((X10, L10, None, float("nan")), ValueError, "argument 'rtol' must be None or a finite number >= 0, got nan"),
    ],
    ids=["Lambda-size", "Lambda-dtype", "Lambda-nan", "labels-shape", "labels-dtype", "labels-device",
         "labels-negative", "X-1d", "X-empty", "X-inf", "X-list", "rtol-str", "rtol-negative", "rtol-nan"],
)
@pytest.mark.parametrize("objective", [matbp.ncut_j1, matbp.ncut_j2], ids=["j1", "j2"])
def test_objective_errors_name_the_op_and_the_users_arguments(objective, args, error, message):
    # Errors used to name 'Y', 'weights' or 'the projected features' (arguments of the
    # core the user never passed), or escape from a matmul without the op's name.
    with pytest.raises(error, match=f"^matbp.{objective.__name__}: {message}") as info:
        objective(*args)
    if error is ValueError:
        assert isinstance(info.value, RuntimeError)  # the documented contract for bad input


def test_normalized_cuts_loss_errors():
    with pytest.raises(ValueError, match="matbp.nn.NormalizedCutsLoss: argument 'rtol' must be None or"):
        matbp.nn.NormalizedCutsLoss("j2", rtol=-1e-3)
    with pytest.raises(ValueError, match="matbp.nn.NormalizedCutsLoss: argument 'labels' must have shape"):
        matbp.nn.NormalizedCutsLoss("j1")(X10, L10[:9])


@pytest.mark.parametrize("objective", [matbp.ncut_j1, matbp.ncut_j2], ids=["j1", "j2"])
@pytest.mark.parametrize("with_lambda", [False, True], ids=["I", "Lambda"])
def test_objectives_are_exact_at_tiny_and_huge_scales(objective, with_lambda):
    # W = X Λ Xᵀ underflows at 1e-160 (NaN gradients, and J1 raised "degrees must
    # be positive") and overflows at 1e300. J is invariant to X -> cX, the gradient scales as 1/c.
    X = features(30, 4, seed=49, batch=(2,))
    labels = random_labels(30, [0, 1, 2], seed=50, batch=(2,))
    Lam = spd(4, seed=51) if with_lambda else None

    def run(X, Lam):
        Xr = X.clone().requires_grad_()
        Lr = None if Lam is None else Lam.clone().requires_grad_()
        J = objective(Xr, labels, Lr)
        J.sum().backward()
        return J.detach(), Xr.grad, None if Lam is None else Lr.grad

    J0, gX0, gL0 = run(X, Lam)
    # powers of two (1.5e-160, 8.2e149, 1e-301): bitwise the same numbers
    for e in (-531, 498, -1000):
        c = 2.0**e
        J, gX, gL = run(X * c, None if Lam is None else Lam * 2.0**-e)
        assert torch.equal(J, J0) and torch.equal(gX * c, gX0)
        if with_lambda:
            assert torch.equal(gL * 2.0**-e, gL0)
    # other scales, different per image: equal to rounding
    scale = torch.tensor([1e-160, 1e150], dtype=torch.float64).view(2, 1, 1)
    J, gX, _ = run(X * scale, Lam)
    torch.testing.assert_close(J, J0, rtol=1e-12, atol=0)
    torch.testing.assert_close(gX * scale, gX0, rtol=1e-10, atol=0)
    if objective is matbp.ncut_j2:
        # max|X| = max|Λ| = 1: no rescaling, the same numbers as the core's
        Xn = (X / X.abs().amax((-2, -1), keepdim=True)).requires_grad_()
        Ln = None if Lam is None else Lam / Lam.abs().max()
        core = torch.ops.matbp.ncut_projector_distance_with_basis(Xn, torch.ones(2, 30, dtype=torch.float64), labels, Ln, None)[0]
        (gcore,) = torch.autograd.grad(core.sum(), Xn)
        J, gX, _ = run(Xn.detach(), Ln)
        assert torch.equal(J, core.detach()) and torch.equal(gX, gcore)


def test_tiny_scale_under_torch_compile():
    X = features(16, 3, seed=52, batch=(2,)) * 1e-160
    labels = random_labels(16, [0, 1, 2], seed=53, batch=(2,))

    @torch.compile(fullgraph=True, backend="aot_eager")
    def loss(X):
        return matbp.ncut_j1(X, labels).sum() + matbp.ncut_j2(X, labels).sum()

    Xa = X.clone().requires_grad_()
    loss(Xa).backward()
    Xb = X.clone().requires_grad_()
    (matbp.ncut_j1(Xb, labels).sum() + matbp.ncut_j2(Xb, labels).sum()).backward()
    assert torch.isfinite(Xa.grad).all()
    torch.testing.assert_close(Xa.grad, Xb.grad, rtol=1e-10, atol=0)
