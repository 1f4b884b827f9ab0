// CPU kernels of matbp::sym_eig and matbp::sym_eig_backward.

#include "sym_eig_kernel.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <vector>

#include "../../math/adjoint_weights.h"
#include "../checks.h"
#include "batch_loops.h"
#include "lapack.h"

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
      const in_t* src = a_in + b * nn;
      bool finite = true;
      for (int64_t k = 0; k < nn; ++k) {
        const double x = static_cast<double>(src[k]);
        finite &= std::isfinite(x);
        a[k] = x;
      }
      if (!finite) {
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

at::Tensor sym_eig_backward_cpu(const std::optional<at::Tensor>& gL,
                                const std::optional<at::Tensor>& gV, const at::Tensor& L,
                                const at::Tensor& V) {
  constexpr const char* op = "matbp.sym_eig_backward";
  check_float_matrix(V, op, "V", /*square=*/true);
  TORCH_CHECK(L.dim() == V.dim() - 1 && L.sizes() == V.sizes().slice(0, V.dim() - 1), op,
              ": 'L' must have shape (*, n) matching 'V' (*, n, n), got ", L.sizes(), " and ",
              V.sizes());
  const bool has_gL = gL.has_value() && gL->defined();
  const bool has_gV = gV.has_value() && gV->defined();
  if (has_gL) {
    TORCH_CHECK(gL->sizes() == L.sizes(), op, ": 'gL' must have the shape of 'L' ", L.sizes(),
                ", got ", gL->sizes());
  }
  if (has_gV) {
    TORCH_CHECK(gV->sizes() == V.sizes(), op, ": 'gV' must have the shape of 'V' ", V.sizes(),
                ", got ", gV->sizes());
  }
  if (!has_gL && !has_gV) {
    return at::zeros_like(V, at::MemoryFormat::Contiguous);
  }
  const auto V64 = V.to(at::kDouble);
  const auto Vt = V64.mT();
  if (!has_gV) {
    return at::matmul(V64 * gL->to(at::kDouble).unsqueeze(-2), Vt).to(V.scalar_type());
  }
  const auto L64 = L.to(at::kDouble).contiguous();
  const auto tol = eig_tie_tolerances(L64);
  const auto gL64 = has_gL ? gL->to(at::kDouble).contiguous() : at::zeros_like(L64);
  auto inner = at::matmul(Vt, gV->to(at::kDouble)).contiguous();
  const int64_t n = V.size(-1);
  const double* lam = L64.data_ptr<double>();
  const double* tie = tol.data_ptr<double>();
  const double* gl = gL64.data_ptr<double>();
  transform_pairs_inplace(
      inner,
      [&](int64_t b, int64_t i, int64_t j, double m_ij, double m_ji) {
        const double* l = lam + b * n;
        const double e = math::eig_adjoint_entry(m_ij, m_ji, l[i], l[j], tie[b]);
        return std::pair<double, double>(e, e);  // F o skew(M) is symmetric
      },
      [&](int64_t b, int64_t i, double) { return gl[b * n + i]; });
  return at::matmul(at::matmul(V64, inner), Vt).to(V.scalar_type());
}

}  // namespace

at::Tensor eig_tie_tolerances(const at::Tensor& L64) {
  const int64_t n = L64.size(-1);
  auto tol = at::zeros(L64.sizes().slice(0, L64.dim() - 1), L64.options());
  if (n == 0) return tol;
  const auto Lc = L64.contiguous();
  const double* lam = Lc.data_ptr<double>();
  double* out = tol.data_ptr<double>();
  for (int64_t b = 0, batch = tol.numel(); b < batch; ++b) {
    // Ascending eigenvalues: the largest magnitude is at one end.
    const double max_abs = std::max(std::abs(lam[b * n]), std::abs(lam[b * n + n - 1]));
    out[b] = math::tie_tolerance(max_abs, n);
  }
  return tol;
}

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
  TORCH_CHECK(!nonfinite.any(), op, ": argument '", arg, "' contains NaN or Inf (matrix ",
              nonfinite.index(), " of the flattened batch)");
  TORCH_CHECK(!failed.any(), op, ": LAPACK dsyevd failed to converge on matrix ",
              failed.index(), " of the flattened batch");
  return {L, V};
}

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("sym_eig", &sym_eig_cpu);
  m.impl("sym_eig_backward", &sym_eig_backward_cpu);
}

}  // namespace matbp::ops::cpu
