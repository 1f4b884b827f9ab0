#pragma once

// Device-generic backward of matbp::svd (generic/backend.h; docs/design.md
// §4): the K-matrix adjoint of the thin SVD, with the orthogonal-complement
// terms for non-square matrices. The forward is the backend's SVD itself
// (cpu/svd_kernel.cpp, cuda/svd_kernel.cu).

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "../../math/adjoint_weights.h"
#include "../checks.h"
#include "backend.h"

namespace matbp::ops::generic {

// The inner SVD adjoint (k x k): diag(gS) + K o (M - M^T) S + S K o (N - N^T),
// and S^+, for every matrix. S descending, M = U^T gU, N = V^T gV.
struct SvdAdjointInner {
  const double* m;
  const double* nn;
  const double* s;
  const double* gs;  // may be null
  double* out;
  double* s_pinv;
  int64_t k;
  int64_t tie_n;  // max(rows, cols) of X
  MATBP_HOST_DEVICE void operator()(int64_t b, int64_t i, int64_t j) const {
    const int64_t kk = k * k;
    const double* mb = m + b * kk;
    const double* nb = nn + b * kk;
    const double* sb = s + b * k;
    double* ob = out + b * kk;
    const double tie = math::tie_tolerance(sb[0], tie_n);
    if (i == j) {
      ob[i * k + i] = gs != nullptr ? gs[b * k + i] : 0.0;
      s_pinv[b * k + i] = math::pseudo_inverse(sb[i], tie);
      return;
    }
    ob[i * k + j] = math::svd_adjoint_entry(mb[i * k + j], mb[j * k + i], nb[i * k + j],
                                            nb[j * k + i], sb[i], sb[j], tie);
    ob[j * k + i] = math::svd_adjoint_entry(mb[j * k + i], mb[i * k + j], nb[j * k + i],
                                            nb[i * k + j], sb[j], sb[i], tie);
  }
};

// gX = U [diag(gS) + K o (M - M^T) S + S K o (N - N^T)] V^T
//      + (I - U U^T) gU S^+ V^T + U S^+ gV^T (I - V V^T).
template <typename Backend>
at::Tensor svd_backward(const std::optional<at::Tensor>& gU, const std::optional<at::Tensor>& gS,
                        const std::optional<at::Tensor>& gV, const at::Tensor& U,
                        const at::Tensor& S, const at::Tensor& V) {
  constexpr const char* op = "matbp.svd_backward";
  // U (*, m, k), S (*, k), V (*, n, k) as svd returned them, k = min(m, n).
  check_float_matrix(U, op, "U", /*square=*/false);
  check_float_matrix(V, op, "V", /*square=*/false);
  check_same_device(V, "V", U, "U", op);
  const int64_t m = U.size(-2), n = V.size(-2), k = U.size(-1);
  TORCH_CHECK(k == std::min(m, n), op, ": arguments 'U' (*, m, k) and 'V' (*, n, k) must be ",
              "the thin SVD factors, k = min(m, n), got ", U.sizes(), " and ", V.sizes());
  check_fits(V, op, "V", with_trailing(U, {n, k}), U, "U");
  check_fits(S, op, "S", with_trailing(U, {k}), U, "U");
  const bool has_gU = given(gU), has_gS = given(gS), has_gV = given(gV);
  if (has_gU) check_fits(*gU, op, "gU", U.sizes(), U, "U");
  if (has_gS) check_fits(*gS, op, "gS", S.sizes(), U, "U");
  if (has_gV) check_fits(*gV, op, "gV", V.sizes(), U, "U");
  auto out_shape = with_trailing(U, {m, n});
  const int64_t batch = batch_count(U);
  if ((!has_gU && !has_gS && !has_gV) || k == 0 || batch == 0) {
    return at::zeros(out_shape, U.options());
  }

  const auto U64 = U.to(at::kDouble), V64 = V.to(at::kDouble);
  const auto S64 = S.to(at::kDouble).contiguous();
  const auto gU64 = has_gU ? gU->to(at::kDouble) : at::Tensor();
  const auto gV64 = has_gV ? gV->to(at::kDouble) : at::Tensor();
  const auto M = has_gU ? at::matmul(U64.mT(), gU64).contiguous()
                        : at::zeros(with_trailing(U, {k, k}), S64.options());
  const auto N = has_gV ? at::matmul(V64.mT(), gV64).contiguous() : at::zeros_like(M);
  const auto gS64 = has_gS ? gS->to(at::kDouble).contiguous() : at::Tensor();
  auto inner = at::empty_like(M);
  auto s_pinv = at::empty_like(S64);
  Backend::for_each_pair(batch, k,
                         SvdAdjointInner{M.data_ptr<double>(), N.data_ptr<double>(),
                                         S64.data_ptr<double>(),
                                         has_gS ? gS64.data_ptr<double>() : nullptr,
                                         inner.data_ptr<double>(), s_pinv.data_ptr<double>(), k,
                                         std::max(m, n)});
  auto gX = at::matmul(at::matmul(U64, inner), V64.mT());
  // The projections onto the complements of range(U) and range(V) vanish
  // when U (V) is square; S^+ keeps them finite when X loses rank.
  if (has_gU && m > k) {
    gX = gX + at::matmul((gU64 - at::matmul(U64, M)) * s_pinv.unsqueeze(-2), V64.mT());
  }
  if (has_gV && n > k) {
    gX = gX + at::matmul(U64 * s_pinv.unsqueeze(-2), (gV64 - at::matmul(V64, N)).mT());
  }
  gX = gX.contiguous();
  report_overflow<Backend>(gX, {gU64, gS64, gV64}, batch, op);
  return gX.to(U.scalar_type());
}

}  // namespace matbp::ops::generic
