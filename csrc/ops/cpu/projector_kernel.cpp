// CPU kernels of matbp::projector_with_eig and matbp::projector_backward:
// Pi_A = A A^+ for symmetric A (rank by a relative tolerance) and
// gA = sym((I - Pi) sym(G) A^+ + A^+ sym(G) (I - Pi)), formed in the
// eigenbasis of A.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>

#include "../../math/projector.h"
#include "../checks.h"
#include "batch_loops.h"
#include "eigenbasis_backward.h"
#include "sym_eig_kernel.h"

namespace matbp::ops::cpu {
namespace {

// Absolute tolerance per matrix: rtol max|lambda| (L ascending).
at::Tensor rank_tolerances(const at::Tensor& L64, std::optional<double> rtol, const char* op) {
  const int64_t n = L64.size(-1);
  const double r = rtol.has_value() ? *rtol : math::default_rank_rtol<double>(n);
  TORCH_CHECK(std::isfinite(r) && r >= 0, op, ": argument 'rtol' must be a finite number >= 0, got ",
              r);
  if (n == 0) return at::zeros(L64.sizes().slice(0, L64.dim() - 1), L64.options());
  return at::maximum(L64.select(-1, 0).abs(), L64.select(-1, n - 1).abs()).mul(r).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> projector_with_eig_cpu(
    const at::Tensor& A, std::optional<double> rtol) {
  constexpr const char* op = "matbp.projector";
  auto [L, V] = sym_eig_lapack(A, at::kDouble, op);
  const auto tol = rank_tolerances(L, rtol, op);
  const auto mask = (L.abs() > tol.unsqueeze(-1)).to(at::kDouble);
  auto P = at::matmul(V * mask.unsqueeze(-2), V.mT());
  return {P.to(A.scalar_type()), L, V};
}

at::Tensor projector_backward_cpu(const at::Tensor& gP, const at::Tensor& L, const at::Tensor& V,
                                  std::optional<double> rtol) {
  constexpr const char* op = "matbp.projector_backward";
  check_float_matrix(gP, op, "gP", /*square=*/true);
  TORCH_CHECK(gP.sizes() == V.sizes(), op, ": 'gP' must have the shape of 'V' ", V.sizes(),
              ", got ", gP.sizes());
  const auto L64 = L.to(at::kDouble).contiguous();
  const auto tol = rank_tolerances(L64, rtol, op);
  const int64_t n = V.size(-1);
  const double* lam = L64.data_ptr<double>();
  const double* tie = tol.data_ptr<double>();
  return eigenbasis_backward(gP.to(at::kDouble), V.to(at::kDouble),
                             [&](int64_t b, int64_t i, int64_t j) {
                               const double* l = lam + b * n;
                               return math::projector_adjoint_weight(l[i], l[j], tie[b]);
                             })
      .to(gP.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("projector_with_eig", &projector_with_eig_cpu);
  m.impl("projector_backward", &projector_backward_cpu);
}

}  // namespace matbp::ops::cpu
