// CPU kernels of matbp::svd (LAPACK dgesdd, thin) and matbp::svd_backward
// (the general thin-SVD adjoint of Prop. 1, m != n allowed; device-generic,
// generic/svd.h).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../checks.h"
#include "../generic/svd.h"
#include "batch_loops.h"
#include "cpu_backend.h"
#include "lapack.h"
#include "../low_precision.h"

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
      if (!widen_if_finite(x_in + b * mn, mn, a.data())) {
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
  raise_first_failure(nonfinite, failed, op, "X", "LAPACK dgesdd");
  return {U, S, V};
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("svd", widening<&svd_cpu>());
  m.impl("svd_backward", widening<&generic::svd_backward<CpuBackend>>());
}

}  // namespace matbp::ops::cpu
