#pragma once

// Device-generic kernels of matbp::sym_fn, f(A) = V f(L) V^T for f in log,
// sqrt, pow, exp, and its backward by first divided differences of f
// (Daleckii–Krein; generic/backend.h, docs/design.md §4), plus the parsing and
// validation of the spectral function argument. Everything is float64 inside.

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include "../../math/divided_differences.h"
#include "../checks.h"
#include "../low_precision.h"
#include "backend.h"
#include "eigenbasis_backward.h"

namespace matbp::ops {

inline math::SpectralFn parse_spectral_fn(c10::string_view name, const char* op) {
  if (name == "log") return math::SpectralFn::Log;
  if (name == "sqrt") return math::SpectralFn::Sqrt;
  if (name == "pow") return math::SpectralFn::Pow;
  if (name == "exp") return math::SpectralFn::Exp;
  TORCH_CHECK(false, op, ": argument 'fn' must be one of 'log', 'sqrt', 'pow', 'exp', got '",
              std::string(name), "'");
}

inline void check_spectral_exponent(math::SpectralFn fn, double p, const char* op) {
  if (fn == math::SpectralFn::Pow) {
    TORCH_CHECK(std::isfinite(p), op, ": argument 'p' must be a finite exponent, got ", p);
  }
}

// What the eigenvalues must satisfy, for error messages.
inline const char* spectral_domain(math::SpectralFn fn, double p) {
  switch (fn) {
    case math::SpectralFn::Log:
      return "log needs a positive definite matrix (all eigenvalues > 0)";
    case math::SpectralFn::Sqrt:
      return "sqrt needs a positive semi-definite matrix (all eigenvalues >= 0)";
    case math::SpectralFn::Pow:
      return p > 0 ? "pow with p > 0 needs a positive semi-definite matrix (eigenvalues >= 0)"
                   : "pow with p <= 0 needs a positive definite matrix (eigenvalues > 0)";
    case math::SpectralFn::Exp:
      return "exp is defined everywhere";
  }
  return "";
}

}  // namespace matbp::ops

namespace matbp::ops::generic {

// First divided differences of a spectral function (Daleckii–Krein).
struct SpectralWeight {
  const double* lam;
  int64_t n;
  math::SpectralFn fn;
  double p;
  MATBP_HOST_DEVICE double operator()(int64_t b, int64_t i, int64_t j) const {
    const double* l = lam + b * n;
    return math::divided_difference(fn, l[i], l[j], p);
  }
};


// f of every eigenvalue, after clamping round-off excursions out of the
// domain: within n eps max|lambda| of it, eps the unit roundoff of the input's
// dtype (a PSD matrix rounded to float32 has eigenvalues of -n eps32 ||A||);
// matrices with an eigenvalue truly outside it are flagged. l_in (B, n)
// ascending, l_out the clamped values.
struct SpectralValues {
  const double* l_in;
  double* l_out;
  double* f;
  bool* outside;  // (B,), set for matrices with an eigenvalue outside the domain
  int64_t n;
  math::SpectralFn fn;
  double p;
  double input_eps;
  MATBP_HOST_DEVICE void operator()(int64_t idx) const {
    const int64_t b = idx / n;
    const double* l = l_in + b * n;
    const double tol =
        math::rounding_tolerance(math::fmax(math::abs(l[0]), math::abs(l[n - 1])), n, input_eps);
    const double value = math::clamp_to_domain(fn, l_in[idx], p, tol);
    if (!math::in_domain(fn, value, p)) outside[b] = true;
    l_out[idx] = value;
    f[idx] = math::spectral_value(fn, value, p);
  }
};

// f(A) = V f(L) V^T, with the float64 L (clamped) and V its backward reuses.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> sym_fn_with_eig(const at::Tensor& A,
                                                               c10::string_view fn_name, double p) {
  constexpr const char* op = "matbp.sym_fn";
  const auto fn = parse_spectral_fn(fn_name, op);
  check_spectral_exponent(fn, p, op);
  check_float_matrix(A, op, "A", /*square=*/true);
  const int64_t n = A.size(-1), batch = batch_count(A);
  if (A.numel() == 0) {  // nothing per matrix, however long the batch
    const auto f64 = A.options().dtype(at::kDouble);
    return {at::empty(A.sizes(), A.options()), at::empty(with_trailing(A, {n}), f64),
            at::empty(A.sizes(), f64)};
  }
  const EigenResult eig = Backend::sym_eig64(A, op, "A");
  auto L = at::empty_like(eig.L);
  auto fL = at::empty_like(eig.L);
  auto outside = at::zeros({batch}, eig.L.options().dtype(at::kBool));
  Backend::for_each(batch * n, SpectralValues{eig.L.data_ptr<double>(), L.data_ptr<double>(),
                                              fL.data_ptr<double>(), outside.data_ptr<bool>(), n,
                                              fn, p, input_unit_roundoff(A)});
  const auto F64 = at::matmul(eig.V * fL.unsqueeze(-2), eig.V.mT());
  // f(A) beyond float64 (exp of 800, large |p|): an error, not Inf mixed with NaN.
  const auto representable = at::isfinite(F64).reshape({batch, -1}).all(1);
  auto F = F64.to(A.scalar_type()).contiguous();
  const bool raise = raises_on_failure<Backend>();
  report_decomposition_failures(eig.finite, eig.converged, raise, {F, L, eig.V}, op, "A",
                                "the eigensolver");
  // The domain check comes after the input checks: NaN input is not a domain error.
  const auto in_domain = eig.finite.defined() ? outside.logical_not().logical_or(eig.finite.logical_not())
                                              : outside.logical_not();
  report_failures(in_domain, raise, {F, L, eig.V}, [&](int64_t b) {
    return std::string(op) + ": fn='" + std::string(fn_name) + "' is not defined for matrix " +
           std::to_string(b) + " of the flattened batch of 'A': " + spectral_domain(fn, p) +
           ", but its eigenvalues are " + format_values(eig.L.reshape({batch, n})[b]);
  });
  const auto checked = in_domain.logical_and(eig.finite.defined() ? eig.finite : in_domain);
  report_failures(representable.logical_or(checked.logical_not()), raise, {F, L, eig.V},
                  [&](int64_t b) {
                    return std::string(op) + ": fn='" + std::string(fn_name) +
                           "' of matrix " + std::to_string(b) +
                           " of the flattened batch of 'A' overflows float64: its eigenvalues "
                           "are " + format_values(eig.L.reshape({batch, n})[b]);
                  });
  return {F, L, eig.V};
}

template <typename Backend>
at::Tensor sym_fn_backward(const at::Tensor& gF, const at::Tensor& L, const at::Tensor& V,
                           c10::string_view fn_name, double p) {
  constexpr const char* op = "matbp.sym_fn_backward";
  const auto fn = parse_spectral_fn(fn_name, op);
  check_spectral_exponent(fn, p, op);
  check_eigenbasis_backward_arguments(gF, "gF", L, V, op);
  if (V.numel() == 0) return at::zeros(V.sizes(), gF.options());
  const auto L64 = L.to(at::kDouble).contiguous();
  const auto G64 = gF.to(at::kDouble);
  const auto gA = eigenbasis_backward<Backend>(
                      G64, V.to(at::kDouble),
                      SpectralWeight{L64.data_ptr<double>(), V.size(-1), fn, p})
                      .contiguous();
  report_overflow<Backend>(gA, {G64}, batch_count(V), op);
  return gA.to(gF.scalar_type());
}

}  // namespace matbp::ops::generic
