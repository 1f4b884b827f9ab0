#pragma once

// Device-generic backward of matbp::sym_eig (generic/backend.h;
// docs/design.md §4): gA = V (F o skew(V^T gV) + diag(gL)) V^T with the
// tie-safe F of math/adjoint_weights.h. The forward is the backend's
// eigensolver itself (cpu/sym_eig_kernel.cpp, cuda/sym_eig_kernel.cu).

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "../../math/adjoint_weights.h"
#include "../checks.h"
#include "backend.h"
#include "eigenbasis_backward.h"

namespace matbp::ops::generic {

// In place on M = V^T gV (B, n, n): the inner EIG adjoint F o skew(M) off the
// diagonal (symmetric), gL on it.
// m and stride: as batched_eigenbasis_sandwich sets them (generic/backend.h).
struct EigAdjointInner {
  double* m;
  int64_t stride;
  const double* lam;
  const double* gl;  // may be null: no gL
  int64_t n;
  double unit_roundoff;  // of the precision L was computed in
  MATBP_HOST_DEVICE void operator()(int64_t b, int64_t i, int64_t j) const {
    double* mb = m + b * stride;
    const double* l = lam + b * n;
    if (i == j) {
      mb[i * n + i] = gl != nullptr ? gl[b * n + i] : 0.0;
      return;
    }
    const double e =
        math::eig_adjoint_entry(mb[i * n + j], mb[j * n + i], l[i], l[j],
                                             eig_tie_tolerance(l, n, unit_roundoff));
    mb[i * n + j] = e;
    mb[j * n + i] = e;
  }
};

// L (*, n) and V (*, n, n) as sym_eig returned them, and the gradients of
// their shapes, all on V's device.
inline void check_eig_backward_arguments(const std::optional<at::Tensor>& gL,
                                         const std::optional<at::Tensor>& gV, const at::Tensor& L,
                                         const at::Tensor& V, const char* op) {
  check_float_matrix(V, op, "V", /*square=*/true);
  const auto l_shape = with_trailing(V, {V.size(-1)});
  check_fits(L, op, "L", l_shape, V, "V");
  if (given(gL)) check_fits(*gL, op, "gL", l_shape, V, "V");
  if (given(gV)) check_fits(*gV, op, "gV", V.sizes(), V, "V");
}

// gA = V (F o skew(V^T gV) + diag(gL)) V^T, F_ij = 1/(l_j - l_i), 0 at ties.
// The products in compute_dtype (float64 unless the float32 compute mode
// asks), the weights in float64 either way.
template <typename Backend>
at::Tensor sym_eig_backward(const std::optional<at::Tensor>& gL,
                            const std::optional<at::Tensor>& gV, const at::Tensor& L,
                            const at::Tensor& V, std::optional<at::ScalarType> compute_dtype) {
  constexpr const char* op = "matbp.sym_eig_backward";
  const auto compute = resolve_compute_dtype(compute_dtype, op);
  check_eig_backward_arguments(gL, gV, L, V, op);
  const bool has_gL = given(gL), has_gV = given(gV);
  if ((!has_gL && !has_gV) || V.numel() == 0) {
    return at::zeros_like(V, at::MemoryFormat::Contiguous);
  }
  const auto Vc = V.to(compute);
  if (!has_gV) {
    const auto product = Backend::eigen_compose(Vc, gL->contiguous());
    report_overflow<Backend>(product, {*gL}, batch_count(V), op);
    return product.result.to(V.scalar_type());
  }
  const auto L64 = L.to(at::kDouble).contiguous();
  const auto gL64 = has_gL ? gL->to(at::kDouble).contiguous() : at::Tensor();
  const int64_t n = V.size(-1);
  const auto gA = Backend::eigenbasis_sandwich(
      *gV, Vc, Rotation::Left,
      EigAdjointInner{nullptr, 0, L64.data_ptr<double>(), has_gL ? gL64.data_ptr<double>() : nullptr,
                      n, unit_roundoff(compute)});
  report_overflow<Backend>(gA, {gL64, *gV}, batch_count(V), op);
  return gA.result.to(V.scalar_type());
}

}  // namespace matbp::ops::generic
