#pragma once

// Device-generic operator code. An op written here is a template over a
// Backend and runs on the CPU (cpu/cpu_backend.h) and on CUDA
// (cuda/cuda_backend.cuh) alike: ATen for the GEMMs and reductions, the
// backend for the eigensolver and for elementwise loops whose bodies are
// MATBP_HOST_DEVICE functors (their math in csrc/math). The CPU build and
// its tests therefore run every line the CUDA kernels run, except the
// launches and the cuSOLVER calls.
//
// A Backend provides:
//   static constexpr bool kRaisesAtOnce;
//       true: per-matrix failures raise immediately (the CPU); false: they
//       are found on the device, and reported by report_failures below.
//   static EigenResult sym_eig(const at::Tensor& A, at::ScalarType compute, const char* op,
//                              const char* arg);
//       computed in `compute` (float64; float32 in the float32 compute mode,
//       where a backend without one raises), L and V of that dtype.
//   template <class F> static void for_each(int64_t count, const F& f);
//       f(idx) for every idx in [0, count), in any order, concurrently.
//   template <class F> static void for_each_pair(int64_t batch, int64_t n, const F& f);
//       f(b, i, j) for every matrix b and 0 <= i <= j < n, concurrently: f
//       owns entries (i, j) and (j, i) of matrix b.
//   template <class Inner> static EigenbasisProduct eigenbasis_sandwich(
//       const at::Tensor& G, const at::Tensor& V, Rotation rotation, Inner inner);
//       V inner(V^T G [V]) V^T per matrix (below).
//   static EigenbasisProduct eigen_compose(const at::Tensor& V, const at::Tensor& d);
//       V diag(d) V^T per matrix.
// Both compute in V's dtype (float64, or float32 in the float32 compute
// mode), G and d converted to it; pair functors always run on float64.
// The last two have batch-wide forms here (the CUDA backend's); the CPU runs
// them one matrix at a time in cache (cpu/eigenbasis_pipeline.h).

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <initializer_list>
#include <iomanip>
#include <sstream>
#include <limits>
#include <string>

#include "../checks.h"
#include "../sync_checks.h"

