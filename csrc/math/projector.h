#pragma once

// The orthogonal projector onto the range of a symmetric matrix,
// Pi_A = A A^+ = V 1(L) V^T, with 1(lambda) = [|lambda| > tol]: the rank is
// numerical, decided by the tolerance. Its derivative (eq. 19 of the paper),
// dPi = 2 sym((I - Pi) dA A^+), is the Daleckii–Krein form with the divided
// differences of the indicator: K_ij = 1/lambda_i when only i is in the
// range, 1/lambda_j when only j is, 0 otherwise.

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
  return range_i ? T(1) / lambda_i : T(1) / lambda_j;
}

// Relative tolerance used when the caller gives none: n eps, as for a
// matrix rank (eigenvalues carry an absolute error of ~n eps max|lambda|).
template <typename T>
MATBP_HOST_DEVICE inline T default_rank_rtol(int64_t n) {
  return T(n > 1 ? n : 1) * machine_epsilon<T>();
}

}  // namespace matbp::math
