// CPU kernels of matbp::o2p_log_with_eig and matbp::o2p_log_backward: the
// second-order pooling layer C = log(X^T X + eps I), X (*, m, d).
//
// Two paths, chosen by shape (the backward repeats the choice):
// - m < d (conv features: fewer positions than channels), the rows path:
//   K = X X^T = U diag(s) U^T, h(s) = log1p(s/eps)/s, Y = U^T X,
//     C = log(eps) I + Y^T diag(h) Y,
//   gX = U [2 diag(h) Y G + (2 h[s_i, s_j] o Y G Y^T) Y],  G = sym(gC).
//   No d x d eigenproblem; the d - m eigenvalues equal to eps are exact by
//   construction, and null directions of X are annihilated by the Y factors.
// - m >= d, the cols path: X^T X = U diag(s) U^T, C = U log(eps + s) U^T,
//   gX = 2 X gA with gA the Daleckii–Krein backward of log at eps + s.
// Saved for the backward: the Gram eigenvalues s (refined, clamped >= 0), the
// eigenvectors U and, on the rows path, Y = U^T X (empty otherwise).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../../math/o2p_log.h"
#include "../checks.h"
#include "../generic/o2p_log.h"
#include "batch_loops.h"
#include "cpu_backend.h"
#include "lapack.h"
#include "sym_eig_solver.h"
#include "../low_precision.h"

namespace matbp::ops::cpu {
namespace {

constexpr const char* kOp = "matbp.o2p_log";

using generic::check_o2p_arguments;
using generic::check_o2p_backward_arguments;

// math::o2p_refined_gram_eigenvalue of one matrix's Gram eigenvalues s (k,
// ascending, in place), the Rayleigh quotients computed only where needed:
// x (m, d) row-major, v (k, k) row-major with the eigenvectors in its columns.
void refine_small_gram_eigenvalues(const double* x, int64_t m, int64_t d, const double* v,
                                   int64_t k, double* s, bool rows_path) {
  if (k == 0) return;
  const double s_max = std::abs(s[k - 1]);
  for (int64_t i = 0; i < k; ++i) {
    s[i] = math::o2p_refined_gram_eigenvalue(s[i], s_max, m, d, [&] {
      double norm2 = 0;
      if (rows_path) {  // ||X^T u_i||^2, u_i in R^m
        for (int64_t c = 0; c < d; ++c) {
          double dot = 0;
          for (int64_t r = 0; r < m; ++r) dot += v[r * k + i] * x[r * d + c];
          norm2 += dot * dot;
        }
      } else {  // ||X u_i||^2, u_i in R^d
        for (int64_t r = 0; r < m; ++r) {
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += x[r * d + c] * v[c * k + i];
          norm2 += dot * dot;
        }
      }
      return norm2;
    });
  }
}

// Per-matrix helpers of the fused pipelines below: results are written
// directly when the output is float64, else through a buffer (as_real,
// batch_loops.h, reads the inputs).
template <typename out_t>
double* output_buffer(out_t* dst, int64_t count, std::vector<double>& buffer) {
  if constexpr (std::is_same_v<out_t, double>) {
    return dst;
  } else {
    buffer.resize(count);
    return buffer.data();
  }
}

template <typename out_t>
void store_output(const double* src, int64_t count, out_t* dst) {
  if constexpr (!std::is_same_v<out_t, double>) {
    for (int64_t e = 0; e < count; ++e) dst[e] = static_cast<out_t>(src[e]);
  }
}

// The Gram eigendecompositions of up to width() matrices at once, k = m
// (X X^T, rows_path) or k = d (X^T X): each formed with BLAS, checked finite
// (an overflowing Gram matrix must not reach the solver), decomposed by the
// CPU eigensolver (sym_eig_solver.h: sym_eig_ql_lanes matrices per call for small k,
// LAPACK one at a time above), its small eigenvalues refined. The
// eigenvectors land in v[q] (k, k) row-major, as columns; transposed(q) is
// the same matrix transposed (the solver's rows).
class GramEigen {
 public:
  explicit GramEigen(int k)
      : k_(k), solver_(k), gram_(int64_t(solver_.width()) * k * k), a_(solver_.width()),
        w_(solver_.width()), slot_(solver_.width()) {}

  int width() const { return solver_.width(); }

