#pragma once

// Device-generic kernels of the second-order pooling layer
// C = log(X^T X + eps I) (generic/backend.h), batched with ATen GEMMs: the
// CUDA backend's o2p_log, run on the CPU by the C++ tests. The CPU backend
// registers its own per-matrix pipelines (cpu/o2p_log_kernel.cpp, cache-
// resident, LAPACK per matrix); the mathematics, the path choice, the saved
// tensors and the small-eigenvalue refinement are the same:
// - m < d, the rows path: X X^T = U diag(s) U^T, Y = U^T X, h(s) = log1p(s/eps)/s,
//   C = log(eps) I + Y^T diag(h) Y;
//   gX = U [2 diag(h) Y G + (2 h[s_i, s_j] o Y G Y^T) Y], G = sym(gC).
// - m >= d, the cols path: X^T X = U diag(s) U^T, C = U log(eps + s) U^T,
//   gX = 2 X U (log[eps + s_i, eps + s_j] o U^T G U) U^T.
// Gram eigenvalues below sqrt(eps_mach) max s are replaced by their Rayleigh
// quotients from X (||X^T u||^2 = ||row of Y||^2, or ||X w||^2), accurate
// where the Gram matrix's rounding is not.

#include <ATen/ATen.h>

#include <cmath>
#include <string>

#include "../../math/divided_differences.h"
#include "../../math/o2p_log.h"
#include "../checks.h"
#include "backend.h"

