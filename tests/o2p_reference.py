"""High-precision (mpmath) reference for C = log(XᵀX + eps·I) and its
directional derivatives, independent of matbp's formulas."""

import mpmath
import torch


def _mp_log_spd(A, dps):
    with mpmath.workdps(dps):
        E, Q = mpmath.eigsy(A)
        n = A.rows
        L = mpmath.matrix(n, n)
        for i in range(n):
            L[i, i] = mpmath.log(E[i])
        return Q * L * Q.T


def _mp_matrix(X):
    rows, cols = X.shape
    M = mpmath.matrix(rows, cols)
    for i in range(rows):
        for j in range(cols):
            M[i, j] = mpmath.mpf(float(X[i, j]))
    return M


def _mp_o2p(Xmp, eps, dps):
    with mpmath.workdps(dps):
        d = Xmp.cols
        A = Xmp.T * Xmp
        for i in range(d):
            A[i, i] += mpmath.mpf(eps)
        return _mp_log_spd(A, dps)


def o2p_log_reference(X, eps, dps=50):
    """C for one matrix X (m, d), float64 tensor out."""
    C = _mp_o2p(_mp_matrix(X), eps, dps)
    d = X.shape[1]
    return torch.tensor([[float(C[i, j]) for j in range(d)] for i in range(d)], dtype=torch.float64)


def o2p_log_directional_reference(X, E, G, eps, dps=80, step=1e-30):
    """d/dt <G, log((X+tE)ᵀ(X+tE) + eps I)> at t = 0, by a central difference
    at `dps` digits (truncation error O(step²))."""
    with mpmath.workdps(dps):
        Xmp, Emp = _mp_matrix(X), _mp_matrix(E)
        h = mpmath.mpf(step)
        plus = _mp_o2p(Xmp + h * Emp, eps, dps)
        minus = _mp_o2p(Xmp - h * Emp, eps, dps)
        d = X.shape[1]
        total = mpmath.mpf(0)
        for i in range(d):
            for j in range(d):
                total += mpmath.mpf(float(G[i, j])) * (plus[i, j] - minus[i, j])
        return float(total / (2 * h))
