// CPU kernels of matbp::o2p_log_with_eig and matbp::o2p_log_backward: the
// second-order pooling layer C = log(X^T X + eps I), X (*, m, d).
//
// Two paths, chosen by shape (the backward repeats the choice):
// - m < d (conv features: fewer positions than channels), the m x m path:
//   K = X X^T = U diag(s) U^T, h(s) = log1p(s/eps)/s, Y = U^T X,
//     C = log(eps) I + Y^T diag(h) Y,
//   gX = U [2 diag(h) Y G + (2 h[s_i, s_j] o Y G Y^T) Y],  G = sym(gC).
//   No d x d eigenproblem; the d - m eigenvalues equal to eps are exact by
//   construction, and null directions of X are annihilated by the Y factors.
// - m >= d, the d x d path: X^T X = W diag(s) W^T, C = W log(eps + s) W^T,
//   gX = 2 X gA with gA the Daleckii–Krein backward of log at eps + s.
// Saved for the backward: the Gram eigenvalues s (refined, clamped >= 0), the
// eigenvectors (U or W) and, on the m x m path, Y = U^T X (empty otherwise).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../../math/o2p_log.h"
#include "../checks.h"
#include "batch_loops.h"
#include "sym_eig_kernel.h"
#include "sym_fn_kernel.h"

namespace matbp::ops::cpu {
namespace {

constexpr const char* kOp = "matbp.o2p_log";

bool uses_gram_of_rows(const at::Tensor& X) { return X.size(-2) < X.size(-1); }

void check_o2p_arguments(const at::Tensor& X, double eps, const char* op) {
  check_float_matrix(X, op, "X", /*square=*/false);
  TORCH_CHECK(std::isfinite(eps) && eps > 0, op,
              ": argument 'eps' must be a positive finite number, got ", eps);
}

// The Gram eigenvalues far below the largest carry an absolute error of
// ~eps ||X||^2 from forming the Gram matrix, which log(eps + s) and h(s)
// would amplify by 1/eps. Their Rayleigh quotients from X itself,
// s = ||X^T u||^2 (m x m path) or ||X w||^2 (d x d path), are accurate to
// second order in the eigenvector error; null directions come out ~0.
// Also clamps round-off negatives to 0. X64 is (B, m, d) contiguous, V the
// (B, k, k) eigenvectors (columns), S (B, k) ascending; both updated in place.
void refine_small_gram_eigenvalues(const at::Tensor& X64, const at::Tensor& V, at::Tensor& S,
                                   bool gram_of_rows) {
  const int64_t m = X64.size(-2), d = X64.size(-1), k = S.size(-1);
  const int64_t batch = S.numel() / std::max<int64_t>(k, 1);
  if (batch == 0 || k == 0) return;
  const double* x = X64.data_ptr<double>();
  const double* v = V.data_ptr<double>();
  double* s = S.data_ptr<double>();
  const double threshold = std::sqrt(math::machine_epsilon<double>());
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> proj(std::max(m, d));
    for (int64_t b = begin; b < end; ++b) {
      const double* xb = x + b * m * d;
      const double* vb = v + b * k * k;
      double* sb = s + b * k;
      const double cutoff = threshold * std::abs(sb[k - 1]);
      for (int64_t i = 0; i < k && sb[i] <= cutoff; ++i) {
        double norm2 = 0;
        if (gram_of_rows) {  // ||X^T u_i||^2, u_i in R^m
          std::fill(proj.begin(), proj.begin() + d, 0.0);
          for (int64_t r = 0; r < m; ++r) {
            const double u = vb[r * k + i];
            for (int64_t c = 0; c < d; ++c) proj[c] += u * xb[r * d + c];
          }
          for (int64_t c = 0; c < d; ++c) norm2 += proj[c] * proj[c];
        } else {  // ||X w_i||^2, w_i in R^d
          for (int64_t r = 0; r < m; ++r) {
            double dot = 0;
            for (int64_t c = 0; c < d; ++c) dot += xb[r * d + c] * vb[c * k + i];
            norm2 += dot * dot;
          }
        }
        sb[i] = norm2;
      }
      for (int64_t i = 0; i < k; ++i) sb[i] = math::clamp_gram_eigenvalue(sb[i]);
    }
  });
}

