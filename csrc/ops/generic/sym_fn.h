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

// First divided differences of a spectral function (Daleckii–Krein), from
// the eigenvalues lam and their values f_lam = f(lam) (spectral_fn_values).
struct SpectralWeight {
  const double* lam;
  const double* f_lam;
  int64_t n;
  math::SpectralFn fn;
  double p;
  MATBP_HOST_DEVICE double operator()(int64_t b, int64_t i, int64_t j) const {
    const double* l = lam + b * n;
    const double* f = f_lam + b * n;
    return math::divided_difference(fn, l[i], l[j], f[i], f[j], p);
  }
};

struct SpectralFnValues {
  const double* lam;
  double* f;
  math::SpectralFn fn;
  double p;
  MATBP_HOST_DEVICE void operator()(int64_t idx) const {
    f[idx] = math::spectral_value(fn, lam[idx], p);
  }
};

// f(L) for float64 L (*, n), contiguous: one transcendental call per
// eigenvalue instead of one per pair of them.
template <typename Backend>
at::Tensor spectral_fn_values(const at::Tensor& L64, math::SpectralFn fn, double p) {
  auto f = at::empty_like(L64, at::MemoryFormat::Contiguous);
  Backend::for_each(L64.numel(),
                    SpectralFnValues{L64.data_ptr<double>(), f.data_ptr<double>(), fn, p});
  return f;
}


// Q_ij = sum_c f[l_i, l_j, l_c] (G_ic H_cj + H_ic G_cj) for ascending L
// (generic/eigenbasis_backward.h: SecondOrderInner, specialised).
// - l_i and l_j apart (positive, by more than kSecondRecursionGap relative;
//   absolute for exp): f[l_i, l_j, l_c] = (f1_ic - f1_jc) / (l_i - l_j) for
//   every c, so Q_ij = (P_ij - P_ji) / (l_i - l_j) with
//   P = (f1 o G) H + (f1 o H) G, two GEMMs for the whole batch (pair).
// - Otherwise, per term: with i <= j the sorted triple is (c, i, j),
//   (i, c, j) or (i, j, c) as c is below i, between or above j, so no
//   per-term sort. Where its outer points are apart
//   (math::second_divided_difference_by_recursion: a prefix of c below i and
//   a suffix above j, L ascending) the weight is the recursion on the first
//   divided differences f1 with the reciprocal gaps
//   inv_gap[a][b] = 1/(l_b - l_a), in SIMD loops; the exact formula only
//   where all three are close. Rows i and j are read contiguously.
struct SpectralSecondOrderInner {
  const double* g;
  const double* h;
  const double* lam;
  const double* f1;
  const double* inv_gap;
  const double* pair;
  double* out;
  int64_t n;
  math::SpectralFn fn;
  double p;

  // sum of weight(c) * t_c over [begin, end), t_c = G_ic H_jc + H_ic G_jc; a
  // zero term stays zero where its weight overflows (as in the first order).
  // SIMD where the weights are the recursion's arithmetic.
  template <typename Weight>
  MATBP_HOST_DEVICE static double weighted_sum(int64_t begin, int64_t end, const double* gi,
                                               const double* gj, const double* hi,
                                               const double* hj, const Weight& weight) {
    double sum = 0.0;
    MATBP_SIMD_SUM(sum)
    for (int64_t c = begin; c < end; ++c) {
      const double t = gi[c] * hj[c] + hi[c] * gj[c];
      sum += t != 0.0 ? weight(c) * t : 0.0;
    }
    return sum;
  }

