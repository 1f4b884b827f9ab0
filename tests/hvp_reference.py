"""High-precision (mpmath) references for second derivatives: Hessian-vector
products of sym_fn, o2p_log and the projector, independent of matbp's formulas.

Each reference is the HVP of a scalar <W, F(x)>: d/dt ∇_x <W, F(x + tE)> at
t = 0. The default method ("fd") is a central difference in t of the
first-order gradient, computed in mpmath at ``dps + 30`` digits (80 for the
default dps = 50) with step 10^-(working digits / 4) (1e-20): the truncation
error is O(step²) = 1e-40 and the rounding error 1e-80 / 1e-20, times what
the eigenvalue gaps of the input cost (a gap of 1e-16 costs 16 digits of the
first divided differences). The first-order gradient is Daleckii–Krein in an
mpmath eigendecomposition (``mpmath.eigsy``): ∇ = Q (F¹ ∘ QᵀWQ) Qᵀ with the
first divided differences F¹_ij = (f(λ_i) − f(λ_j)) / (λ_i − λ_j), and
f'((λ_i + λ_j)/2) where |λ_i − λ_j| is below 10^-(working digits / 2) (an
error O(gap²), below the working precision).

Two independent checks (run ``python tests/hvp_reference.py``; the test file
runs small versions of them):

- sym_fn, method="block": no eigendecomposition and no divided differences.
  For the block upper triangular X = [[A, W, 0], [0, A, E], [0, 0, A]],
  f(X)'s (1, 3) block is Σ_k f[λ_i, λ_k, λ_j] W̃_ik Ẽ_kj (in A's eigenbasis),
  so D²f(A)[W, E] = f(X)₁₃ + f(X')₁₃ with W and E swapped in X'. f(X) by
  mpmath's own expm, logm, sqrtm, powm.
- o2p_log and the projector: the mixed second difference
  [s(x + hE + hE₂) − s(x + hE − hE₂) − s(x − hE + hE₂) + s(x − hE − hE₂)] / 4h²
  of s = <W, F(·)> (F from o2p_reference's _mp_o2p, or the spectral
  projector from an mpmath eigendecomposition), against <E₂, HVP>.

Conventions: the inputs are float64 tensors of one matrix (no batch); the
result is a float64 tensor. The symmetric matrix A is read from its lower
triangle (as matbp reads it); W is symmetrised (<W, F> = <sym W, F> for a
symmetric F); the direction E of sym_fn and projector is symmetrised too
(pass a symmetric E: that is the direction matbp's HVP takes when A + tE is
symmetric).
"""

import math

import mpmath
import torch

from o2p_reference import _mp_matrix, _mp_o2p

F64 = torch.float64
SPECTRAL_FNS = ("log", "sqrt", "pow", "exp")


# ----------------------------------------------------------------- helpers


def _to_torch(M):
    return torch.tensor([[float(M[i, j]) for j in range(M.cols)] for i in range(M.rows)], dtype=F64)


def _sym(M):
    return (M + M.T) / 2


def _lower(A):
    """The symmetric matrix whose lower triangle is A's (mpmath, exact)."""
    n = A.rows
    S = mpmath.matrix(n, n)
    for i in range(n):
        for j in range(i + 1):
            S[i, j] = S[j, i] = A[i, j]
    return S


def _check_square(A, name):
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be one square matrix, got shape {tuple(A.shape)}")


def _working_dps(dps):
    return int(dps) + 30