  // Matrices x[q] (m, d) row-major, q < count <= width(): s[q] (k) and v[q].
  // Returns the bit mask of the matrices whose Gram matrix overflowed or on
  // which the solver failed.
  unsigned decompose(int count, const double* const* x, int m, int d, bool rows_path,
                     double* const* s, double* const* v) {
    const int64_t kk = int64_t(k_) * k_;
    unsigned failed = 0;
    int packed = 0;
    for (int q = 0; q < count; ++q) {
      double* gram = gram_.data() + q * kk;
      if (rows_path) {
        gemm_symmetric_result(false, true, m, d, x[q], d, x[q], d, gram, m);
      } else {
        gemm_symmetric_result(true, false, d, m, x[q], d, x[q], d, gram, d);
      }
      if (!all_finite(gram, kk)) {
        failed |= 1u << q;
        continue;
      }
      a_[packed] = gram;
      w_[packed] = s[q];
      slot_[packed++] = q;
    }
    const unsigned not_converged = solver_.decompose(packed, a_.data(), w_.data());
    for (int p = 0; p < packed; ++p) {
      const int q = slot_[p];
      if (not_converged & (1u << p)) {
        failed |= 1u << q;
        continue;
      }
      transpose_into(a_[p], k_, v[q]);
      refine_small_gram_eigenvalues(x[q], m, d, v[q], k_, s[q], rows_path);
    }
    return failed;
  }

  const double* transposed(int q) const { return gram_.data() + int64_t(q) * k_ * k_; }

 private:
  int k_;
  SymEigSolver<> solver_;
  std::vector<double> gram_;
  std::vector<double*> a_, w_;
  std::vector<int> slot_;
};

// The Gram eigendecompositions of one thread's share [begin, end) of the
// batch, a pack (GramEigen::width() matrices) at a time, into s_out and u_out
// (k = m on the rows path, d on the cols path), each input widened to float64
// (in place for float64 data); then body(b, x, s, u, ut) for every matrix b
// that decomposed: x its float64 data, s its eigenvalues, u its
// eigenvectors as columns, ut the same transposed. The others go to `failed`.
template <typename scalar_t, typename Body>
void for_each_gram_eigen(const scalar_t* x_in, int64_t begin, int64_t end, int m, int d,
                         bool rows_path, double* s_out, double* u_out, FirstFailure& failed,
                         const Body& body) {
  const int k = rows_path ? m : d;
  const int64_t md = int64_t(m) * d;
  GramEigen eig(k);
  const int width = eig.width();
  std::vector<std::vector<double>> buffers(width);
  std::vector<const double*> x(width);
  std::vector<double*> s(width), u(width);
  for (int64_t b0 = begin; b0 < end; b0 += width) {
    const int count = static_cast<int>(std::min<int64_t>(width, end - b0));
    for (int q = 0; q < count; ++q) {
      const int64_t b = b0 + q;
      x[q] = as_real<double>(x_in + b * md, md, buffers[q]);
      s[q] = s_out + b * k;
      u[q] = u_out + b * int64_t(k) * k;
    }
    const unsigned bad = eig.decompose(count, x.data(), m, d, rows_path, s.data(), u.data());
    for (int q = 0; q < count; ++q) {
      if (bad & (1u << q)) {
        failed.record(b0 + q);
        continue;
      }
      body(b0 + q, x[q], s[q], u[q], eig.transposed(q));
    }
  }
}

// The rows path, one pack of matrices after another on each thread with
// buffers that stay in cache: no batch-sized temporaries, so no page faults
// and no passes over memory between the GEMMs.
template <typename scalar_t>
void o2p_rows_forward(const scalar_t* x_in, int64_t batch, int m, int d, double eps, scalar_t* c_out,
                      double* s_out, double* u_out, double* y_out, FirstFailure& failed) {
  const double log_eps = std::log(eps);
  const int64_t md = int64_t(m) * d, dd = int64_t(d) * d;
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> c, hy(md);
    for_each_gram_eigen(x_in, begin, end, m, d, /*rows_path=*/true, s_out, u_out, failed,
                        [&](int64_t b, const double* xb, const double* s, const double*,
                            const double* ut) {
      double* y = y_out + b * md;
      // Y = U^T X, C = Y^T diag(h) Y + log(eps) I.
      gemm_row_major(false, false, m, d, m, 1.0, ut, m, xb, d, 0.0, y, d);
      for (int i = 0; i < m; ++i) {
        // Rows along numerically null directions are noise: zero, as s is.
        if (s[i] == 0.0) std::fill(y + int64_t(i) * d, y + int64_t(i + 1) * d, 0.0);
        const double h = math::o2p_h(s[i], eps);
        for (int j = 0; j < d; ++j) hy[int64_t(i) * d + j] = h * y[int64_t(i) * d + j];
      }
      double* cb = output_buffer(c_out + b * dd, dd, c);
      gemm_symmetric_result(true, false, d, m, y, d, hy.data(), d, cb, d);
      for (int i = 0; i < d; ++i) cb[int64_t(i) * d + i] += log_eps;
      store_output(cb, dd, c_out + b * dd);
    });
  });
}