namespace matbp::ops {

// A batched symmetric eigendecomposition (float64, or float32 in the float32
// compute mode): L (*, n) ascending,
// V (*, n, n) contiguous with the eigenvectors in its columns. finite and
// converged are bool (B,) flags over the flattened batch, undefined when
// the backend has already raised for any failure.
struct EigenResult {
  at::Tensor L, V;
  at::Tensor finite, converged;
};

// Number of matrices in a (*, r, c) tensor (valid when r or c is 0 too).
inline int64_t batch_count(const at::Tensor& t) {
  int64_t count = 1;
  for (int64_t d = 0; d + 2 < t.dim(); ++d) count *= t.size(d);
  return count;
}

// The products of an eigenbasis V that the backwards (and sym_fn's and
// projector's forwards) are made of. result: (*, n, n) of V's dtype,
// contiguous.
// finite: the backend has seen every entry of result finite (the CPU checks
// each matrix while it is in cache), so no overflow check need read it
// again; false where that is not known.
struct EigenbasisProduct {
  at::Tensor result;
  bool finite;
};

// Which side of G the eigenbasis rotates before `inner` transforms it.
// Every inner leaves M symmetric; with Both it reads sym(M) only (its
// entries through m_ij + m_ji), so a backend may rotate sym(G) instead.
enum class Rotation {
  Left,  // V^T G (sym_eig's backward: G = gV)
  Both,  // V^T G V (sym_fn's and projector's backwards)
};

// Backend::eigenbasis_sandwich, batch-wide: M = V^T G [V], inner(M) in place
// (on a float64 copy when V is float32), then V M V^T. G (*, n, n) of any
// floating dtype. inner is a for_each_pair functor with members `double* m`
// (the matrices it transforms) and `int64_t stride` (elements between them;
// the per-matrix CPU pipeline sets 0 and points m at one matrix in cache),
// both set here.
template <typename Backend, typename Inner>
EigenbasisProduct batched_eigenbasis_sandwich(const at::Tensor& G, const at::Tensor& V,
                                              Rotation rotation, Inner inner) {
  const auto Vt = V.mT();
  auto m = at::matmul(Vt, G.to(V.scalar_type()));
  if (rotation == Rotation::Both) m = at::matmul(m, V);
  auto m64 = m.to(at::kDouble).contiguous();
  const int64_t n = V.size(-1);
  inner.m = m64.data_ptr<double>();
  inner.stride = n * n;
  Backend::for_each_pair(batch_count(m64), n, inner);
  return {at::matmul(at::matmul(V, m64.to(V.scalar_type())), Vt).contiguous(), false};
}

// Backend::eigen_compose, batch-wide: V diag(d) V^T, d (*, n).
inline EigenbasisProduct batched_eigen_compose(const at::Tensor& V, const at::Tensor& d) {
  return {at::matmul(V * d.to(V.scalar_type()).unsqueeze(-2), V.mT()).contiguous(), false};
}

// Per-matrix failures found on the device (ok: bool (B,), undefined = none
// possible). With `raise` (sync checks on, see checks.h) the host waits and
// raises describe(first failing index); otherwise nothing waits, and every
// output of a failed matrix is filled with NaN so the failure cannot pass
// silently. Outputs are contiguous with the flattened batch leading.
template <typename Describe>
void report_failures(const at::Tensor& ok, bool raise, std::initializer_list<at::Tensor> outputs,
                     const Describe& describe) {
  if (!ok.defined() || ok.numel() == 0) return;
  if (raise) {
    if (ok.all().item<bool>()) return;
    const int64_t first = ok.logical_not().nonzero().select(1, 0).min().item<int64_t>();
    TORCH_CHECK(false, describe(first));
  }
  const auto bad = ok.logical_not().reshape({ok.numel(), 1});
  for (auto t : outputs) {
    if (!t.defined() || t.numel() == 0) continue;
    TORCH_INTERNAL_ASSERT(t.is_contiguous());
    t.view({ok.numel(), -1}).masked_fill_(bad, std::numeric_limits<double>::quiet_NaN());
  }
}

// The per-matrix failure messages, one wording for every op and backend.
inline std::string nonfinite_matrix_message(const char* op, const char* arg, int64_t b) {
  return std::string(op) + ": argument '" + arg + "' contains NaN or Inf (matrix " +
         std::to_string(b) + " of the flattened batch)";
}
inline std::string not_converged_message(const char* op, const char* solver, int64_t b) {
  return std::string(op) + ": " + solver + " failed to converge on matrix " + std::to_string(b) +
         " of the flattened batch";
}

// A decomposition's two per-matrix flags, reported as report_failures does:
// NaN/Inf in the argument `arg` first, then non-convergence of `solver`.
inline void report_decomposition_failures(const at::Tensor& finite, const at::Tensor& converged,
                                          bool raise, std::initializer_list<at::Tensor> outputs,
                                          const char* op, const char* arg, const char* solver) {
  report_failures(finite, raise, outputs,
                  [&](int64_t b) { return nonfinite_matrix_message(op, arg, b); });
  report_failures(converged, raise, outputs,
                  [&](int64_t b) { return not_converged_message(op, solver, b); });
}

// "[v0, v1, ...]" of a small tensor, for messages that quote eigenvalues.
inline std::string format_values(const at::Tensor& t) {
  const auto c = t.to(at::kDouble).cpu().contiguous().reshape({-1});
  std::ostringstream out;
  out << std::setprecision(6) << "[";
  for (int64_t i = 0; i < c.numel(); ++i) out << (i ? ", " : "") << c.data_ptr<double>()[i];
  out << "]";
  return out.str();
}

// Whether a backend reports device-side failures by raising: always on the
// CPU, with sync checks on CUDA.
template <typename Backend>
bool raises_on_failure() {
  return Backend::kRaisesAtOnce || sync_checks_enabled();
}

// A backward's result must be finite wherever its incoming gradients are. A
// true gradient beyond float64 (1/lambda at a subnormal eigenvalue, the
// divided differences of exp far out) would otherwise come back as a mix of
// Inf and NaN; it is reported like any per-matrix failure instead. result
// (contiguous) and the incoming gradients (undefined: absent) hold `batch`
// matrices each, the flattened batch leading.
template <typename Backend>
void report_overflow(const at::Tensor& result, std::initializer_list<at::Tensor> incoming,
                     int64_t batch, const char* op) {
  if (batch == 0 || result.numel() == 0) return;
  auto ok = at::isfinite(result).reshape({batch, -1}).all(1);
  for (const auto& g : incoming) {
    if (g.defined() && g.numel() > 0) {
      ok = ok.logical_or(at::isfinite(g).reshape({batch, -1}).all(1).logical_not());
    }
  }
  report_failures(ok, raises_on_failure<Backend>(), {result}, [&](int64_t b) {
    return std::string(op) + ": the gradient of matrix " + std::to_string(b) +
           " of the flattened batch overflows " + dtype_name(result.scalar_type());
  });
}

// report_overflow for an EigenbasisProduct: nothing to read again when the
// backend has seen its result finite.
template <typename Backend>
void report_overflow(const EigenbasisProduct& product, std::initializer_list<at::Tensor> incoming,
                     int64_t batch, const char* op) {
  if (!product.finite) report_overflow<Backend>(product.result, incoming, batch, op);
}

}  // namespace matbp::ops