namespace matbp::ops::generic {

inline bool o2p_rows_path(const at::Tensor& X) { return X.size(-2) < X.size(-1); }

inline void check_o2p_arguments(const at::Tensor& X, double eps, const char* op) {
  check_float_matrix(X, op, "X", /*square=*/false);
  // Below the smallest normal number 1/eps, h(0), overflows.
  TORCH_CHECK(std::isfinite(eps) && eps >= math::smallest_normal<double>(), op,
              ": argument 'eps' must be a positive finite number >= 2.2250738585072014e-308 ",
              "(the smallest normal float64), got ", eps);
}

// The saved tensors of o2p_log_with_eig must fit X: S (*, k), U (*, k, k),
// Y (*, m or 0, d), k = min(m, d), all on X's device.
inline void check_o2p_saved_arguments(const at::Tensor& X, const at::Tensor& S,
                                      const at::Tensor& U, const at::Tensor& Y, double eps,
                                      const char* op) {
  check_o2p_arguments(X, eps, op);
  const int64_t m = X.size(-2), d = X.size(-1), k = std::min(m, d);
  const bool rows = o2p_rows_path(X);
  check_fits(S, op, "S", with_trailing(X, {k}), X, "X");
  check_fits(U, op, "U", with_trailing(X, {k, k}), X, "X");
  check_fits(Y, op, "Y", with_trailing(X, {rows ? m : 0, d}), X, "X");
}

inline void check_o2p_backward_arguments(const at::Tensor& gC, const at::Tensor& X,
                                         const at::Tensor& S, const at::Tensor& U,
                                         const at::Tensor& Y, double eps, const char* op) {
  check_o2p_saved_arguments(X, S, U, Y, eps, op);
  check_fits(gC, op, "gC", with_trailing(X, {X.size(-1), X.size(-1)}), X, "X");
}

// h(s_i) (rows path) or log(eps + s_i) (cols path) of clamped Gram
// eigenvalues, in place of nothing: s is read, out written.
struct O2pGramValues {
  const double* s;
  double* out;
  double eps;
  bool rows_path;
  MATBP_HOST_DEVICE void operator()(int64_t idx) const {
    out[idx] = rows_path ? math::o2p_h(s[idx], eps) : math::o2p_log_eigenvalue(s[idx], eps);
  }
};

// In place on M = Y sym(G) Y^T (rows path): 2 h[s_i, s_j] o sym(M).
struct O2pRowsInner {
  double* m;
  const double* s;
  const double* h;
  double eps;
  int64_t n;
  MATBP_HOST_DEVICE void operator()(int64_t b, int64_t i, int64_t j) const {
    double* mb = m + b * n * n;
    const double* sb = s + b * n;
    const double* hb = h + b * n;
    if (i == j) {
      if (mb[i * n + i] != 0.0) {
        mb[i * n + i] *= 2.0 * math::o2p_h_divided_difference(sb[i], sb[i], hb[i], hb[i], eps);
      }
      return;
    }
    // Zero stays zero where h[s_i, s_j] ~ 1/eps^2 overflows (tiny eps).
    const double sum = mb[i * n + j] + mb[j * n + i];
    const double e =
        sum == 0.0 ? 0.0 : math::o2p_h_divided_difference(sb[i], sb[j], hb[i], hb[j], eps) * sum;
    mb[i * n + j] = e;
    mb[j * n + i] = e;
  }
};

// In place on M = U^T sym(G) U (cols path): 2 log[eps + s_i, eps + s_j] o sym(M).
struct O2pColsInner {
  double* m;
  const double* s;
  const double* log_lam;  // log(eps + s)
  double eps;
  int64_t n;
  MATBP_HOST_DEVICE void operator()(int64_t b, int64_t i, int64_t j) const {
    double* mb = m + b * n * n;
    const double* sb = s + b * n;
    const double* lb = log_lam + b * n;
    const double lam_i = eps + sb[i];
    if (i == j) {
      mb[i * n + i] *= 2.0 / lam_i;
      return;
    }
    const double e = math::divided_difference_log(lam_i, eps + sb[j], lb[i], lb[j]) *
                     (mb[i * n + j] + mb[j * n + i]);
    mb[i * n + j] = e;
    mb[j * n + i] = e;
  }
};

// math::o2p_refined_gram_eigenvalue of every Gram eigenvalue: s (B, k)
// ascending, its Rayleigh quotients (B, k), out (B, k).
struct O2pRefineGram {
  const double* s;
  const double* quotients;
  double* out;
  int64_t k, m, d;
  MATBP_HOST_DEVICE void operator()(int64_t idx) const {
    const double s_max = math::abs(s[(idx / k) * k + k - 1]);
    const double* q = quotients + idx;
    out[idx] = math::o2p_refined_gram_eigenvalue(s[idx], s_max, m, d, [q] { return *q; });
  }
};

template <typename Backend>
at::Tensor refine_gram_eigenvalues(const at::Tensor& s, const at::Tensor& quotients, int64_t m,
                                   int64_t d) {
  const auto sc = s.contiguous(), qc = quotients.contiguous();
  auto out = at::empty_like(sc);
  if (sc.numel() == 0) return out;
  Backend::for_each(sc.numel(), O2pRefineGram{sc.data_ptr<double>(), qc.data_ptr<double>(),
                                              out.data_ptr<double>(), sc.size(-1), m, d});
  return out;
}

inline at::Tensor symmetric_part(const at::Tensor& G) { return (G + G.mT()).mul_(0.5); }

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> o2p_log_with_eig(const at::Tensor& X,
                                                                             double eps) {
  constexpr const char* op = "matbp.o2p_log";
  check_o2p_arguments(X, eps, op);
  const int64_t m = X.size(-2), d = X.size(-1), batch = batch_count(X);
  const bool rows = o2p_rows_path(X);
  const int64_t k = rows ? m : d;
  const auto opts = X.options().dtype(at::kDouble);
  const auto X64 = X.to(at::kDouble).reshape({batch, m, d});
  if (batch == 0 || k == 0) {
    auto C = at::zeros(with_trailing(X, {d, d}), X.options());
    C.diagonal(0, -2, -1).fill_(std::log(eps));
    return {C, at::zeros(with_trailing(X, {k}), opts), at::zeros(with_trailing(X, {k, k}), opts),
            at::zeros(with_trailing(X, {rows ? m : 0, d}), opts)};
  }
  const auto finite = at::isfinite(X64).reshape({batch, m * d}).all(1);
  const auto gram = rows ? at::matmul(X64, X64.mT()) : at::matmul(X64.mT(), X64);
  EigenResult eig = Backend::sym_eig(gram, at::kDouble, op, rows ? "X X^T" : "X^T X");
  const auto& V = eig.V;  // U, the Gram eigenvectors of either path
  at::Tensor Y, s;
  if (rows) {
    Y = at::matmul(V.mT(), X64);
    s = refine_gram_eigenvalues<Backend>(eig.L, Y.square().sum(-1), m, d);
    // Rows of Y along numerically null directions are noise: zero, as s is.
    Y = (Y * (s > 0).unsqueeze(-1)).contiguous();
  } else {
    Y = at::zeros({batch, 0, d}, opts);
    s = refine_gram_eigenvalues<Backend>(eig.L, at::matmul(X64, V).square().sum(-2), m, d);
  }
  auto values = at::empty_like(s);
  Backend::for_each(batch * k, O2pGramValues{s.data_ptr<double>(), values.data_ptr<double>(), eps,
                                             rows});
  at::Tensor C;
  if (rows) {
    C = at::matmul(Y.mT(), Y * values.unsqueeze(-1));
    C.diagonal(0, -2, -1).add_(std::log(eps));
  } else {
    C = at::matmul(V * values.unsqueeze(-2), V.mT());
  }
  // Exactly symmetric, as the CPU kernels' symmetric products are.
  C = symmetric_part(C).to(X.scalar_type()).contiguous();
  auto V_out = V.contiguous();
  const bool raise = raises_on_failure<Backend>();
  const std::initializer_list<at::Tensor> outputs = {C, s, V_out, Y};
  report_failures(finite, raise, outputs,
                  [&](int64_t b) { return nonfinite_matrix_message(op, "X", b); });
  const auto gram_ok = eig.finite.defined() && eig.converged.defined()
                           ? eig.finite.logical_and(eig.converged).logical_or(finite.logical_not())
                           : at::Tensor();
  report_failures(gram_ok, raise, outputs, [&](int64_t b) {
    return std::string(op) + ": the Gram matrix " + (rows ? "X X^T" : "X^T X") + " of matrix " +
           std::to_string(b) + " of the flattened batch overflows or the eigensolver failed on it";
  });
  return {C.reshape(with_trailing(X, {d, d})), s.reshape(with_trailing(X, {k})),
          V_out.reshape(with_trailing(X, {k, k})), Y.reshape(with_trailing(X, {rows ? m : 0, d}))};
}

// The saved Gram eigendecomposition in float64, s (B, k) and U (B, k, k),
// and the values the derivatives weight by: h(s) (rows path) or
// log(eps + s) (cols path).
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> saved_gram(const at::Tensor& S, const at::Tensor& U,
                                                          int64_t batch, int64_t k, double eps,
                                                          bool rows) {
  auto s = S.to(at::kDouble).reshape({batch, k}).contiguous();
  auto values = at::empty_like(s);
  Backend::for_each(batch * k, O2pGramValues{s.data_ptr<double>(), values.data_ptr<double>(), eps,
                                             rows});
  return {s, U.to(at::kDouble).reshape({batch, k, k}), values};
}

template <typename Backend>
at::Tensor o2p_log_backward(const at::Tensor& gC, const at::Tensor& X, const at::Tensor& S,
                            const at::Tensor& U, const at::Tensor& Y, double eps) {
  constexpr const char* op = "matbp.o2p_log_backward";
  check_o2p_backward_arguments(gC, X, S, U, Y, eps, op);
  const int64_t m = X.size(-2), d = X.size(-1), k = std::min(m, d), batch = batch_count(X);
  const bool rows = o2p_rows_path(X);
  if (batch == 0 || m == 0 || d == 0) return at::zeros(X.sizes(), X.options());
  const auto G = symmetric_part(gC.to(at::kDouble).reshape({batch, d, d}));
  at::Tensor s, V, values;
  std::tie(s, V, values) = saved_gram<Backend>(S, U, batch, k, eps, rows);
  at::Tensor gX;
  if (rows) {
    const auto Y64 = Y.to(at::kDouble).reshape({batch, m, d});
    const auto T = at::matmul(Y64, G);
    auto inner = at::matmul(T, Y64.mT()).contiguous();
    Backend::for_each_pair(batch, m, O2pRowsInner{inner.data_ptr<double>(), s.data_ptr<double>(),
                                                  values.data_ptr<double>(), eps, m});
    const auto R = at::baddbmm(T * values.unsqueeze(-1).mul(2.0), inner, Y64);
    gX = at::matmul(V, R);
  } else {
    const auto X64 = X.to(at::kDouble).reshape({batch, m, d});
    auto inner = at::matmul(at::matmul(V.mT(), G), V).contiguous();
    Backend::for_each_pair(batch, d, O2pColsInner{inner.data_ptr<double>(), s.data_ptr<double>(),
                                                  values.data_ptr<double>(), eps, d});
    gX = at::matmul(X64, at::matmul(at::matmul(V, inner), V.mT()));
  }
  gX = gX.contiguous();
  report_overflow<Backend>(gX, {G}, batch, op);
  return gX.reshape(X.sizes()).to(X.scalar_type());
}

// The tangent dC of C = log(X^T X + eps I) along dX (forward mode), from the
// saved Gram eigendecomposition, with the backward's divided differences:
// - rows path: C = log(eps) I + X^T h(X X^T) X, T = U^T dX,
//     dC = T^T diag(h) Y + Y^T diag(h) T + Y^T (h[s_i, s_j] o (T Y^T + Y T^T)) Y;
// - cols path: dC = U (log[eps + s_i, eps + s_j] o U^T (dX^T X + X^T dX) U) U^T.
// The backward is its adjoint: <gC, dC> = <o2p_log_backward(gC), dX>.
template <typename Backend>
at::Tensor o2p_log_jvp(const at::Tensor& dX, const at::Tensor& X, const at::Tensor& S,
                       const at::Tensor& U, const at::Tensor& Y, double eps) {
  constexpr const char* op = "matbp.o2p_log_jvp";
  check_o2p_saved_arguments(X, S, U, Y, eps, op);
  check_fits(dX, op, "dX", X.sizes(), X, "X");
  const int64_t m = X.size(-2), d = X.size(-1), k = std::min(m, d), batch = batch_count(X);
  const bool rows = o2p_rows_path(X);
  if (batch == 0 || m == 0 || d == 0) return at::zeros(with_trailing(X, {d, d}), X.options());
  const auto dX64 = dX.to(at::kDouble).reshape({batch, m, d});
  at::Tensor s, V, values;
  std::tie(s, V, values) = saved_gram<Backend>(S, U, batch, k, eps, rows);
  at::Tensor dC;
  if (rows) {
    const auto Y64 = Y.to(at::kDouble).reshape({batch, m, d});
    const auto T = at::matmul(V.mT(), dX64);
    auto inner = at::matmul(T, Y64.mT()).contiguous();
    Backend::for_each_pair(batch, m, O2pRowsInner{inner.data_ptr<double>(), s.data_ptr<double>(),
                                                  values.data_ptr<double>(), eps, m});
    const auto hY = Y64 * values.unsqueeze(-1);
    // Symmetrised below: 2 T^T diag(h) Y becomes T^T diag(h) Y + Y^T diag(h) T.
    dC = at::matmul(Y64.mT(), at::matmul(inner, Y64)) + at::matmul(T.mT(), hY).mul(2.0);
  } else {
    const auto X64 = X.to(at::kDouble).reshape({batch, m, d});
    auto inner = at::matmul(at::matmul(V.mT(), at::matmul(X64.mT(), dX64)), V).contiguous();
    Backend::for_each_pair(batch, d, O2pColsInner{inner.data_ptr<double>(), s.data_ptr<double>(),
                                                  values.data_ptr<double>(), eps, d});
    dC = at::matmul(at::matmul(V, inner), V.mT());
  }
  dC = symmetric_part(dC).contiguous();
  report_overflow<Backend>(dC, {dX64}, batch, op);
  return dC.reshape(with_trailing(X, {d, d})).to(X.scalar_type());
}

}  // namespace matbp::ops::generic