def _step(work):
    return mpmath.mpf(10) ** (-(work // 4))


def _tie(work, lam):
    return mpmath.mpf(10) ** (-(work // 2)) * max(mpmath.mpf(1), max(abs(x) for x in lam))


def _eig(A):
    E, Q = mpmath.eigsy(A)
    return [E[i] for i in range(A.rows)], Q


def _scalar_fns(fn, p):
    """(f, f') in mpmath for one of matbp.sym_fn's functions."""
    if fn not in SPECTRAL_FNS:
        raise ValueError(f"fn must be one of {SPECTRAL_FNS}, got {fn!r}")
    if (fn == "pow") != (p is not None):
        raise ValueError("p is required for fn='pow' and only for it")
    if fn == "log":
        return mpmath.log, lambda x: 1 / x
    if fn == "sqrt":
        return mpmath.sqrt, lambda x: 1 / (2 * mpmath.sqrt(x))
    if fn == "exp":
        return mpmath.exp, mpmath.exp
    q = mpmath.mpf(float(p))  # the float64 exponent matbp receives, exactly
    return (lambda x: mpmath.power(x, q)), (lambda x: q * mpmath.power(x, q - 1))


def _matrix_fn(fn, p):
    """f of a general (non-symmetric) square mpmath matrix, by mpmath's own routines."""
    if fn == "log":
        return mpmath.logm
    if fn == "sqrt":
        return mpmath.sqrtm
    if fn == "exp":
        return mpmath.expm
    q = mpmath.mpf(float(p))
    return lambda M: mpmath.powm(M, q)


def _daleckii_krein(A, W, f, fprime, work):
    """∇_A <W, f(A)> = Q (F¹ ∘ QᵀWQ) Qᵀ for symmetric A and W (mpmath)."""
    lam, Q = _eig(A)
    tie = _tie(work, lam)
    M = Q.T * W * Q
    n = A.rows
    for i in range(n):
        for j in range(n):
            a, b = lam[i], lam[j]
            dd = fprime((a + b) / 2) if abs(a - b) <= tie else (f(a) - f(b)) / (a - b)
            M[i, j] *= dd
    return Q * M * Q.T


def _central_difference(grad, x, E, work):
    h = _step(work)
    return (grad(x + h * E) - grad(x - h * E)) / (2 * h)


# ------------------------------------------------------------------ sym_fn


def sym_fn_gradient_reference(A, W, fn, p=None, dps=50):
    """∇_A <W, f(A)> (first order, Daleckii–Krein in mpmath), float64 out."""
    _check_square(A, "A")
    f, fprime = _scalar_fns(fn, p)
    work = _working_dps(dps)
    with mpmath.workdps(work):
        R = _daleckii_krein(_lower(_mp_matrix(A)), _sym(_mp_matrix(W)), f, fprime, work)
        return _to_torch(_sym(R))


def _sym_fn_hvp_mp(A, W, E, fn, p, dps, method):
    f, fprime = _scalar_fns(fn, p)
    work = _working_dps(dps)
    with mpmath.workdps(work):
        Am, Wm, Em = _lower(_mp_matrix(A)), _sym(_mp_matrix(W)), _sym(_mp_matrix(E))
        if method == "fd":
            R = _central_difference(lambda X: _daleckii_krein(X, Wm, f, fprime, work), Am, Em, work)
        elif method == "block":
            fm = _matrix_fn(fn, p)
            n = A.shape[0]

            def upper_block(H, K):
                X = mpmath.zeros(3 * n, 3 * n)
                for i in range(n):
                    for j in range(n):
                        for b in range(3):
                            X[b * n + i, b * n + j] = Am[i, j]
                        X[i, n + j] = H[i, j]
                        X[n + i, 2 * n + j] = K[i, j]
                F = fm(X)
                T = mpmath.matrix(n, n)
                for i in range(n):
                    for j in range(n):
                        T[i, j] = F[i, 2 * n + j]
                return T

            R = upper_block(Wm, Em) + upper_block(Em, Wm)
        else:
            raise ValueError(f"method must be 'fd' or 'block', got {method!r}")
        return _sym(R)


def sym_fn_hvp_reference(A, W, E, fn, p=None, dps=50, method="fd"):
    """D²f(A)[W, E] = d/dt ∇_A <W, f(A + tE)> at t = 0, for one symmetric
    float64 matrix A (n, n) (lower triangle read), a weight W and a symmetric
    direction E; f one of matbp.sym_fn's "log", "sqrt", "pow" (exponent p),
    "exp". Accurate to about ``dps`` digits relative, also at exactly repeated
    or clustered eigenvalues of A. ``method``: "fd" (central difference of the
    Daleckii–Krein gradient, fast) or "block" (f of a 3n×3n block triangular
    matrix; slow, the independent check). Returns a float64 (n, n) tensor."""
    _check_square(A, "A")
    with mpmath.workdps(_working_dps(dps)):
        return _to_torch(_sym_fn_hvp_mp(A, W, E, fn, p, dps, method))


# ----------------------------------------------------------------- o2p_log


def _o2p_gradient(X, W, eps, work):
    """∇_X <W, log(XᵀX + eps I)> = 2 X Dlog(XᵀX + eps I)[W] (W symmetric)."""
    A = X.T * X
    for i in range(A.rows):
        A[i, i] += mpmath.mpf(eps)
    return 2 * X * _daleckii_krein(A, W, mpmath.log, lambda x: 1 / x, work)


def o2p_log_gradient_reference(X, W, eps, dps=50):
    """∇_X <W, log(XᵀX + eps I)> for one X (m, d), float64 out."""
    work = _working_dps(dps)
    with mpmath.workdps(work):
        return _to_torch(_o2p_gradient(_mp_matrix(X), _sym(_mp_matrix(W)), float(eps), work))


def _o2p_log_hvp_mp(X, W, E, eps, dps):
    work = _working_dps(dps)
    with mpmath.workdps(work):
        Xm, Em, Wm = _mp_matrix(X), _mp_matrix(E), _sym(_mp_matrix(W))
        return _central_difference(lambda Y: _o2p_gradient(Y, Wm, float(eps), work), Xm, Em, work)


def o2p_log_hvp_reference(X, W, E, eps, dps=50):
    """d/dt ∇_X <W, log((X + tE)ᵀ(X + tE) + eps I)> at t = 0 for one float64
    X (m, d), weight W (d, d) and direction E (m, d); an (m, d) float64
    tensor, accurate to about ``dps`` digits (any m, d; rank-deficient X and
    repeated eigenvalues of XᵀX included: eps > 0 keeps log smooth)."""
    if X.dim() != 2 or E.shape != X.shape or W.shape != (X.shape[1], X.shape[1]):
        raise ValueError(f"shapes X {tuple(X.shape)}, W {tuple(W.shape)}, E {tuple(E.shape)} do not fit")
    with mpmath.workdps(_working_dps(dps)):
        return _to_torch(_o2p_log_hvp_mp(X, W, E, eps, dps))


# --------------------------------------------------------------- projector


def _rank(lam, rtol):
    big = max(abs(x) for x in lam)
    return sum(1 for x in lam if abs(x) > rtol * big)


def _projector_gradient(A, W, rank):
    """∇_A <W, Π(A)> for the spectral projector Π onto the `rank` eigenvalues
    of largest |λ|: Daleckii–Krein with the step function h (1 on those, 0 on
    the others), h[λ_i, λ_j] = (h_i − h_j) / (λ_i − λ_j)."""
    lam, Q = _eig(A)
    order = sorted(range(len(lam)), key=lambda i: -abs(lam[i]))
    h = [0] * len(lam)
    for i in order[:rank]:
        h[i] = 1
    M = Q.T * W * Q
    n = A.rows
    for i in range(n):
        for j in range(n):
            M[i, j] *= 0 if h[i] == h[j] else (h[i] - h[j]) / (lam[i] - lam[j])
    return Q * M * Q.T


def _spectral_projector(A, rank):
    lam, Q = _eig(A)
    order = sorted(range(len(lam)), key=lambda i: -abs(lam[i]))
    n = A.rows
    P = mpmath.zeros(n, n)
    for k in order[:rank]:
        for i in range(n):
            for j in range(n):
                P[i, j] += Q[i, k] * Q[j, k]
    return P


def _projector_rank(Am, rtol, rank):
    if rank is not None:
        return int(rank)
    n = Am.rows
    rtol = n * 2.0**-52 if rtol is None else float(rtol)  # matbp's default: n·eps
    return _rank(_eig(Am)[0], mpmath.mpf(rtol))


def projector_hvp_reference(A, W, E, rtol=None, rank=None, dps=50):
    """d/dt ∇_A <W, Π(A + tE)> at t = 0 for the projector Π(A) = Σ q qᵀ over
    the eigenvalues with |λ| > rtol·max|λ| (rtol default n·eps, as
    matbp.projector; or the ``rank`` eigenvalues of largest |λ| if given),
    taken as the spectral projector onto that group, which is smooth while
    the group stays separated from the rest: the second derivative of the
    rank-r projector with the null eigenvalues of A exactly 0 when A's null
    space is exact (A = B Bᵀ, B (n, r)). Along directions that keep the rank
    (E = B Fᵀ + F Bᵀ), this is also the derivative of the paper's
    rank-locally-constant gradient sym((I − Π) W A⁺ + A⁺ W (I − Π)).
    Float64 (n, n) tensor out."""
    _check_square(A, "A")
    work = _working_dps(dps)
    with mpmath.workdps(work):
        Am, Wm, Em = _lower(_mp_matrix(A)), _sym(_mp_matrix(W)), _sym(_mp_matrix(E))
        r = _projector_rank(Am, rtol, rank)
        R = _central_difference(lambda X: _projector_gradient(X, Wm, r), Am, Em, work)
        return _to_torch(_sym(R))


# ------------------------------------------------- the independent checks


def _mixed_second_difference(s, x, E, E2, work):
    """∂²/∂a∂b s(x + aE + bE2) at 0 by the 4-point formula (mpmath)."""
    h = mpmath.mpf(10) ** (-(work // 4))
    return (s(x + h * E + h * E2) - s(x + h * E - h * E2) - s(x - h * E + h * E2) + s(x - h * E - h * E2)) / (
        4 * h * h)


def _inner(A, B):
    return mpmath.fsum(A[i, j] * B[i, j] for i in range(A.rows) for j in range(A.cols))


def o2p_log_hvp_check(X, W, E, E2, eps, dps=50):
    """(<E2, HVP> from the reference, the same from a 4-point mixed second
    difference of <W, C> with C from o2p_reference._mp_o2p at dps + 50
    digits), as mpf numbers: two independent ways."""
    with mpmath.workdps(_working_dps(dps)):
        R = _o2p_log_hvp_mp(X, W, E, eps, dps)
        got = _inner(R, _mp_matrix(E2))
    work = dps + 50
    with mpmath.workdps(work):
        Xm, Em, E2m, Wm = _mp_matrix(X), _mp_matrix(E), _mp_matrix(E2), _mp_matrix(W)
        want = _mixed_second_difference(lambda Y: _inner(Wm, _mp_o2p(Y, eps, work)), Xm, Em, E2m, work)
    return got, want


def projector_hvp_check(A, W, E, E2, rtol=None, rank=None, dps=50):
    """(<E2, HVP> from projector_hvp_reference, the same from a 4-point mixed
    second difference of <W, Π> with Π from an mpmath eigendecomposition at
    dps + 50 digits)."""
    work = _working_dps(dps)
    with mpmath.workdps(work):
        Am, Wm, Em = _lower(_mp_matrix(A)), _sym(_mp_matrix(W)), _sym(_mp_matrix(E))
        r = _projector_rank(Am, rtol, rank)
        R = _central_difference(lambda X: _projector_gradient(X, Wm, r), Am, Em, work)
        got = _inner(_sym(R), _sym(_mp_matrix(E2)))
    work = dps + 50
    with mpmath.workdps(work):
        Am, Wm, Em, E2m = _lower(_mp_matrix(A)), _mp_matrix(W), _sym(_mp_matrix(E)), _sym(_mp_matrix(E2))
        want = _mixed_second_difference(lambda Y: _inner(Wm, _spectral_projector(Y, r)), Am, Em, E2m, work)
    return got, want


def sym_fn_hvp_methods_disagreement(A, W, E, fn, p=None, dps=50):
    """max |fd − block| / max |block| over the entries, at ``dps + 30`` digits
    (an mpf): the two independent ways to compute D²f(A)[W, E]."""
    with mpmath.workdps(_working_dps(dps)):
        R1 = _sym_fn_hvp_mp(A, W, E, fn, p, dps, "fd")
        R2 = _sym_fn_hvp_mp(A, W, E, fn, p, dps, "block")
        n = R1.rows
        diff = max(abs(R1[i, j] - R2[i, j]) for i in range(n) for j in range(n))
        scale = max(abs(R2[i, j]) for i in range(n) for j in range(n))
        return diff / scale


# ------------------------------------- torch's eigh composition (for tests)


def torch_eigh_fn(fn, p=None):
    """The scalar f in torch (float64) for the eigh composition."""
    if fn == "pow":
        return lambda L: L.pow(p)
    return getattr(torch, fn)


def eigh_sym_fn(A, fn, p=None):
    """Q diag(f(L)) Qᵀ through torch.linalg.eigh (autograd: torch's eigh backward)."""
    L, Q = torch.linalg.eigh(A)
    return (Q * torch_eigh_fn(fn, p)(L).unsqueeze(-2)) @ Q.mT


def eigh_o2p_log(X, eps):
    d = X.shape[-1]
    return eigh_sym_fn(X.mT @ X + eps * torch.eye(d, dtype=X.dtype), "log")


def double_grad_hvp(scalar_fn, x, v):
    """d/dt ∇ scalar_fn(x + tv) by two torch.autograd.grad calls (the second
    without create_graph: a pure double backward)."""
    xr = x.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(scalar_fn(xr), xr, create_graph=True)
    (hv,) = torch.autograd.grad(g, xr, v)
    return hv


def rel_err(got, want):
    """||got − want||_F / ||want||_F (inf if got is not finite)."""
    if not torch.isfinite(got).all():
        return math.inf
    return ((got - want).norm() / want.norm()).item()


# --------------------------------------------------------------------- main


def _random_orthogonal(n, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    return q


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _symmetric(M):
    return (M + M.mT) / 2


def _with_spectrum(lam, seed):
    lam = torch.tensor(lam, dtype=F64)
    q = _random_orthogonal(lam.numel(), seed)
    return _symmetric((q * lam) @ q.mT)


def main():
    import time

    print("hvp_reference self-checks (50-digit references)")
    print("(i) two independent ways, relative disagreement:")
    for fn, p, lam in [("log", None, [1.0, 1.0, 1.0, 2.0, 3.0]), ("sqrt", None, [0.5, 1.0, 1.0 + 1e-12, 2.0, 4.0]),
                       ("exp", None, [-1.0, 0.5, 0.5, 1.0, 2.0]), ("pow", 2.5, [0.3, 1.0, 1.5, 2.0, 3.0]),
                       ("pow", -1.5, [0.5, 0.5, 1.0, 2.0, 2.0])]:
        A = _with_spectrum(lam, seed=1)
        W, E = _randn(5, 5, seed=2), _symmetric(_randn(5, 5, seed=3))
        t = time.perf_counter()
        d = sym_fn_hvp_methods_disagreement(A, W, E, fn, p)
        print(f"  sym_fn {fn:>4} p={p}  spectrum {lam}: fd vs block {mpmath.nstr(d, 3)} "
              f"[{time.perf_counter() - t:.1f} s]")
    for shape, rank in [((3, 5), 3), ((6, 4), 4), ((6, 4), 2), ((3, 5), 2)]:
        m, d = shape
        X = _randn(m, rank, seed=4) @ _randn(rank, d, seed=5) / d**0.5
        W, E, E2 = _randn(d, d, seed=6), _randn(m, d, seed=7), _randn(m, d, seed=8)
        got, want = o2p_log_hvp_check(X, W, E, E2, 1e-3)
        print(f"  o2p_log X {m}x{d} rank {rank}: <E2, HVP> reference vs mixed second difference of _mp_o2p "
              f"{mpmath.nstr(abs(got - want) / abs(want), 3)}")
    for n, r in [(5, 3), (4, 3)]:
        B, F = _randn(n, r, seed=9), _randn(n, r, seed=10)
        A = B @ B.mT
        W, E2 = _randn(n, n, seed=11), _symmetric(_randn(n, n, seed=12))
        for kind, E in [("tangent", B @ F.mT + F @ B.mT), ("any", _symmetric(_randn(n, n, seed=13)))]:
            got, want = projector_hvp_check(A, W, E, E2, rtol=1e-8)
            print(f"  projector n={n} rank {r} direction {kind}: <E2, HVP> vs mixed second difference "
                  f"{mpmath.nstr(abs(got - want) / abs(want), 3)}")

    print("(ii) against torch's float64 double backward through eigh (separated spectra), relative error:")
    for fn, p, lam in [("log", None, [0.5, 1.0, 1.7, 2.6, 4.0]), ("sqrt", None, [0.5, 1.0, 1.7, 2.6, 4.0]),
                       ("pow", 0.5, [0.5, 1.0, 1.7, 2.6, 4.0]), ("pow", 2.5, [0.5, 1.0, 1.7, 2.6, 4.0]),
                       ("pow", -1.5, [0.5, 1.0, 1.7, 2.6, 4.0]), ("exp", None, [-1.0, -0.2, 0.5, 1.1, 2.0])]:
        A = _with_spectrum(lam, seed=20)
        W, E = _randn(5, 5, seed=21), _symmetric(_randn(5, 5, seed=22))
        ref = sym_fn_hvp_reference(A, W, E, fn, p)
        hv = double_grad_hvp(lambda B: (W * eigh_sym_fn(_symmetric(B), fn, p)).sum(), A, E)
        print(f"  sym_fn {fn:>4} p={p}: {rel_err(hv, ref):.2e}")
    for m, d in [(6, 4), (7, 3)]:
        X, W, E = _randn(m, d, seed=23), _randn(d, d, seed=24), _randn(m, d, seed=25)
        ref = o2p_log_hvp_reference(X, W, E, 1e-3)
        hv = double_grad_hvp(lambda Y: (W * eigh_o2p_log(Y, 1e-3)).sum(), X, E)
        print(f"  o2p_log X {m}x{d}: {rel_err(hv, ref):.2e}")
    B = _randn(4, 3, seed=26)
    A = B @ B.mT
    W, E = _randn(4, 4, seed=27), _symmetric(_randn(4, 4, seed=28))

    def eigh_projector(M):
        L, Q = torch.linalg.eigh(_symmetric(M))
        return Q[:, 1:] @ Q[:, 1:].mT  # one null eigenvalue, the lowest

    ref = projector_hvp_reference(A, W, E, rtol=1e-8)
    hv = double_grad_hvp(lambda M: (W * eigh_projector(M)).sum(), A, E)
    print(f"  projector n=4 rank 3 (one null eigenvalue): {rel_err(hv, ref):.2e}")


if __name__ == "__main__":
    main()
