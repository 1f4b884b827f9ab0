#pragma once

// Entries of the K-matrix adjoints of the eigendecomposition and the SVD
// (Ionescu et al., eqs. 11-14 and Prop. 1), with the tie policy of the
// docs/design.md §4: at (numerically) equal eigenvalues the eigenvectors are not
// differentiable, and the coupling weight is set to 0 so the gradient stays
// finite. That makes the gradient of a composition through (L, V) approximate
// at ties; the fused spectral ops (divided differences) are exact there.

#include <cstdint>

#include "host_device.h"

namespace matbp::math {

// n unit_roundoff max_abs: how far rounding at that precision (of the input,
// or of a backward-stable solver) moves the eigenvalues of an n x n matrix.
template <typename T>
MATBP_HOST_DEVICE inline T rounding_tolerance(T max_abs, int64_t n, T unit_roundoff) {
  return T(n > 1 ? n : 1) * unit_roundoff * max_abs;
}

// Two eigenvalues (singular values) closer than this are treated as tied: a
// backward-stable solver cannot resolve gaps below about n eps ||A||.
template <typename T>
MATBP_HOST_DEVICE inline T tie_tolerance(T max_abs, int64_t n) {
  return rounding_tolerance(max_abs, n, machine_epsilon<T>());
}

// F_ij = 1 / (lambda_j - lambda_i), 0 on the diagonal and at ties.
template <typename T>
MATBP_HOST_DEVICE inline T eig_adjoint_weight(T lambda_i, T lambda_j, T tie_tol) {
  const T gap = lambda_j - lambda_i;
  return abs(gap) <= tie_tol ? T(0) : T(1) / gap;
}

// Off-diagonal entry of the inner EIG adjoint F o skew(M), skew(M) = (M - M^T)/2,
// M = V^T gV; the diagonal carries gL instead.
template <typename T>
MATBP_HOST_DEVICE inline T eig_adjoint_entry(T m_ij, T m_ji, T lambda_i, T lambda_j, T tie_tol) {
  return eig_adjoint_weight(lambda_i, lambda_j, tie_tol) * T(0.5) * (m_ij - m_ji);
}

// K_ij = 1 / (s_j^2 - s_i^2), formed as a product so close values keep their
// relative accuracy; 0 on the diagonal and at ties.
template <typename T>
MATBP_HOST_DEVICE inline T svd_adjoint_weight(T s_i, T s_j, T tie_tol) {
  const T gap = s_j - s_i;
  return abs(gap) <= tie_tol ? T(0) : T(1) / (gap * (s_j + s_i));
}

// 1/s where s is resolvable, 0 for (numerically) zero singular values: the
// pseudo-inverse keeps the (I - U U^T) gU S^-1 terms finite at rank loss.
template <typename T>
MATBP_HOST_DEVICE inline T pseudo_inverse(T s, T tie_tol) {
  return s > tie_tol ? T(1) / s : T(0);
}

// Off-diagonal entry (i != j) of the inner SVD adjoint
//   K o (M - M^T) S + S K o (N - N^T),  M = U^T gU, N = V^T gV,
// as [(m_ij - m_ji) s_j / (s_i + s_j) + (n_ij - n_ji) s_i / (s_i + s_j)] / (s_j - s_i):
// K_ij itself, ~1/s^2, overflows for singular values below ~1e-154 where
// the entry (~1/s) is still finite.
template <typename T>
MATBP_HOST_DEVICE inline T svd_adjoint_entry(T m_ij, T m_ji, T n_ij, T n_ji, T s_i, T s_j,
                                             T tie_tol) {
  const T gap = s_j - s_i;
  if (abs(gap) <= tie_tol) return T(0);
  const T sum = s_i + s_j;
  return ((m_ij - m_ji) * (s_j / sum) + (n_ij - n_ji) * (s_i / sum)) / gap;
}

}  // namespace matbp::math
