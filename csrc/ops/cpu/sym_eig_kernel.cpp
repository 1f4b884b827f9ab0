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

// Real: the type the solver computes in.
template <typename Real, typename in_t, typename out_t>
void sym_eig_batch(const in_t* a_in, out_t* l_out, out_t* v_out, int64_t batch, int n,
                   FirstFailure& nonfinite, FirstFailure& failed) {
  const int64_t nn = int64_t(n) * n;
  parallel_over_batch(batch, n, [&](int64_t begin, int64_t end) {
    SymEigSolver<Real> solver(n);
    const int width = solver.width();
    std::vector<Real> a(width * nn), w(width * n);
    std::vector<Real*> a_ptr(width), w_ptr(width);
    std::vector<int64_t> index(width);
    for (int64_t b0 = begin; b0 < end;) {
      // The next `width` finite matrices of this thread's range.
      int count = 0;
      for (; b0 < end && count < width; ++b0) {
        Real* slot = a.data() + count * nn;
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
        const Real* vt = a_ptr[q];
        for (int i = 0; i < n; ++i) l[i] = static_cast<out_t>(w_ptr[q][i]);
        // The solver's eigenvectors are rows; V holds them as columns.
        transpose_into(vt, n, v);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> sym_eig_cpu(const at::Tensor& A,
                                               std::optional<at::ScalarType> compute_dtype) {
  constexpr const char* op = "matbp.sym_eig";
  return sym_eig_solve(A, A.scalar_type(), resolve_compute_dtype(compute_dtype, op), op);
}

// The batch decomposed in Real into L, V, raising for the first failed matrix.
template <typename Real>
void sym_eig_dispatch(const at::Tensor& Ac, at::Tensor& L, at::Tensor& V, int64_t batch, int n,
                      const char* op, const char* arg) {
  FirstFailure nonfinite(batch), failed(batch);
  AT_DISPATCH_FLOATING_TYPES(Ac.scalar_type(), "matbp_sym_eig_in", [&] {
    using in_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES(L.scalar_type(), "matbp_sym_eig_out", [&] {
      sym_eig_batch<Real>(Ac.data_ptr<in_t>(), L.data_ptr<scalar_t>(), V.data_ptr<scalar_t>(),
                          batch, n, nonfinite, failed);
    });
  });
  raise_first_failure(nonfinite, failed, op, arg, SymEigSolver<Real>::name(n));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> sym_eig_solve(const at::Tensor& A, at::ScalarType out_dtype,
                                                  at::ScalarType compute_dtype, const char* op,
                                                  const char* arg) {
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
  if (compute_dtype == at::kFloat) {
    sym_eig_dispatch<float>(Ac, L, V, batch, static_cast<int>(n), op, arg);
  } else {
    sym_eig_dispatch<double>(Ac, L, V, batch, static_cast<int>(n), op, arg);
  }
  return {L, V};
}

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("sym_eig", widening<&sym_eig_cpu>());
  m.impl("sym_eig_backward", widening<&generic::sym_eig_backward<CpuBackend>>());
}

}  // namespace matbp::ops::cpu