// The cols path (m >= d), in packs in cache like the rows path:
// X^T X = U diag(s) U^T, C = U diag(log(eps + s)) U^T.
template <typename scalar_t>
void o2p_cols_forward(const scalar_t* x_in, int64_t batch, int m, int d, double eps,
                      scalar_t* c_out, double* s_out, double* u_out, FirstFailure& failed) {
  const int64_t dd = int64_t(d) * d;
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> c, ul(dd);
    for_each_gram_eigen(x_in, begin, end, m, d, /*rows_path=*/false, s_out, u_out, failed,
                        [&](int64_t b, const double*, const double* s, const double* u,
                            const double*) {
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < d; ++j)
          ul[int64_t(i) * d + j] = u[int64_t(i) * d + j] * math::o2p_log_eigenvalue(s[j], eps);
      double* cb = output_buffer(c_out + b * dd, dd, c);
      gemm_symmetric_result(false, true, d, d, ul.data(), d, u, d, cb, d);
      store_output(cb, dd, c_out + b * dd);
    });
  });
}

// Backward of the cols path, per matrix: M = 2 log[eps + s_i, eps + s_j] o
// sym(U^T G U), gA = U M U^T, gX = X gA.
template <typename grad_t, typename out_t>
void o2p_cols_backward(const grad_t* g_in, const double* s_in, const double* u_in,
                       const out_t* x_in, int64_t batch, int m, int d, double eps, out_t* gx_out) {
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    const int64_t md = int64_t(m) * d;
    std::vector<double> gs(int64_t(d) * d), t(int64_t(d) * d), inner(int64_t(d) * d),
        ga(int64_t(d) * d), x, gx, log_lam(d);
    for (int64_t b = begin; b < end; ++b) {
      const double* s = s_in + b * d;
      const double* u = u_in + b * d * d;
      for (int i = 0; i < d; ++i) log_lam[i] = math::o2p_log_eigenvalue(s[i], eps);
      symmetrize_into(g_in + b * d * d, d, gs.data());
      gemm_row_major(true, false, d, d, d, 1.0, u, d, gs.data(), d, 0.0, t.data(), d);
      gemm_symmetric_result(false, false, d, d, t.data(), d, u, d, inner.data(), d);
      for_each_pair_of_one_matrix(
          d, generic::O2pColsInner{inner.data(), s, log_lam.data(), eps, d});
      gemm_row_major(false, false, d, d, d, 1.0, u, d, inner.data(), d, 0.0, t.data(), d);
      gemm_symmetric_result(false, true, d, d, t.data(), d, u, d, ga.data(), d);
      const double* xb = as_real<double>(x_in + b * md, md, x);
      double* gxb = output_buffer(gx_out + b * md, md, gx);
      gemm_row_major(false, false, m, d, d, 1.0, xb, d, ga.data(), d, 0.0, gxb, d);
      store_output(gxb, md, gx_out + b * md);
    }
  });
}

