#pragma once

// Device-generic kernels of matbp::projector, Pi_A = V 1(|L| > tol) V^T, the
// orthogonal projector onto the numerical range of a symmetric A, and its
// backward (paper eq. 19; generic/backend.h, docs/design.md §4).

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "../../math/projector.h"
#include "../checks.h"
#include "backend.h"
#include "eigenbasis_backward.h"

namespace matbp::ops::generic {

// Divided differences of the rank indicator (projector derivative, eq. 19).
struct ProjectorWeight {
  const double* lam;
  const double* tol;  // per matrix
  int64_t n;
  MATBP_HOST_DEVICE double operator()(int64_t b, int64_t i, int64_t j) const {
    const double* l = lam + b * n;
    return math::projector_adjoint_weight(l[i], l[j], tol[b]);
  }
};


struct ProjectorSecondWeight {
  const double* lam;
  const double* tol;  // per matrix
  int64_t n;
  MATBP_HOST_DEVICE double operator()(int64_t b, int64_t i, int64_t j, int64_t c) const {
    const double* l = lam + b * n;
    return math::projector_second_weight(l[i], l[j], l[c], tol[b]);
  }
};

inline void check_rank_rtol(std::optional<double> rtol, const char* op) {
  TORCH_CHECK(!rtol.has_value() || (std::isfinite(*rtol) && *rtol >= 0), op,
              ": argument 'rtol' must be a finite number >= 0, got ", *rtol);
}

// Absolute rank tolerance per matrix, rtol max|lambda| (L ascending), (B,).
inline at::Tensor rank_tolerances(const at::Tensor& L64, std::optional<double> rtol,
                                  const char* op) {
  const int64_t n = L64.size(-1);
  const double r = rtol.has_value() ? *rtol : math::default_rank_rtol<double>(n);
  if (n == 0) return at::zeros(L64.sizes().slice(0, L64.dim() - 1), L64.options());
  return at::maximum(L64.select(-1, 0).abs(), L64.select(-1, n - 1).abs()).mul(r).contiguous();
}

// Pi_A = V 1(|L| > tol) V^T.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> projector_with_eig(const at::Tensor& A,
                                                                  std::optional<double> rtol) {
  constexpr const char* op = "matbp.projector";
  check_float_matrix(A, op, "A", /*square=*/true);
  check_rank_rtol(rtol, op);
  if (A.numel() == 0) {  // nothing per matrix, however long the batch
    const auto f64 = A.options().dtype(at::kDouble);
    return {at::empty(A.sizes(), A.options()), at::empty(with_trailing(A, {A.size(-1)}), f64),
            at::empty(A.sizes(), f64)};
  }
  const EigenResult eig = Backend::sym_eig(A, at::kDouble, op, "A");
  const auto tol = rank_tolerances(eig.L, rtol, op);
  const auto mask = (eig.L.abs() > tol.unsqueeze(-1)).to(at::kDouble);
  auto P = Backend::eigen_compose(eig.V, mask).result.to(A.scalar_type());
  const bool raise = raises_on_failure<Backend>();
  report_decomposition_failures(eig.finite, eig.converged, raise, {P, eig.L, eig.V}, op, "A",
                                "the eigensolver");
  return {P, eig.L, eig.V};
}

template <typename Backend>
at::Tensor projector_backward(const at::Tensor& gP, const at::Tensor& L, const at::Tensor& V,
                              std::optional<double> rtol) {
  constexpr const char* op = "matbp.projector_backward";
  check_rank_rtol(rtol, op);
  check_eigenbasis_backward_arguments(gP, "gP", L, V, op);
  if (V.numel() == 0) return at::zeros(V.sizes(), gP.options());
  const auto L64 = L.to(at::kDouble).contiguous();
  const auto tol = rank_tolerances(L64, rtol, op);
  return eigenbasis_backward<Backend>(
             gP, V.to(at::kDouble),
             ProjectorWeight{L64.data_ptr<double>(), tol.data_ptr<double>(), V.size(-1)})
      .result.to(gP.scalar_type());
}

// The projector's second derivative D^2 Pi(A)[G, H] at locally constant rank,
// the derivative in A of <H, projector_backward(G)> (its double backward).
template <typename Backend>
at::Tensor projector_second_derivative(const at::Tensor& G, const at::Tensor& H,
                                       const at::Tensor& L, const at::Tensor& V,
                                       std::optional<double> rtol) {
  constexpr const char* op = "matbp.projector_second_derivative";
  check_rank_rtol(rtol, op);
  check_eigenbasis_backward_arguments(G, "G", L, V, op);
  check_fits(H, op, "H", V.sizes(), V, "V");
  if (V.numel() == 0) return at::zeros(V.sizes(), G.options());
  const auto L64 = L.to(at::kDouble).contiguous();
  const auto tol = rank_tolerances(L64, rtol, op);
  const auto G64 = G.to(at::kDouble), H64 = H.to(at::kDouble);
  const auto result = eigenbasis_second_derivative<Backend>(
                          G64, H64, V.to(at::kDouble),
                          ProjectorSecondWeight{L64.data_ptr<double>(), tol.data_ptr<double>(),
                                                V.size(-1)})
                          .contiguous();
  report_overflow<Backend>(result, {G64, H64}, batch_count(V), op);
  return result.to(G.scalar_type());
}

}  // namespace matbp::ops::generic
