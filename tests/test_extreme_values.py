"""Values and gradients at the ends of the float64 range: each case returns
the correct value or raises a clear error naming the op and the matrix —
never NaN, and never a value that is silently wrong."""

import math

import pytest
import torch

import matbp

F64 = torch.float64


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def constant_o2p(m, d, c, eps):
    """log(XᵀX + eps I) of X = c·ones(m, d) in closed form: XᵀX = m c² 11ᵀ has
    the one eigenvalue m d c² along 1/√d, the rest are 0."""
    return math.log(eps) * torch.eye(d, dtype=F64) + math.log1p(m * d * c * c / eps) / d * torch.ones(d, d, dtype=F64)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3)], ids=["rows", "cols"])
@pytest.mark.parametrize("c", [1.0, 1e15, 1e20, 1e150])
def test_o2p_log_large_rank_deficient_is_exact(shape, c):
    # Before: C00 = 10.07 against 8.83 at 1e15 and 5.7e9 at 1e20: the Gram
    # eigensolver's noise (eps * ||X||^2) in the null space, amplified by 1/eps.
    X = torch.full((1, *shape), c, dtype=F64)
    assert rel(matbp.o2p_log(X)[0], constant_o2p(*shape, c, 1e-3)) < 1e-14


@pytest.mark.parametrize("shape", [(3, 5), (5, 3)], ids=["rows", "cols"])
def test_o2p_log_float32_near_its_limit(shape):
    X = torch.full((1, *shape), 3e38, dtype=torch.float32)
    C = matbp.o2p_log(X)
    assert C.dtype == torch.float32 and torch.isfinite(C).all()
    want = constant_o2p(*shape, float(torch.tensor(3e38, dtype=torch.float32)), 1e-3)
    assert rel(C[0].double(), want) < 1e-6


def test_o2p_log_eps_must_be_a_normal_number():
    X = torch.randn(2, 3, 5, dtype=F64)
    for eps in (1e-310, 0.0, -1.0, math.inf, math.nan):
        with pytest.raises(RuntimeError, match="matbp.o2p_log: argument 'eps' must be a positive finite number"):
            matbp.o2p_log(X, eps)


@pytest.mark.parametrize("shape", [(3, 6), (6, 3)], ids=["rows", "cols"])
@pytest.mark.parametrize("eps", [1e-300, 1e-200])
def test_o2p_log_tiny_eps_gradient_is_finite_and_right(shape, eps):
    # h[0, 0] = -1/(2 eps^2) overflows; the null directions it multiplies are 0.
    g = torch.Generator().manual_seed(0)
    X = torch.randn(*shape, generator=g, dtype=F64)
    G = torch.randn(shape[1], shape[1], generator=g, dtype=F64)
    E = torch.randn(*shape, generator=g, dtype=F64)
    Xr = X.clone().requires_grad_()
    (matbp.o2p_log(Xr, eps) * G).sum().backward()
    assert torch.isfinite(Xr.grad).all()
    step = 1e-6
    fd = ((matbp.o2p_log(X + step * E, eps) - matbp.o2p_log(X - step * E, eps)) * G).sum() / (2 * step)
    assert abs((Xr.grad * E).sum() - fd) <= 1e-6 * abs(fd)


def test_sym_fn_overflow_raises_naming_the_matrix():
    A = torch.stack([torch.eye(2, dtype=F64), torch.tensor([[800.0, 0.1], [0.1, 1.0]], dtype=F64)])
    with pytest.raises(RuntimeError, match=r"matbp.sym_fn: fn='exp' of matrix 1 of the flattened batch of 'A' overflows float64"):
        matbp.sym_fn(A, "exp")
    with pytest.raises(RuntimeError, match=r"matbp.sym_fn: fn='pow' of matrix 0 .* overflows float64"):
        matbp.sym_fn(torch.diag(torch.tensor([0.01, 2.0], dtype=F64)), "pow", -400)


def test_sym_fn_float32_overflow_is_inf_without_nan():
    F = matbp.sym_fn(torch.diag(torch.tensor([100.0, 2.0])), "exp")
    assert F[0, 0] == math.inf and not torch.isnan(F).any()
    assert F[1, 1].item() == pytest.approx(math.exp(2.0))


def test_sym_fn_gradient_overflow_raises_not_nan():
    # d log(a)/da = 1/a = 1e310 at a subnormal eigenvalue: beyond float64.
    A = torch.diag(torch.tensor([1e-310, 2.0], dtype=F64)).requires_grad_()
    with pytest.raises(RuntimeError, match="matbp.sym_fn_backward: the gradient of matrix 0 of the flattened batch overflows float64"):
        matbp.sym_fn(A, "log")[0, 0].backward()
    # Where the true gradient is finite it is returned, not NaN.
    A.grad = None
    matbp.sym_fn(A, "log")[1, 1].backward()
    assert torch.equal(A.grad, torch.diag(torch.tensor([0.0, 0.5], dtype=F64)))


@pytest.mark.parametrize("scale", [1e-155, 1e-300, 1e150])
def test_svd_gradient_at_extreme_scales(scale):
    # f(U) = <U Uᵀ, G> is invariant to the scale of X, so its gradient scales
    # as 1/scale: K ~ 1/s² overflowed below s ~ 1e-154 (NaN before).
    g = torch.Generator().manual_seed(1)
    X = torch.randn(2, 5, 3, generator=g, dtype=F64)
    G = torch.randn(5, 5, generator=g, dtype=F64)

    def grad(Xs):
        Xs = Xs.clone().requires_grad_()
        U, S, V = matbp.svd(Xs)
        ((U @ U.mT) * G).sum().backward()
        return Xs.grad

    reference = grad(X)
    got = grad(X * scale) * scale
    assert torch.isfinite(got).all()
    assert rel(got, reference) < 1e-12


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_sym_eig_gradient_at_extreme_scales(scale):
    g = torch.Generator().manual_seed(2)
    A = torch.randn(2, 4, 4, generator=g, dtype=F64)
    A = A + A.mT
    G = torch.randn(4, 4, generator=g, dtype=F64)

    def grad(As, s):
        # Scale-invariant: the projector onto two eigenvectors, and L / s.
        As = As.clone().requires_grad_()
        L, V = matbp.sym_eig(As)
        (((V[..., :2] @ V[..., :2].mT) * G).sum() + (L * G.diagonal()).sum() / s).backward()
        return As.grad

    assert rel(grad(A * scale, scale) * scale, grad(A, 1.0)) < 1e-12


def test_sym_eig_gradient_overflow_raises_not_nan():
    # Eigenvalue gaps ~1e-310: the true gradient ~1/gap is beyond float64.
    A = torch.tensor([[1.0, 0.3], [0.3, -1.0]], dtype=F64) * 1e-310
    A.requires_grad_()
    L, V = matbp.sym_eig(A)
    with pytest.raises(RuntimeError, match="matbp.sym_eig_backward: the gradient of matrix 0 .* overflows float64"):
        V[0, 0].backward()
