// CPU kernels of matbp::svd (LAPACK dgesdd, thin) and matbp::svd_backward
// (the general thin-SVD adjoint of Prop. 1, m != n allowed).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../../math/adjoint_weights.h"
#include "../checks.h"
#include "batch_loops.h"
#include "lapack.h"

namespace matbp::ops::cpu {
namespace {

// X is m x n row-major, which LAPACK reads as the n x m matrix X^T. Its SVD
// X^T = U' S V'^T gives X = V' S U'^T: LAPACK's V'^T (k x m, column-major)
// is X's U stored row-major, and LAPACK's U' (n x k, column-major) is X's V
// transposed.
template <typename scalar_t>
void svd_batch(const scalar_t* x_in, scalar_t* u_out, scalar_t* s_out, scalar_t* v_out,
               int64_t batch, int m, int n, const LapackWorkspace& ws, FirstFailure& nonfinite,
               FirstFailure& failed) {
  const int k = std::min(m, n);
  const int64_t mn = int64_t(m) * n;
  parallel_over_batch(batch, std::max(m, n), [&](int64_t begin, int64_t end) {
    std::vector<double> a(mn), s(k), uprime(int64_t(n) * k), vtprime(int64_t(k) * m),
        work(ws.lwork);
    std::vector<int> iwork(ws.liwork);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* src = x_in + b * mn;
      bool finite = true;
      for (int64_t e = 0; e < mn; ++e) {
        const double x = static_cast<double>(src[e]);
        finite &= std::isfinite(x);
        a[e] = x;
      }
      if (!finite) {
        nonfinite.record(b);
        continue;
      }
      int info = 0;
      lapack_gesdd(n, m, a.data(), s.data(), uprime.data(), vtprime.data(), work.data(),
                   ws.lwork, iwork.data(), &info);
      if (info != 0) {
        failed.record(b);
        continue;
      }
      scalar_t* u = u_out + b * int64_t(m) * k;
      scalar_t* sv = s_out + b * k;
      scalar_t* v = v_out + b * int64_t(n) * k;
      for (int64_t e = 0; e < int64_t(m) * k; ++e) u[e] = static_cast<scalar_t>(vtprime[e]);
      for (int i = 0; i < k; ++i) sv[i] = static_cast<scalar_t>(s[i]);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < k; ++j) v[int64_t(i) * k + j] = static_cast<scalar_t>(uprime[i + int64_t(j) * n]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_cpu(const at::Tensor& X) {
  constexpr const char* op = "matbp.svd";
  check_float_matrix(X, op, "X", /*square=*/false);
  const int64_t m = X.size(-2), n = X.size(-1), k = std::min(m, n);
  check_lapack_size(std::max(m * n, lapack_gesdd_min_workspace(m, n)), op,
                    "the LAPACK workspace for a matrix of X");
  auto U = at::empty(with_trailing(X, {m, k}), X.options());
  auto S = at::empty(with_trailing(X, {k}), X.options());
  auto V = at::empty(with_trailing(X, {n, k}), X.options());
  const int64_t batch = batch_count(X);
  if (batch == 0 || k == 0) return {U, S, V};
  const auto ws = lapack_gesdd_workspace(static_cast<int>(n), static_cast<int>(m));
  const auto Xc = X.contiguous();
  FirstFailure nonfinite(batch), failed(batch);
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "matbp_svd_cpu", [&] {
    svd_batch(Xc.data_ptr<scalar_t>(), U.data_ptr<scalar_t>(), S.data_ptr<scalar_t>(),
              V.data_ptr<scalar_t>(), batch, static_cast<int>(m), static_cast<int>(n), ws,
              nonfinite, failed);
  });
  TORCH_CHECK(!nonfinite.any(), op, ": argument 'X' contains NaN or Inf (matrix ",
              nonfinite.index(), " of the flattened batch)");
  TORCH_CHECK(!failed.any(), op, ": LAPACK dgesdd failed to converge on matrix ",
              failed.index(), " of the flattened batch");
  return {U, S, V};
}

// gX = U [diag(gS) + K o (M - M^T) S + S K o (N - N^T)] V^T
//      + (I - U U^T) gU S^+ V^T + U S^+ gV^T (I - V V^T),
// M = U^T gU, N = V^T gV, K_ij = 1/(s_j^2 - s_i^2) (0 at ties).
at::Tensor svd_backward_cpu(const std::optional<at::Tensor>& gU,
                            const std::optional<at::Tensor>& gS,
                            const std::optional<at::Tensor>& gV, const at::Tensor& U,
                            const at::Tensor& S, const at::Tensor& V) {
  constexpr const char* op = "matbp.svd_backward";
  check_float_matrix(U, op, "U", /*square=*/false);
  check_float_matrix(V, op, "V", /*square=*/false);
  const int64_t m = U.size(-2), n = V.size(-2), k = S.size(-1);
  TORCH_CHECK(U.size(-1) == k && V.size(-1) == k, op,
              ": 'U' (*, m, k), 'S' (*, k) and 'V' (*, n, k) disagree: ", U.sizes(), ", ",
              S.sizes(), ", ", V.sizes());
  const bool has_gU = gU.has_value() && gU->defined();
  const bool has_gS = gS.has_value() && gS->defined();
  const bool has_gV = gV.has_value() && gV->defined();
  if (has_gU) TORCH_CHECK(gU->sizes() == U.sizes(), op, ": 'gU' must have the shape of 'U'");
  if (has_gS) TORCH_CHECK(gS->sizes() == S.sizes(), op, ": 'gS' must have the shape of 'S'");
  if (has_gV) TORCH_CHECK(gV->sizes() == V.sizes(), op, ": 'gV' must have the shape of 'V'");
  auto out_shape = with_trailing(U, {m, n});
  if ((!has_gU && !has_gS && !has_gV) || k == 0) return at::zeros(out_shape, U.options());

  const auto U64 = U.to(at::kDouble), V64 = V.to(at::kDouble);
  const auto S64 = S.to(at::kDouble).contiguous();
  const auto gU64 = has_gU ? gU->to(at::kDouble) : at::Tensor();
  const auto gV64 = has_gV ? gV->to(at::kDouble) : at::Tensor();
  const auto M = has_gU ? at::matmul(U64.mT(), gU64).contiguous() : at::zeros(with_trailing(U, {k, k}), S64.options());
  const auto N = has_gV ? at::matmul(V64.mT(), gV64).contiguous() : at::zeros_like(M);
  const auto gS64 = has_gS ? gS->to(at::kDouble).contiguous() : at::zeros_like(S64);

  auto inner = at::empty_like(M);
  auto s_pinv = at::empty_like(S64);
  double* spinv = s_pinv.data_ptr<double>();
  const int64_t batch = batch_count(M);
  const double* mp = M.data_ptr<double>();
  const double* np = N.data_ptr<double>();
  const double* sp = S64.data_ptr<double>();
  const double* gsp = gS64.data_ptr<double>();
  double* ip = inner.data_ptr<double>();
  at::parallel_for(0, batch, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, k * k)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t b = begin; b < end; ++b) {
                       const double* mb = mp + b * k * k;
                       const double* nb = np + b * k * k;
                       const double* s = sp + b * k;
                       double* out = ip + b * k * k;
                       // S is descending: s[0] is the largest singular value.
                       const double tie = math::tie_tolerance(s[0], std::max(m, n));
                       for (int64_t i = 0; i < k; ++i) {
                         spinv[b * k + i] = math::pseudo_inverse(s[i], tie);
                         for (int64_t j = 0; j < k; ++j) {
                           out[i * k + j] =
                               i == j ? gsp[b * k + i]
                                      : math::svd_adjoint_entry(mb[i * k + j], mb[j * k + i],
                                                                nb[i * k + j], nb[j * k + i], s[i],
                                                                s[j], tie);
                         }
                       }
                     }
                   });
  auto gX = at::matmul(at::matmul(U64, inner), V64.mT());
  // The projections onto the complements of range(U) and range(V) vanish
  // when U (V) is square; S^+ keeps them finite when X loses rank.
  if (has_gU && m > k) {
    gX = gX + at::matmul((gU64 - at::matmul(U64, M)) * s_pinv.unsqueeze(-2), V64.mT());
  }
  if (has_gV && n > k) {
    gX = gX + at::matmul(U64 * s_pinv.unsqueeze(-2), (gV64 - at::matmul(V64, N)).mT());
  }
  return gX.to(U.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("svd", &svd_cpu);
  m.impl("svd_backward", &svd_backward_cpu);
}

}  // namespace matbp::ops::cpu
