#pragma once

// The backward shared by the ops whose result is a function of A's
// eigendecomposition A = V diag(L) V^T (sym_fn, projector; docs/design.md §4):
// gA = V (K o sym(V^T gF V)) V^T for a symmetric weight K of divided
// differences, the tie tolerance, and the checks of the saved L and V.
// Everything is float64 inside.

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "../../math/adjoint_weights.h"
#include "../checks.h"
#include "backend.h"

namespace matbp::ops::generic {

// Tie tolerance of matrix b from its ascending eigenvalues l (n of them),
// computed at `unit_roundoff` (float64's, or float32's in the float32 compute
// mode): the largest magnitude is at one end.
MATBP_HOST_DEVICE inline double eig_tie_tolerance(const double* l, int64_t n,
                                                  double unit_roundoff) {
  return math::rounding_tolerance(math::fmax(math::abs(l[0]), math::abs(l[n - 1])), n,
                                  unit_roundoff);
}

// In place on M = V^T gF V: K o sym(M) for a symmetric weight K_ij = w(b, i, j).
// m and stride: as batched_eigenbasis_sandwich sets them (generic/backend.h).
template <typename Weight>
struct WeightedSymmetricPart {
  double* m;
  int64_t stride;
  int64_t n;
  Weight weight;
  MATBP_HOST_DEVICE void operator()(int64_t b, int64_t i, int64_t j) const {
    double* mb = m + b * stride;
    // A zero entry stays zero even where the weight overflows (1/lambda at a
    // subnormal eigenvalue): Inf * 0 would poison the whole matrix with NaN.
    if (i == j) {
      if (mb[i * n + i] != 0.0) mb[i * n + i] *= weight(b, i, i);
      return;
    }
    const double sum = mb[i * n + j] + mb[j * n + i];
    const double e = sum == 0.0 ? 0.0 : weight(b, i, j) * 0.5 * sum;
    mb[i * n + j] = e;
    mb[j * n + i] = e;
  }
};

// gA = V (K o sym(V^T gF V)) V^T, K symmetric.
template <typename Backend, typename Weight>
EigenbasisProduct eigenbasis_backward(const at::Tensor& gF, const at::Tensor& V64,
                                      const Weight& weight) {
  return Backend::eigenbasis_sandwich(
      gF, V64, Rotation::Both, WeightedSymmetricPart<Weight>{nullptr, 0, V64.size(-1), weight});
}

// Fills K_ij = K_ji = w(b, i, j) for a symmetric weight (the first divided
// differences the second-order weights reuse).
template <typename Weight>
struct FillSymmetricWeight {
  double* k;
  int64_t n;
  Weight weight;
  MATBP_HOST_DEVICE void operator()(int64_t b, int64_t i, int64_t j) const {
    double* kb = k + b * n * n;
    kb[i * n + j] = kb[j * n + i] = weight(b, i, j);
  }
};

// Q_ij = sum_c w(b, i, j, c) (G_ic H_cj + H_ic G_cj) for symmetric G, H (the
// rotated V^T G V, V^T H V) and a weight w of second divided differences,
// symmetric in its last three arguments. Row i and row j of G and H are read
// contiguously (H_cj = H_jc).
template <typename Weight2>
struct SecondOrderInner {
  const double* g;
  const double* h;
  double* out;
  int64_t n;
  Weight2 weight;
  MATBP_HOST_DEVICE void operator()(int64_t b, int64_t i, int64_t j) const {
    const int64_t nn = n * n;
    const double *gi = g + b * nn + i * n, *gj = g + b * nn + j * n;
    const double *hi = h + b * nn + i * n, *hj = h + b * nn + j * n;
    double sum = 0.0;
    for (int64_t c = 0; c < n; ++c) {
      // A zero term stays zero where its weight overflows (as in the first order).
      const double t = gi[c] * hj[c] + hi[c] * gj[c];
      if (t != 0.0) sum += weight(b, i, j, c) * t;
    }
    out[b * nn + i * n + j] = sum;
    out[b * nn + j * n + i] = sum;
  }
};

// V^T sym(M) V, contiguous.
inline at::Tensor rotated_symmetric_part(const at::Tensor& M, const at::Tensor& V) {
  return at::matmul(at::matmul(V.mT(), (M + M.mT()).mul_(0.5)), V).contiguous();
}

// The second-order Daleckii–Krein form D^2 f(A)[G, H] = V Q V^T,
// Q_ij = sum_c f[l_i, l_j, l_c] (Gr_ic Hr_cj + Hr_ic Gr_cj), Gr = V^T sym(G) V,
// Hr = V^T sym(H) V: the derivative of <H, V (K o V^T sym(G) V) V^T> in A
// (the double backward of eigenbasis_backward), symmetric in G and H.
template <typename Backend, typename Weight2>
at::Tensor eigenbasis_second_derivative(const at::Tensor& G64, const at::Tensor& H64,
                                        const at::Tensor& V64, const Weight2& weight) {
  const at::Tensor g = rotated_symmetric_part(G64, V64), h = rotated_symmetric_part(H64, V64);
  auto inner = at::empty_like(g);
  const int64_t n = V64.size(-1);
  Backend::for_each_pair(batch_count(g), n,
                         SecondOrderInner<Weight2>{g.data_ptr<double>(), h.data_ptr<double>(),
                                                   inner.data_ptr<double>(), n, weight});
  return at::matmul(at::matmul(V64, inner), V64.mT());
}

// The backward of the ops whose saved tensors are a float64 eigendecomposition
// L (*, n), V (*, n, n) of A: the incoming gradient g (*, n, n) and L fit V.
inline void check_eigenbasis_backward_arguments(const at::Tensor& g, const char* g_name,
                                                const at::Tensor& L, const at::Tensor& V,
                                                const char* op) {
  check_float_matrix(V, op, "V", /*square=*/true);
  check_fits(L, op, "L", with_trailing(V, {V.size(-1)}), V, "V");
  check_fits(g, op, g_name, V.sizes(), V, "V");
}

}  // namespace matbp::ops::generic
