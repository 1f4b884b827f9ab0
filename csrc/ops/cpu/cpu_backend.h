#pragma once

// The CPU Backend of the device-generic ops (generic/backend.h): the CPU
// eigensolver (sym_eig_solver.h), the per-matrix pipelines of the eigenbasis
// products (eigenbasis_pipeline.h), ATen's thread pool for the elementwise loops.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "../generic/backend.h"
#include "eigenbasis_pipeline.h"
#include "sym_eig_kernel.h"

namespace matbp::ops::cpu {

struct CpuBackend {
  static constexpr bool kRaisesAtOnce = true;

  static EigenResult sym_eig(const at::Tensor& A, at::ScalarType compute, const char* op,
                             const char* arg) {
    auto [L, V] = sym_eig_solve(A, compute, compute, op, arg);
    return {L, V, at::Tensor(), at::Tensor()};
  }

  template <typename Inner>
  static EigenbasisProduct eigenbasis_sandwich(const at::Tensor& G, const at::Tensor& V,
                                               Rotation rotation, const Inner& inner) {
    return eigenbasis_sandwich_cpu(G, V, rotation, inner);
  }

  static EigenbasisProduct eigen_compose(const at::Tensor& V, const at::Tensor& d) {
    return eigen_compose_cpu(V, d);
  }

  template <typename F>
  static void for_each(int64_t count, const F& f) {
    at::parallel_for(0, count, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t idx = begin; idx < end; ++idx) f(idx);
    });
  }

  template <typename F>
  static void for_each_pair(int64_t batch, int64_t n, const F& f) {
    if (batch <= 0 || n <= 0) return;
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n * n));
    at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = i; j < n; ++j) f(b, i, j);
    });
  }
};

}  // namespace matbp::ops::cpu
