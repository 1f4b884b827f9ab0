// CPU kernels of matbp::sym_fn_with_eig and matbp::sym_fn_backward:
// f(A) = V f(L) V^T and its Daleckii–Krein backward
// gA = V (F1 o V^T sym(gF) V) V^T, F1 the first divided differences of f.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../../math/divided_differences.h"
#include "../checks.h"
#include "../spectral_fn.h"
#include "batch_loops.h"
#include "eigenbasis_backward.h"
#include "sym_eig_kernel.h"

namespace matbp::ops::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> sym_fn_with_eig_cpu(const at::Tensor& A,
                                                                   c10::string_view fn_name,
                                                                   double p) {
  constexpr const char* op = "matbp.sym_fn";
  const auto fn = parse_spectral_fn(fn_name, op);
  check_spectral_exponent(fn, p, op);
  auto [L, V] = sym_eig_lapack(A, at::kDouble, op);
  auto fL = at::empty_like(L);
  const int64_t n = A.size(-1);
  const int64_t batch = batch_count(A);
  if (batch > 0 && n > 0) {
    const auto tol = eig_tie_tolerances(L);
    double* lam = L.data_ptr<double>();
    double* f = fL.data_ptr<double>();
    const double* tie = tol.data_ptr<double>();
    FirstFailure outside(batch);
    at::parallel_for(0, batch, 1024 / std::max<int64_t>(n, 1) + 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t i = 0; i < n; ++i) {
          double& l = lam[b * n + i];
          l = math::clamp_to_domain(fn, l, p, tie[b]);
          if (!math::in_domain(fn, l, p)) outside.record(b);
          f[b * n + i] = math::spectral_value(fn, l, p);
        }
      }
    });
    TORCH_CHECK(!outside.any(), op, ": fn='", fn_name, "' is not defined for matrix ",
                outside.index(), " of the flattened batch of 'A': ", spectral_domain(fn, p),
                ", but its eigenvalues are ", L.reshape({batch, n})[outside.index()]);
  }
  auto F = at::matmul(V * fL.unsqueeze(-2), V.mT()).to(A.scalar_type());
  return {F, L, V};
}

// Daleckii–Krein backward in float64: gA = V (F1 o V^T sym(gF) V) V^T.
at::Tensor spectral_function_backward(const at::Tensor& gF64, const at::Tensor& L64,
                                      const at::Tensor& V64, math::SpectralFn fn, double p) {
  const auto lam_c = L64.contiguous();
  const int64_t n = V64.size(-1);
  const double* lam = lam_c.data_ptr<double>();
  return eigenbasis_backward(gF64, V64, [&](int64_t b, int64_t i, int64_t j) {
    const double* l = lam + b * n;
    return math::divided_difference(fn, l[i], l[j], p);
  });
}

at::Tensor sym_fn_backward_cpu(const at::Tensor& gF, const at::Tensor& L, const at::Tensor& V,
                               c10::string_view fn_name, double p) {
  constexpr const char* op = "matbp.sym_fn_backward";
  const auto fn = parse_spectral_fn(fn_name, op);
  check_float_matrix(gF, op, "gF", /*square=*/true);
  TORCH_CHECK(gF.sizes() == V.sizes(), op, ": 'gF' must have the shape of 'V' ", V.sizes(),
              ", got ", gF.sizes());
  return spectral_function_backward(gF.to(at::kDouble), L.to(at::kDouble), V.to(at::kDouble), fn,
                                    p)
      .to(gF.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("sym_fn_with_eig", &sym_fn_with_eig_cpu);
  m.impl("sym_fn_backward", &sym_fn_backward_cpu);
}

}  // namespace matbp::ops::cpu
