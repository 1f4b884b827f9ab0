// CPU kernels of matbp::sym_eig and matbp::sym_eig_backward (device-generic,
// generic/sym_eig.h).

#include "sym_eig_kernel.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <vector>

#include "../checks.h"
#include "../generic/sym_eig.h"
#include "batch_loops.h"
#include "cpu_backend.h"
#include "lapack.h"
#include "../low_precision.h"

namespace matbp::ops::cpu {
namespace {

template <typename in_t, typename out_t>
void sym_eig_batch(const in_t* a_in, out_t* l_out, out_t* v_out, int64_t batch, int n,
                   const LapackWorkspace& ws, FirstFailure& nonfinite, FirstFailure& failed) {
  const int64_t nn = int64_t(n) * n;
  parallel_over_batch(batch, n, [&](int64_t begin, int64_t end) {
    std::vector<double> a(nn), w(n), work(ws.lwork);
    std::vector<int> iwork(ws.liwork);
    for (int64_t b = begin; b < end; ++b) {
      if (!widen_if_finite(a_in + b * nn, nn, a.data())) {
        nonfinite.record(b);
        continue;
      }
      int info = 0;
      lapack_syevd(n, a.data(), w.data(), work.data(), ws.lwork, iwork.data(), ws.liwork, &info);
      if (info != 0) {
        failed.record(b);
        continue;
      }
      out_t* l = l_out + b * n;
      out_t* v = v_out + b * nn;
      for (int i = 0; i < n; ++i) l[i] = static_cast<out_t>(w[i]);
      // LAPACK's column-major eigenvector matrix, stored row-major.
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) v[i * n + j] = static_cast<out_t>(a[i + int64_t(j) * n]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> sym_eig_cpu(const at::Tensor& A) {
  return sym_eig_lapack(A, A.scalar_type(), "matbp.sym_eig");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> sym_eig_lapack(const at::Tensor& A, at::ScalarType out_dtype,
                                                  const char* op, const char* arg) {
  check_float_matrix(A, op, arg, /*square=*/true);
  TORCH_CHECK(A.device().is_cpu(), op, ": expected a CPU tensor, got ", A.device());
  const int64_t n = A.size(-1);
  check_lapack_size(lapack_syevd_min_workspace(n), op,
                    (std::string("the LAPACK workspace for a matrix of ") + arg).c_str());
  const auto opts = A.options().dtype(out_dtype);
  auto L = at::empty(with_trailing(A, {n}), opts);
  auto V = at::empty(with_trailing(A, {n, n}), opts);
  const int64_t batch = batch_count(A);
  if (batch == 0 || n == 0) return {L, V};

  const auto ws = lapack_syevd_workspace(static_cast<int>(n));
  const auto Ac = A.contiguous();
  FirstFailure nonfinite(batch), failed(batch);
  const auto in_dtype = A.scalar_type();
  if (in_dtype == at::kDouble) {
    sym_eig_batch(Ac.data_ptr<double>(), L.data_ptr<double>(), V.data_ptr<double>(), batch, n,
                  ws, nonfinite, failed);
  } else if (out_dtype == at::kDouble) {
    sym_eig_batch(Ac.data_ptr<float>(), L.data_ptr<double>(), V.data_ptr<double>(), batch, n, ws,
                  nonfinite, failed);
  } else {
    sym_eig_batch(Ac.data_ptr<float>(), L.data_ptr<float>(), V.data_ptr<float>(), batch, n, ws,
                  nonfinite, failed);
  }
  raise_first_failure(nonfinite, failed, op, arg, "LAPACK dsyevd");
  return {L, V};
}

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("sym_eig", widening<&sym_eig_cpu>());
  m.impl("sym_eig_backward", widening<&generic::sym_eig_backward<CpuBackend>>());
}

}  // namespace matbp::ops::cpu
