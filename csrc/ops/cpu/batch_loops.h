#pragma once

// Small helpers the CPU kernels share: batch bookkeeping, first-failure
// recording from worker threads, and the per-matrix elementwise loop that
// forms the inner adjoint matrices in one pass.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../generic/backend.h"

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

// For every pair i < j of an n x n row-major matrix m, calls
// pair(i, j, m_ij, m_ji) -> (new_ij, new_ji) and diag(i, m_ii) -> new_ii,
// writing the results in place. One pass.
template <typename Pair, typename Diag>
inline void transform_pairs(double* m, int64_t n, const Pair& pair, const Diag& diag) {
  for (int64_t i = 0; i < n; ++i) {
    m[i * n + i] = diag(i, m[i * n + i]);
    for (int64_t j = i + 1; j < n; ++j) {
      const auto [ij, ji] = pair(i, j, m[i * n + j], m[j * n + i]);
      m[i * n + j] = ij;
      m[j * n + i] = ji;
    }
  }
}

// transform_pairs over every matrix b of a contiguous (B, n, n) float64
// tensor, in parallel; pair and diag also receive b first.
template <typename Pair, typename Diag>
void transform_pairs_inplace(at::Tensor& M, const Pair& pair, const Diag& diag) {
  const int64_t n = M.size(-1);
  const int64_t batch = batch_count(M);
  double* data = M.data_ptr<double>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n * n));
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      transform_pairs(
          data + b * n * n, n,
          [&](int64_t i, int64_t j, double m_ij, double m_ji) { return pair(b, i, j, m_ij, m_ji); },
          [&](int64_t i, double m_ii) { return diag(b, i, m_ii); });
    }
  });
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
