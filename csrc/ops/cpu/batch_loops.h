#pragma once

// Small helpers the CPU kernels share: batch bookkeeping, first-failure
// recording from worker threads, and the loop that runs a device-generic
// pair functor on one matrix.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../generic/backend.h"
#include "tiled_loops.h"

namespace matbp::ops::cpu {

// Lowest batch index at which something went wrong, written from any thread.
class FirstFailure {
 public:
  explicit FirstFailure(int64_t none) : none_(none), index_(none) {}
  void record(int64_t index) {
    int64_t seen = index_.load();
    while (index < seen && !index_.compare_exchange_weak(seen, index)) {
    }
  }
  bool any() const { return index_.load() != none_; }
  int64_t index() const { return index_.load(); }

 private:
  int64_t none_;
  std::atomic<int64_t> index_;
};

// Raises for the first matrix whose argument `arg` had NaN or Inf, else for
// the first on which `solver` failed to converge.
inline void raise_first_failure(const FirstFailure& nonfinite, const FirstFailure& failed,
                                const char* op, const char* arg, const char* solver) {
  TORCH_CHECK(!nonfinite.any(), nonfinite_matrix_message(op, arg, nonfinite.index()));
  TORCH_CHECK(!failed.any(), not_converged_message(op, solver, failed.index()));
}

// One matrix converted to the solver's type into dst (float64; float32 in
// the float32 compute mode); whether every entry is finite (LAPACK must not
// see NaN or Inf). Tested after the conversion: in the float32 compute
// mode, a float64 entry beyond float32's range counts as Inf.
template <typename scalar_t, typename Real>
inline bool widen_if_finite(const scalar_t* src, int64_t count, Real* dst) {
  bool finite = true;
  for (int64_t e = 0; e < count; ++e) {
    const Real x = static_cast<Real>(src[e]);
    finite &= std::isfinite(x);
    dst[e] = x;
  }
  return finite;
}

// One matrix as Real: in place when it already is, else converted into a
// thread's buffer.
template <typename Real, typename scalar_t>
const Real* as_real(const scalar_t* src, int64_t count, std::vector<Real>& buffer) {
  if constexpr (std::is_same_v<scalar_t, Real>) {
    return src;
  } else {
    buffer.resize(count);
    for (int64_t e = 0; e < count; ++e) buffer[e] = static_cast<Real>(src[e]);
    return buffer.data();
  }
}

// out = a^T, n x n row-major, converted to Dst.
template <typename Src, typename Dst>
void transpose_into(const Src* a, int64_t n, Dst* out) {
  for_each_entry_tiled(n, n, [&](int64_t i, int64_t j) { out[j * n + i] = static_cast<Dst>(a[i * n + j]); });
}

// out = (a + a^T) / 2 in Real, n x n row-major.
template <typename Real, typename scalar_t>
void symmetric_part_into(const scalar_t* a, int64_t n, Real* out) {
  for_each_upper_entry_tiled(n, [&](int64_t i, int64_t j) {
    out[i * n + j] = out[j * n + i] =
        Real(0.5) * (static_cast<Real>(a[i * n + j]) + static_cast<Real>(a[j * n + i]));
  });
}

// Whether all `count` values at a are finite.
template <typename Real>
bool all_finite(const Real* a, int64_t count) {
  bool finite = true;
  for (int64_t e = 0; e < count; ++e) finite &= std::isfinite(a[e]);
  return finite;
}

// f(0, i, j) for 0 <= i <= j < n: a for_each_pair functor of the
// device-generic code (generic/*.h) on one matrix, as the per-matrix CPU
// pipelines run it in cache.
template <typename F>
inline void for_each_pair_of_one_matrix(int64_t n, const F& f) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) f(0, i, j);
}

// sym(G) = (G + G^T) / 2 of one n x n row-major matrix into out.
template <typename scalar_t>
inline void symmetrize_into(const scalar_t* g, int64_t n, double* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i * n + i] = static_cast<double>(g[i * n + i]);
    for (int64_t j = i + 1; j < n; ++j) {
      const double v = 0.5 * (static_cast<double>(g[i * n + j]) + static_cast<double>(g[j * n + i]));
      out[i * n + j] = v;
      out[j * n + i] = v;
    }
  }
}

// True when every element is finite; one read, no temporaries.
inline bool all_finite(const at::Tensor& t) {
  const auto c = t.contiguous();
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "matbp_all_finite", [&] {
    const scalar_t* p = c.data_ptr<scalar_t>();
    finite = at::parallel_reduce(
        0, c.numel(), 1 << 16, true,
        [&](int64_t begin, int64_t end, bool ok) {
          for (int64_t i = begin; i < end && ok; ++i) ok = std::isfinite(p[i]);
          return ok;
        },
        [](bool a, bool b) { return a && b; });
  });
  return finite;
}

}  // namespace matbp::ops::cpu