template <typename Fn>
at::Tensor map_eigenvalues(const at::Tensor& S, const Fn& fn) {
  auto out = at::empty_like(S);
  const int64_t count = S.numel();
  const double* s = S.data_ptr<double>();
  double* o = out.data_ptr<double>();
  at::parallel_for(0, count, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) o[i] = fn(s[i]);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> o2p_log_with_eig_cpu(
    const at::Tensor& X, double eps) {
  check_o2p_arguments(X, eps, kOp);
  TORCH_CHECK(all_finite(X), kOp, ": argument 'X' contains NaN or Inf");
  const auto X64 = X.to(at::kDouble).contiguous();
  const bool rows = uses_gram_of_rows(X);
  const auto gram = rows ? at::matmul(X64, X64.mT()) : at::matmul(X64.mT(), X64);
  auto [S, V] = sym_eig_lapack(gram, at::kDouble, kOp,
                               rows ? "X X^T (the Gram matrix of X)" : "X^T X (the Gram matrix of X)");
  refine_small_gram_eigenvalues(X64, V, S, rows);
  if (rows) {
    const auto h = map_eigenvalues(S, [eps](double s) { return math::o2p_h(s, eps); });
    auto Y = at::matmul(V.mT(), X64);
    auto C = at::matmul(Y.mT(), h.unsqueeze(-1) * Y);
    C.diagonal(0, -2, -1).add_(std::log(eps));
    return {C.to(X.scalar_type()), S, V, Y};
  }
  const auto log_l = map_eigenvalues(S, [eps](double s) { return math::o2p_log_eigenvalue(s, eps); });
  auto C = at::matmul(V * log_l.unsqueeze(-2), V.mT());
  auto no_y = at::empty(with_trailing(X, {0, X.size(-1)}), X64.options());
  return {C.to(X.scalar_type()), S, V, no_y};
}

at::Tensor o2p_log_backward_cpu(const at::Tensor& gC, const at::Tensor& X, const at::Tensor& S,
                                const at::Tensor& U, const at::Tensor& Y, double eps) {
  constexpr const char* op = "matbp.o2p_log_backward";
  check_o2p_arguments(X, eps, op);
  const int64_t m = X.size(-2), d = X.size(-1), k = std::min(m, d);
  const bool rows = uses_gram_of_rows(X);
  TORCH_CHECK(gC.sizes() == with_trailing(X, {d, d}), op, ": 'gC' must have shape (*, d, d) = ",
              c10::IntArrayRef(with_trailing(X, {d, d})), ", got ", gC.sizes());
  TORCH_CHECK(S.sizes() == with_trailing(X, {k}) && U.sizes() == with_trailing(X, {k, k}) &&
                  Y.sizes() == with_trailing(X, {rows ? m : 0, d}),
              op, ": saved tensors S (*, k), U (*, k, k), Y (*, m or 0, d), k = min(m, d) = ", k,
              ", do not match 'X' ", X.sizes(), ": got ", S.sizes(), ", ", U.sizes(), ", ",
              Y.sizes());
  const auto G64 = gC.to(at::kDouble);
  const auto S64 = S.to(at::kDouble).contiguous();
  const auto U64 = U.to(at::kDouble);
  if (!rows) {
    const auto gA =
        spectral_function_backward(G64, S64 + eps, U64, math::SpectralFn::Log, 0.0, 2.0);
    return at::matmul(X.to(at::kDouble), gA).to(X.scalar_type());
  }
  const auto Y64 = Y.to(at::kDouble);
  const auto T = at::matmul(Y64, symmetrize(G64));  // Y G
  auto inner = at::matmul(T, Y64.mT()).contiguous();  // Y G Y^T, symmetric
  auto h2 = at::empty_like(S64);                      // 2 h(s)
  const double* s = S64.data_ptr<double>();
  double* h2p = h2.data_ptr<double>();
  for (int64_t e = 0; e < S64.numel(); ++e) h2p[e] = 2.0 * math::o2p_h(s[e], eps);
  transform_pairs_inplace(
      inner,
      [&](int64_t b, int64_t i, int64_t j, double m_ij, double m_ji) {
        const double* sb = s + b * m;
        const double* hb = h2p + b * m;
        // 2 h[s_i, s_j] from the halved 2h values; m_ij = m_ji up to rounding.
        const double w = math::o2p_h_divided_difference(sb[i], sb[j], 0.5 * hb[i], 0.5 * hb[j], eps);
        const double e = w * (m_ij + m_ji);
        return std::pair<double, double>(e, e);
      },
      [&](int64_t b, int64_t i, double m_ii) {
        const double si = s[b * m + i], hi = 0.5 * h2p[b * m + i];
        return 2.0 * math::o2p_h_divided_difference(si, si, hi, hi, eps) * m_ii;
      });
  auto R = at::matmul(inner, Y64);
  R.addcmul_(h2.unsqueeze(-1), T);
  return at::matmul(U64, R).to(X.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("o2p_log_with_eig", &o2p_log_with_eig_cpu);
  m.impl("o2p_log_backward", &o2p_log_backward_cpu);
}

}  // namespace matbp::ops::cpu
