#pragma once

// Scalar math of the second-order pooling layer C = log(X^T X + eps I).
//
// The rows path works with the Gram matrix K = X X^T = U diag(s) U^T and
//   h(s) = log1p(s / eps) / s = log[eps, eps + s],  h(0) = 1 / eps,
// so that C = log(eps) I + X^T U h(s) U^T X. Its backward needs the divided
// differences of h, h[s_i, s_j] = log[eps, eps + s_i, eps + s_j] (a second
// divided difference of log), evaluated here without cancellation:
//   h(s) = phi(s / eps) / eps,  phi(x) = log1p(x) / x,
//   h[s_i, s_j] = phi[x_i, x_j] / eps^2.

#include <cstdint>

#include "divided_differences.h"
#include "host_device.h"

namespace matbp::math {

// Beyond this s / eps (tiny eps), log1p(s / eps) = log(s) - log(eps) to
// working precision, and s / eps itself may overflow.
constexpr double kO2pLogRatioLimit = 1e300;

// h(s) = log1p(s / eps) / s, s >= 0.
template <typename T>
MATBP_HOST_DEVICE inline T o2p_h(T s, T eps) {
  const T x = s / eps;
  return x <= T(kO2pLogRatioLimit) ? log1p_ratio(x) / eps : (log(s) - log(eps)) / s;
}

// h[s_i, s_j], the coupling of the rows path's backward. h_i = o2p_h(s_i)
// and h_j = o2p_h(s_j) are passed in (the kernels have them already), which
// saves transcendental calls: far apart, their quotient is exact; close, the
// log1p(x_hi) of log1p_ratio_divided_difference is h_hi * s_hi.
template <typename T>
MATBP_HOST_DEVICE inline T o2p_h_divided_difference(T s_i, T s_j, T h_i, T h_j, T eps) {
  const bool i_high = s_i >= s_j;
  const T s_hi = i_high ? s_i : s_j, s_lo = i_high ? s_j : s_i;
  const T h_hi = i_high ? h_i : h_j;
  const T hi = s_hi / eps, lo = s_lo / eps;
  if (hi < T(kPhiSeriesThreshold)) {
    return log1p_ratio_divided_difference(hi, lo) / eps / eps;
  }
  if (s_hi - s_lo > T(0.5) * s_hi) {
    return (h_i - h_j) / (s_i - s_j);
  }
  // The close branch of log1p_ratio_divided_difference in units of s:
  // phi[lo, hi] / eps^2 = (log1p[lo, hi] / eps - h_hi) / s_lo, with
  // log1p[lo, hi] / eps = log1p_ratio(g) / (eps + s_lo). Nothing here
  // overflows or underflows for tiny eps (s / eps up to 1e300).
  const T g = (s_hi - s_lo) / (eps + s_lo);
  return (log1p_ratio(g) / (eps + s_lo) - h_hi) / s_lo;
}

// Gram eigenvalues s = sigma^2 at or below this are zero to working
// precision: a backward-stable solver cannot resolve singular values of X
// below max(m, d) eps sigma_max (the numerical rank, as matrix_rank has it),
// and what it returns there is noise of that size, which h(s) ~ 1/eps and
// log(eps + s) would amplify into an O(1) error of C (X = 1e15 * ones).
template <typename T>
MATBP_HOST_DEVICE inline T o2p_gram_zero_cutoff(T s_max, int64_t m, int64_t d) {
  const T r = T(m > d ? m : d) * machine_epsilon<T>();
  return r * r * s_max;
}

// A Gram eigenvalue s (the largest s_max), refined: at or below
// sqrt(eps_mach) s_max its Rayleigh quotient from X itself, quotient() =
// ||X^T u||^2 or ||X w||^2 (the Gram matrix's rounding, ~eps ||X||^2, would
// otherwise be amplified by 1/eps; the quotient is accurate to second order
// in the eigenvector error), then 0 at or below the numerical-rank cutoff,
// which also clamps round-off negatives. quotient is called only when needed.
template <typename T, typename Quotient>
MATBP_HOST_DEVICE inline T o2p_refined_gram_eigenvalue(T s, T s_max, int64_t m, int64_t d,
                                                       const Quotient& quotient) {
  const T refined = s <= sqrt(machine_epsilon<T>()) * s_max ? T(quotient()) : s;
  return refined <= o2p_gram_zero_cutoff(s_max, m, d) ? T(0) : refined;
}

// log(eps + s) for s >= 0, around the larger of the two so that the log1p
// argument is <= 1: exact for s << eps, and no cancellation between log(eps)
// and log1p(s / eps) for s >> eps (tiny eps).
template <typename T>
MATBP_HOST_DEVICE inline T o2p_log_eigenvalue(T s, T eps) {
  return s > eps ? log(s) + log1p(eps / s) : log(eps) + log1p(s / eps);
}

}  // namespace matbp::math
