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
#include "sym_eig_solver.h"
#include "../low_precision.h"

namespace matbp::ops::cpu {
namespace {

template <typename in_t, typename out_t>
void sym_eig_batch(const in_t* a_in, out_t* l_out, out_t* v_out, int64_t batch, int n,
                   FirstFailure& nonfinite, FirstFailure& failed) {
  const int64_t nn = int64_t(n) * n;
  parallel_over_batch(batch, n, [&](int64_t begin, int64_t end) {
    SymEigSolver solver(n);
    const int width = solver.width();
    std::vector<double> a(width * nn), w(width * n);
    std::vector<double*> a_ptr(width), w_ptr(width);
    std::vector<int64_t> index(width);
    for (int64_t b0 = begin; b0 < end;) {
      // The next `width` finite matrices of this thread's range.
      int count = 0;
      for (; b0 < end && count < width; ++b0) {
        double* slot = a.data() + count * nn;
        if (!widen_if_finite(a_in + b0 * nn, nn, slot)) {
          nonfinite.record(b0);
          continue;
        }
        a_ptr[count] = slot;
        w_ptr[count] = w.data() + count * n;
        index[count++] = b0;
      }
      const unsigned failures = solver.decompose(count, a_ptr.data(), w_ptr.data());
      for (int q = 0; q < count; ++q) {
        const int64_t b = index[q];
        if (failures & (1u << q)) {
          failed.record(b);
          continue;
        }
        out_t* l = l_out + b * n;
        out_t* v = v_out + b * nn;
        const double* vt = a_ptr[q];
        for (int i = 0; i < n; ++i) l[i] = static_cast<out_t>(w_ptr[q][i]);
        // The solver's eigenvectors are rows; V holds them as columns.
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < n; ++j) v[i * n + j] = static_cast<out_t>(vt[int64_t(j) * n + i]);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> sym_eig_cpu(const at::Tensor& A) {
  return sym_eig_solve(A, A.scalar_type(), "matbp.sym_eig");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> sym_eig_solve(const at::Tensor& A, at::ScalarType out_dtype,
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

  const auto Ac = A.contiguous();
  FirstFailure nonfinite(batch), failed(batch);
  const auto in_dtype = A.scalar_type();
  if (in_dtype == at::kDouble) {
    sym_eig_batch(Ac.data_ptr<double>(), L.data_ptr<double>(), V.data_ptr<double>(), batch, n,
                  nonfinite, failed);
  } else if (out_dtype == at::kDouble) {
    sym_eig_batch(Ac.data_ptr<float>(), L.data_ptr<double>(), V.data_ptr<double>(), batch, n,
                  nonfinite, failed);
  } else {
    sym_eig_batch(Ac.data_ptr<float>(), L.data_ptr<float>(), V.data_ptr<float>(), batch, n,
                  nonfinite, failed);
  }
  raise_first_failure(nonfinite, failed, op, arg, SymEigSolver(static_cast<int>(n)).name());
  return {L, V};
}

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("sym_eig", widening<&sym_eig_cpu>());
  m.impl("sym_eig_backward", widening<&generic::sym_eig_backward<CpuBackend>>());
}

}  // namespace matbp::ops::cpu
