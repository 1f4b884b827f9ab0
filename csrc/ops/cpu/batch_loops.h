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

namespace matbp::ops::cpu {

// Number of matrices in a (*, r, c) tensor (valid when r or c is 0 too).
inline int64_t batch_count(const at::Tensor& t) {
  int64_t count = 1;
  for (int64_t d = 0; d + 2 < t.dim(); ++d) count *= t.size(d);
  return count;
}

inline std::vector<int64_t> with_trailing(const at::Tensor& t, std::vector<int64_t> trailing) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end() - 2);
  shape.insert(shape.end(), trailing.begin(), trailing.end());
  return shape;
}

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

// For every matrix b of a contiguous (B, n, n) float64 tensor M, and every
// pair i < j, calls pair(b, i, j, m_ij, m_ji) -> (new_ij, new_ji) and
// diag(b, i, m_ii) -> new_ii, writing the results in place. One pass over M.
template <typename Pair, typename Diag>
void transform_pairs_inplace(at::Tensor& M, const Pair& pair, const Diag& diag) {
  const int64_t n = M.size(-1);
  const int64_t batch = batch_count(M);
  double* data = M.data_ptr<double>();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n * n));
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      double* m = data + b * n * n;
      for (int64_t i = 0; i < n; ++i) {
        m[i * n + i] = diag(b, i, m[i * n + i]);
        for (int64_t j = i + 1; j < n; ++j) {
          const auto [ij, ji] = pair(b, i, j, m[i * n + j], m[j * n + i]);
          m[i * n + j] = ij;
          m[j * n + i] = ji;
        }
      }
    }
  });
}

// sym(G) = (G + G^T) / 2 of a (B, n, n) float64 tensor, in one pass.
inline at::Tensor symmetrize(const at::Tensor& G64) {
  const auto G = G64.contiguous();
  auto out = at::empty_like(G);
  const int64_t n = G.size(-1);
  const int64_t batch = batch_count(G);
  const double* g = G.data_ptr<double>();
  double* o = out.data_ptr<double>();
  at::parallel_for(0, batch, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n * n)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t b = begin; b < end; ++b) {
                       const double* gb = g + b * n * n;
                       double* ob = o + b * n * n;
                       for (int64_t i = 0; i < n; ++i) {
                         ob[i * n + i] = gb[i * n + i];
                         for (int64_t j = i + 1; j < n; ++j) {
                           const double v = 0.5 * (gb[i * n + j] + gb[j * n + i]);
                           ob[i * n + j] = v;
                           ob[j * n + i] = v;
                         }
                       }
                     }
                   });
  return out;
}

// True when every element is finite; one read, no temporaries.
inline bool all_finite(const at::Tensor& t) {
  const auto c = t.contiguous();
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "matbp_all_finite", [&] {
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
