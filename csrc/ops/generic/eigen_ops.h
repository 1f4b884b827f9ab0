#pragma once

// Device-generic kernels of the ops built on a symmetric eigendecomposition
// (generic/backend.h): the backward of sym_eig and svd, sym_fn and projector
// forward and backward. Everything is float64 inside; results are cast to the
// dtype of the argument they answer.

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "../../math/adjoint_weights.h"
#include "../../math/divided_differences.h"
#include "../../math/projector.h"
#include "../checks.h"
#include "../spectral_fn.h"
#include "backend.h"

namespace matbp::ops::generic {

// Tie tolerance of matrix b from its ascending eigenvalues l (n of them): the
// largest magnitude is at one end.
MATBP_HOST_DEVICE inline double eig_tie_tolerance(const double* l, int64_t n) {
  return math::tie_tolerance(math::fmax(math::abs(l[0]), math::abs(l[n - 1])), n);
}

// In place on M = V^T gV (B, n, n): the inner EIG adjoint F o skew(M) off the
// diagonal (symmetric), gL on it.
struct EigAdjointInner {
  double* m;
  const double* lam;
  const double* gl;  // may be null: no gL
  int64_t n;
  MATBP_HOST_DEVICE void operator()(int64_t b, int64_t i, int64_t j) const {
    double* mb = m + b * n * n;
    const double* l = lam + b * n;
    if (i == j) {
      mb[i * n + i] = gl != nullptr ? gl[b * n + i] : 0.0;
      return;
    }
    const double e =
        math::eig_adjoint_entry(mb[i * n + j], mb[j * n + i], l[i], l[j], eig_tie_tolerance(l, n));
    mb[i * n + j] = e;
    mb[j * n + i] = e;
  }
};

// In place on M = V^T gF V: K o sym(M) for a symmetric weight K_ij = w(b, i, j).
template <typename Weight>
struct WeightedSymmetricPart {
  double* m;
  int64_t n;
  Weight weight;
  MATBP_HOST_DEVICE void operator()(int64_t b, int64_t i, int64_t j) const {
    double* mb = m + b * n * n;
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

// gA = V (K o sym(V^T gF V)) V^T, K symmetric.
template <typename Backend, typename Weight>
at::Tensor eigenbasis_backward(const at::Tensor& gF64, const at::Tensor& V64, const Weight& weight) {
  const auto Vt = V64.mT();
  auto inner = at::matmul(at::matmul(Vt, gF64), V64).contiguous();
  const int64_t n = V64.size(-1);
  Backend::for_each_pair(batch_count(inner), n,
                         WeightedSymmetricPart<Weight>{inner.data_ptr<double>(), n, weight});
  return at::matmul(at::matmul(V64, inner), Vt);
}

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
template <typename Backend>
at::Tensor sym_eig_backward(const std::optional<at::Tensor>& gL,
                            const std::optional<at::Tensor>& gV, const at::Tensor& L,
                            const at::Tensor& V) {
  constexpr const char* op = "matbp.sym_eig_backward";
  check_eig_backward_arguments(gL, gV, L, V, op);
  const bool has_gL = given(gL), has_gV = given(gV);
  if ((!has_gL && !has_gV) || V.numel() == 0) {
    return at::zeros_like(V, at::MemoryFormat::Contiguous);
  }
  const auto V64 = V.to(at::kDouble);
  const auto Vt = V64.mT();
  if (!has_gV) {
    return at::matmul(V64 * gL->to(at::kDouble).unsqueeze(-2), Vt).to(V.scalar_type());
  }
  const auto L64 = L.to(at::kDouble).contiguous();
  const auto gL64 = has_gL ? gL->to(at::kDouble).contiguous() : at::Tensor();
  auto inner = at::matmul(Vt, gV->to(at::kDouble)).contiguous();
  const int64_t n = V.size(-1), batch = batch_count(inner);
  Backend::for_each_pair(batch, n,
                         EigAdjointInner{inner.data_ptr<double>(), L64.data_ptr<double>(),
                                         has_gL ? gL64.data_ptr<double>() : nullptr, n});
  auto gA = at::matmul(at::matmul(V64, inner), Vt).contiguous();
  report_overflow<Backend>(gA, {gL64, *gV}, batch, op);
  return gA.to(V.scalar_type());
}

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

// f of every eigenvalue, after clamping round-off excursions out of the
// domain (tie tolerance); matrices with an eigenvalue truly outside it are
// flagged. l_in (B, n) ascending, l_out the clamped values.
struct SpectralValues {
  const double* l_in;
  double* l_out;
  double* f;
  bool* outside;  // (B,), set for matrices with an eigenvalue outside the domain
  int64_t n;
  math::SpectralFn fn;
  double p;
  MATBP_HOST_DEVICE void operator()(int64_t idx) const {
    const int64_t b = idx / n;
    const double* l = l_in + b * n;
    const double value = math::clamp_to_domain(fn, l_in[idx], p, eig_tie_tolerance(l, n));
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
                                              fn, p});
  const auto F64 = at::matmul(eig.V * fL.unsqueeze(-2), eig.V.mT());
  // f(A) beyond float64 (exp of 800, large |p|): an error, not Inf mixed with NaN.
  const auto representable = at::isfinite(F64).reshape({batch, -1}).all(1);
  auto F = F64.to(A.scalar_type()).contiguous();
  const bool raise = raises_on_failure<Backend>();
  report_failures(eig.finite, raise, {F, L, eig.V}, [&](int64_t b) {
    return std::string(op) + ": argument 'A' contains NaN or Inf (matrix " + std::to_string(b) +
           " of the flattened batch)";
  });
  report_failures(eig.converged, raise, {F, L, eig.V}, [&](int64_t b) {
    return std::string(op) + ": the eigensolver failed to converge on matrix " +
           std::to_string(b) + " of the flattened batch";
  });
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

// The backward of the ops whose saved tensors are a float64 eigendecomposition
// L (*, n), V (*, n, n) of A: the incoming gradient g (*, n, n) and L fit V.
inline void check_eigenbasis_backward_arguments(const at::Tensor& g, const char* g_name,
                                                const at::Tensor& L, const at::Tensor& V,
                                                const char* op) {
  check_float_matrix(V, op, "V", /*square=*/true);
  check_fits(L, op, "L", with_trailing(V, {V.size(-1)}), V, "V");
  check_fits(g, op, g_name, V.sizes(), V, "V");
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
  const EigenResult eig = Backend::sym_eig64(A, op, "A");
  const auto tol = rank_tolerances(eig.L, rtol, op);
  const auto mask = (eig.L.abs() > tol.unsqueeze(-1)).to(at::kDouble);
  auto P = at::matmul(eig.V * mask.unsqueeze(-2), eig.V.mT()).to(A.scalar_type());
  const bool raise = raises_on_failure<Backend>();
  report_failures(eig.finite, raise, {P, eig.L, eig.V}, [&](int64_t b) {
    return std::string(op) + ": argument 'A' contains NaN or Inf (matrix " + std::to_string(b) +
           " of the flattened batch)";
  });
  report_failures(eig.converged, raise, {P, eig.L, eig.V}, [&](int64_t b) {
    return std::string(op) + ": the eigensolver failed to converge on matrix " +
           std::to_string(b) + " of the flattened batch";
  });
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
             gP.to(at::kDouble), V.to(at::kDouble),
             ProjectorWeight{L64.data_ptr<double>(), tol.data_ptr<double>(), V.size(-1)})
      .to(gP.scalar_type());
}

}  // namespace matbp::ops::generic