// Backward of the rows path, per matrix:
//   T = Y G, M = 2 h[s_i, s_j] o sym(T Y^T), R = M Y + 2 diag(h) T, gX = U R.
template <typename grad_t, typename out_t>
void o2p_rows_backward(const grad_t* g_in, const double* s_in, const double* u_in,
                       const double* y_in, int64_t batch, int m, int d, double eps, out_t* gx_out) {
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    const int64_t md = int64_t(m) * d;
    std::vector<double> gs(int64_t(d) * d), t(md), inner(int64_t(m) * m), r(md), h(m), gx;
    for (int64_t b = begin; b < end; ++b) {
      const double* s = s_in + b * m;
      const double* u = u_in + b * m * m;
      const double* y = y_in + b * m * d;
      symmetrize_into(g_in + b * d * d, d, gs.data());
      for (int i = 0; i < m; ++i) h[i] = math::o2p_h(s[i], eps);
      gemm_row_major(false, false, m, d, d, 1.0, y, d, gs.data(), d, 0.0, t.data(), d);
      gemm_symmetric_result(false, true, m, d, t.data(), d, y, d, inner.data(), m);
      for_each_pair_of_one_matrix(m, generic::O2pRowsInner{inner.data(), s, h.data(), eps, m});
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < d; ++j) r[int64_t(i) * d + j] = 2.0 * h[i] * t[int64_t(i) * d + j];
      gemm_row_major(false, false, m, d, m, 1.0, inner.data(), m, y, d, 1.0, r.data(), d);
      double* gxb = output_buffer(gx_out + b * md, md, gx);
      gemm_row_major(false, false, m, d, m, 1.0, u, m, r.data(), d, 0.0, gxb, d);
      store_output(gxb, md, gx_out + b * md);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> o2p_log_with_eig_cpu(
    const at::Tensor& X, double eps) {
  check_o2p_arguments(X, eps, kOp);
  TORCH_CHECK(all_finite(X), kOp, ": argument 'X' contains NaN or Inf");
  const bool rows = generic::o2p_rows_path(X);
  const int64_t m = X.size(-2), d = X.size(-1);
  if (rows) {
    const auto Xc = X.contiguous();
    const int64_t batch = batch_count(X);
    auto C = at::empty(with_trailing(X, {d, d}), X.options());
    auto S = at::empty(with_trailing(X, {m}), X.options().dtype(at::kDouble));
    auto U = at::empty(with_trailing(X, {m, m}), S.options());
    auto Y = at::empty(with_trailing(X, {m, d}), S.options());
    FirstFailure failed(batch);
    if (batch > 0 && m > 0) {
      AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "matbp_o2p_rows_forward", [&] {
        o2p_rows_forward(Xc.data_ptr<scalar_t>(), batch, static_cast<int>(m), static_cast<int>(d),
                         eps, C.data_ptr<scalar_t>(), S.data_ptr<double>(), U.data_ptr<double>(),
                         Y.data_ptr<double>(), failed);
      });
    } else {
      C.zero_();
      C.diagonal(0, -2, -1).fill_(std::log(eps));
    }
    TORCH_CHECK(!failed.any(), kOp, ": the Gram matrix X X^T of matrix ", failed.index(),
                " of the flattened batch overflows or the eigensolver failed on it");
    return {C, S, U, Y};
  }
  const auto Xc = X.contiguous();
  const int64_t batch = batch_count(X);
  auto C = at::empty(with_trailing(X, {d, d}), X.options());
  auto S = at::empty(with_trailing(X, {d}), X.options().dtype(at::kDouble));
  auto U = at::empty(with_trailing(X, {d, d}), S.options());
  FirstFailure failed(batch);
  if (batch > 0 && d > 0) {
    AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "matbp_o2p_cols_forward", [&] {
      o2p_cols_forward(Xc.data_ptr<scalar_t>(), batch, static_cast<int>(m), static_cast<int>(d),
                       eps, C.data_ptr<scalar_t>(), S.data_ptr<double>(), U.data_ptr<double>(),
                       failed);
    });
  }
  TORCH_CHECK(!failed.any(), kOp, ": the Gram matrix X^T X of matrix ", failed.index(),
              " of the flattened batch overflows or the eigensolver failed on it");
  return {C, S, U, at::empty(with_trailing(X, {0, d}), S.options())};
}

at::Tensor o2p_log_backward_cpu(const at::Tensor& gC, const at::Tensor& X, const at::Tensor& S,
                                const at::Tensor& U, const at::Tensor& Y, double eps) {
  constexpr const char* op = "matbp.o2p_log_backward";
  check_o2p_backward_arguments(gC, X, S, U, Y, eps, op);
  const int64_t m = X.size(-2), d = X.size(-1);
  const bool rows = generic::o2p_rows_path(X);
  const auto S64 = S.to(at::kDouble).contiguous();
  const auto U64 = U.to(at::kDouble);
  auto gX = at::empty(X.sizes(), X.options());
  const int64_t batch = batch_count(X);
  if (batch == 0 || m == 0 || d == 0) return gX.zero_();
  const auto Gc = gC.contiguous();
  const auto Xc = X.contiguous();
  const auto Uc = U64.contiguous();
  const auto Yc = Y.to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES(Gc.scalar_type(), "matbp_o2p_backward", [&] {
    using grad_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "matbp_o2p_backward_out", [&] {
      if (rows) {
        o2p_rows_backward(Gc.data_ptr<grad_t>(), S64.data_ptr<double>(), Uc.data_ptr<double>(),
                          Yc.data_ptr<double>(), batch, static_cast<int>(m), static_cast<int>(d),
                          eps, gX.data_ptr<scalar_t>());
      } else {
        o2p_cols_backward(Gc.data_ptr<grad_t>(), S64.data_ptr<double>(), Uc.data_ptr<double>(),
                          Xc.data_ptr<scalar_t>(), batch, static_cast<int>(m), static_cast<int>(d),
                          eps, gX.data_ptr<scalar_t>());
      }
    });
  });
  report_overflow<CpuBackend>(gX, {Gc}, batch, op);
  return gX;
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("o2p_log_with_eig", widening<&o2p_log_with_eig_cpu>());
  m.impl("o2p_log_backward", widening<&o2p_log_backward_cpu>());
  m.impl("o2p_log_jvp", widening<&generic::o2p_log_jvp<CpuBackend>>());
}

}  // namespace matbp::ops::cpu