  MATBP_HOST_DEVICE void operator()(int64_t b, int64_t i, int64_t j) const {
    const int64_t nn = n * n, row_i = b * nn + i * n, row_j = b * nn + j * n;
    const double *gi = g + row_i, *gj = g + row_j, *hi = h + row_i, *hj = h + row_j;
    const double *fi = f1 + row_i, *fj = f1 + row_j, *di = inv_gap + row_i, *dj = inv_gap + row_j;
    const double* l = lam + b * n;
    const double li = l[i], lj = l[j], fij = fi[j];
    const auto by_recursion = [&](double lo, double hi_) {
      return math::second_divided_difference_by_recursion(fn, lo, hi_);
    };
    // A zero eigenvalue (sqrt, pow) may have infinite f1 entries in its row
    // of P: its pairs take the per-term path, where zero terms stay zero.
    if ((fn == math::SpectralFn::Exp || li > 0.0) && by_recursion(li, lj)) {
      const double q = (pair[row_i + j] - pair[row_j + i]) * -di[j];
      out[row_i + j] = q;
      out[row_j + i] = q;
      return;
    }
    // c < i: (c, i, j), far for c < below; c > j: (i, j, c), far for c >= above.
    int64_t lo_c = 0, hi_c = i;
    while (lo_c < hi_c) {
      const int64_t mid = (lo_c + hi_c) / 2;
      if (by_recursion(l[mid], lj)) lo_c = mid + 1; else hi_c = mid;
    }
    const int64_t below = lo_c;
    lo_c = j + 1;
    hi_c = n;
    while (lo_c < hi_c) {
      const int64_t mid = (lo_c + hi_c) / 2;
      if (by_recursion(li, l[mid])) hi_c = mid; else lo_c = mid + 1;
    }
    const int64_t above = lo_c;
    const math::SpectralFn f = fn;
    const double q = p;
    double sum = weighted_sum(0, below, gi, gj, hi, hj, [=](int64_t c) { return (fi[c] - fij) * dj[c]; });
    sum += weighted_sum(below, i, gi, gj, hi, hj, [=](int64_t c) {
      return math::second_divided_difference(f, l[c], li, lj, q, fi[c], fij);
    });
    if (by_recursion(li, lj)) {
      const double d = di[j];
      sum += weighted_sum(i, j + 1, gi, gj, hi, hj, [=](int64_t c) { return (fj[c] - fi[c]) * d; });
    } else {
      sum += weighted_sum(i, j + 1, gi, gj, hi, hj, [=](int64_t c) {
        return math::second_divided_difference(f, li, l[c], lj, q, fi[c], fj[c]);
      });
    }
    sum += weighted_sum(j + 1, above, gi, gj, hi, hj, [=](int64_t c) {
      return math::second_divided_difference(f, li, lj, l[c], q, fij, fj[c]);
    });
    sum += weighted_sum(above, n, gi, gj, hi, hj, [=](int64_t c) { return (fj[c] - fij) * di[c]; });
    out[row_i + j] = sum;
    out[row_j + i] = sum;
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

// f(A) = V f(L) V^T, with the L (clamped) and V its backward reuses, in the
// compute dtype (float64 unless compute_dtype asks for float32). f(L) is
// float64 either way; so are the clamping and the domain checks.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> sym_fn_with_eig(
    const at::Tensor& A, c10::string_view fn_name, double p,
    std::optional<at::ScalarType> compute_dtype) {
  constexpr const char* op = "matbp.sym_fn";
  const auto fn = parse_spectral_fn(fn_name, op);
  check_spectral_exponent(fn, p, op);
  const auto compute = resolve_compute_dtype(compute_dtype, op);
  check_float_matrix(A, op, "A", /*square=*/true);
  const int64_t n = A.size(-1), batch = batch_count(A);
  if (A.numel() == 0) {  // nothing per matrix, however long the batch
    const auto decomposition = A.options().dtype(compute);
    return {at::empty(A.sizes(), A.options()), at::empty(with_trailing(A, {n}), decomposition),
            at::empty(A.sizes(), decomposition)};
  }
  const EigenResult eig = Backend::sym_eig(A, compute, op, "A");
  const auto L_in = eig.L.to(at::kDouble).contiguous();
  auto L64 = at::empty_like(L_in);
  auto fL = at::empty_like(L_in);
  auto outside = at::zeros({batch}, eig.L.options().dtype(at::kBool));
  // The rounding tolerance of the clamp: the input's precision, or the
  // compute precision where that is coarser.
  const double input_eps = std::max(input_unit_roundoff(A), unit_roundoff(compute));
  Backend::for_each(batch * n, SpectralValues{L_in.data_ptr<double>(), L64.data_ptr<double>(),
                                              fL.data_ptr<double>(), outside.data_ptr<bool>(), n,
                                              fn, p, input_eps});
  const auto L = L64.to(compute);
  const auto composed = Backend::eigen_compose(eig.V, fL);
  auto F = composed.result.to(A.scalar_type()).contiguous();
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
  if (composed.finite) return {F, L, eig.V};
  // f(A) beyond the compute dtype (exp of 800, large |p|): an error, not Inf
  // mixed with NaN.
  const auto representable = at::isfinite(composed.result).reshape({batch, -1}).all(1);
  const auto checked = in_domain.logical_and(eig.finite.defined() ? eig.finite : in_domain);
  report_failures(representable.logical_or(checked.logical_not()), raise, {F, L, eig.V},
                  [&](int64_t b) {
                    return std::string(op) + ": fn='" + std::string(fn_name) +
                           "' of matrix " + std::to_string(b) +
                           " of the flattened batch of 'A' overflows " +
                           dtype_name(compute) + ": its eigenvalues are " +
                           format_values(eig.L.reshape({batch, n})[b]);
                  });
  return {F, L, eig.V};
}

// In V's dtype (the forward's compute dtype: float32 in the float32 compute
// mode), the divided differences in float64 either way.
template <typename Backend>
at::Tensor sym_fn_backward(const at::Tensor& gF, const at::Tensor& L, const at::Tensor& V,
                           c10::string_view fn_name, double p) {
  constexpr const char* op = "matbp.sym_fn_backward";
  const auto fn = parse_spectral_fn(fn_name, op);
  check_spectral_exponent(fn, p, op);
  check_eigenbasis_backward_arguments(gF, "gF", L, V, op);
  if (V.numel() == 0) return at::zeros(V.sizes(), gF.options());
  const auto L64 = L.to(at::kDouble).contiguous();
  const at::Tensor fL = spectral_fn_values<Backend>(L64, fn, p);
  const auto gA = eigenbasis_backward<Backend>(
      gF, V.contiguous(),
      SpectralWeight{L64.data_ptr<double>(), fL.data_ptr<double>(), V.size(-1), fn, p});
  report_overflow<Backend>(gA, {gF}, batch_count(V), op);
  return gA.result.to(gF.scalar_type());
}

// D^2 f(A)[G, H], the second Fréchet derivative (symmetric in G and H) from
// A's float64 eigendecomposition L, V: the derivative in A of
// <H, sym_fn_backward(G)>, which is the double backward of sym_fn, exact at
// repeated eigenvalues (second divided differences, f''/2 at a triple tie).
template <typename Backend>
at::Tensor sym_fn_second_derivative(const at::Tensor& G, const at::Tensor& H, const at::Tensor& L,
                                    const at::Tensor& V, c10::string_view fn_name, double p) {
  constexpr const char* op = "matbp.sym_fn_second_derivative";
  const auto fn = parse_spectral_fn(fn_name, op);
  check_spectral_exponent(fn, p, op);
  check_eigenbasis_backward_arguments(G, "G", L, V, op);
  check_fits(H, op, "H", V.sizes(), V, "V");
  if (V.numel() == 0) return at::zeros(V.sizes(), G.options());
  const int64_t n = V.size(-1), batch = batch_count(V);
  // The kernel needs L ascending: sort it, and V's columns with it (V Q V^T
  // is invariant under a common permutation).
  at::Tensor L64, order;
  std::tie(L64, order) = L.to(at::kDouble).sort(-1);
  L64 = L64.contiguous();
  const auto V64 = V.to(at::kDouble).gather(-1, order.unsqueeze(-2).expand(V.sizes()));
  auto f1 = at::empty(V64.sizes(), V64.options().memory_format(at::MemoryFormat::Contiguous));
  const at::Tensor fL = spectral_fn_values<Backend>(L64, fn, p);
  const SpectralWeight first{L64.data_ptr<double>(), fL.data_ptr<double>(), n, fn, p};
  Backend::for_each_pair(batch, n,
                         FillSymmetricWeight<SpectralWeight>{f1.data_ptr<double>(), n, first});
  const auto inv_gap = (L64.unsqueeze(-2) - L64.unsqueeze(-1)).reciprocal().contiguous();
  const auto G64 = G.to(at::kDouble), H64 = H.to(at::kDouble);
  const auto Vt = V64.mT();
  const at::Tensor g = rotated_symmetric_part(G64, V64), h = rotated_symmetric_part(H64, V64);
  const auto pair = at::matmul(f1 * g, h).add_(at::matmul(f1 * h, g)).contiguous();
  auto inner = at::empty_like(g);
  Backend::for_each_pair(batch, n,
                         SpectralSecondOrderInner{g.data_ptr<double>(), h.data_ptr<double>(),
                                                  L64.data_ptr<double>(), f1.data_ptr<double>(),
                                                  inv_gap.data_ptr<double>(), pair.data_ptr<double>(),
                                                  inner.data_ptr<double>(), n, fn, p});
  const auto result = at::matmul(at::matmul(V64, inner), Vt).contiguous();
  report_overflow<Backend>(result, {G64, H64}, batch, op);
  return result.to(G.scalar_type());
}

}  // namespace matbp::ops::generic
