#pragma once

// The orthogonal projector onto the range of a symmetric matrix,
// Pi_A = A A^+ = V 1(L) V^T, with 1(lambda) = [|lambda| > tol]: the rank is
// numerical, decided by the tolerance. While no eigenvalue crosses it, Pi is
// the spectral projector onto the range cluster, and its derivatives are the
// Daleckii–Krein forms with the divided differences of the indicator at the
// computed eigenvalues: K_ij = 1/(lambda_i - lambda_j) when only i is in the
// range, 0 when both are on one side. With null eigenvalues exactly 0 this is
// eq. 19 of the paper, dPi = 2 sym((I - Pi) dA A^+) (K_ij = 1/lambda_i); with
// small nonzero ones (a large rtol) it is the derivative of what the forward
// computes, which eq. 19 is not.

#include "host_device.h"

namespace matbp::math {

template <typename T>
MATBP_HOST_DEVICE inline bool in_numerical_range(T lambda, T tol) {
  return abs(lambda) > tol;
}

template <typename T>
MATBP_HOST_DEVICE inline T projector_adjoint_weight(T lambda_i, T lambda_j, T tol) {
  const bool range_i = in_numerical_range(lambda_i, tol);
  const bool range_j = in_numerical_range(lambda_j, tol);
  if (range_i == range_j) return T(0);
  return T(1) / (range_i ? lambda_i - lambda_j : lambda_j - lambda_i);
}

// Second divided differences of the indicator, the projector's second
// derivative while the rank is locally constant: with x, y in the range and
// z not, 1[x, y, z] = -1/((x - z)(y - z)); with x in the range and y, z not,
// 1[x, y, z] = 1/((x - y)(x - z)); 0 when all three are on one side.
template <typename T>
MATBP_HOST_DEVICE inline T projector_second_weight(T a, T b, T c, T tol) {
  const bool ra = in_numerical_range(a, tol), rb = in_numerical_range(b, tol),
             rc = in_numerical_range(c, tol);
  const int in_range = int(ra) + int(rb) + int(rc);
  if (in_range == 0 || in_range == 3) return T(0);
  // Order the three as (x, y, z): the lone one (z, or x when in_range == 1) last or first.
  const bool lone_a = in_range == 2 ? !ra : ra, lone_b = in_range == 2 ? !rb : rb;
  const T lone = lone_a ? a : (lone_b ? b : c);
  const T u = lone_a ? b : a, v = lone_a || lone_b ? c : b;  // the other two
  return in_range == 2 ? T(-1) / ((u - lone) * (v - lone)) : T(1) / ((lone - u) * (lone - v));
}

// Relative tolerance used when the caller gives none: n eps, as for a
// matrix rank (eigenvalues carry an absolute error of ~n eps max|lambda|).
template <typename T>
MATBP_HOST_DEVICE inline T default_rank_rtol(int64_t n) {
  return T(n > 1 ? n : 1) * machine_epsilon<T>();
}

}  // namespace matbp::math
