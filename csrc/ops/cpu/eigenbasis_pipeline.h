#pragma once

// The CPU forms of Backend::eigenbasis_sandwich and Backend::eigen_compose
// (generic/backend.h): each matrix of the batch goes through all its
// products, its pair functor and its finiteness check while it is in cache,
// one matrix after another on each thread, instead of five batch-wide passes
// over memory (four GEMMs and the functor) and two more for the overflow
// check. The GEMMs are small_gemm's up to small_gemm_preferred's size
// (gemm_row_major, lapack.h).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "../generic/backend.h"
#include "batch_loops.h"
#include "lapack.h"

namespace matbp::ops::cpu {

// C = A B for n x n row-major matrices.
inline void square_gemm(int64_t n, const double* A, const double* B, double* C) {
  const int k = static_cast<int>(n);
  gemm_row_major(false, false, k, k, k, 1.0, A, k, B, k, 0.0, C, k);
}

// body(begin, end, finite) on each thread's share of the batch, which it
// works through one matrix at a time, clearing `finite` for a non-finite
// result; returns whether every result was finite.
template <typename Body>
bool for_each_matrix(int64_t batch, int64_t n, const Body& body) {
  std::atomic<bool> finite{true};
  parallel_over_batch(batch, n, [&](int64_t begin, int64_t end) {
    bool local = true;
    body(begin, end, local);
    if (!local) finite.store(false);
  });
  return finite.load();
}

template <typename scalar_t, typename Inner>
bool eigenbasis_sandwich_cpu(const scalar_t* g_in, const double* v_in, double* out, int64_t batch,
                             int64_t n, Rotation rotation, const Inner& prototype) {
  const int64_t nn = n * n;
  return for_each_matrix(batch, n, [&](int64_t begin, int64_t end, bool& finite) {
    std::vector<double> g, w(nn), t(nn), m(nn);
    Inner inner = prototype;
    inner.m = m.data();
    inner.stride = 0;
    for (int64_t b = begin; b < end; ++b) {
      const double* v = v_in + b * nn;
      double* result = out + b * nn;
      transpose_into(v, n, w.data());
      if (rotation == Rotation::Both) {
        square_gemm(n, w.data(), as_double(g_in + b * nn, nn, g), t.data());
        square_gemm(n, t.data(), v, m.data());
      } else {
        square_gemm(n, w.data(), as_double(g_in + b * nn, nn, g), m.data());
      }
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i; j < n; ++j) inner(b, i, j);
      square_gemm(n, v, m.data(), t.data());
      square_gemm(n, t.data(), w.data(), result);
      finite = finite && all_finite(result, nn);
    }
  });
}

// Backend::eigenbasis_sandwich on the CPU.
template <typename Inner>
EigenbasisProduct eigenbasis_sandwich_cpu(const at::Tensor& G, const at::Tensor& V64,
                                          Rotation rotation, const Inner& inner) {
  const auto Gc = G.contiguous();  // float32 or float64: half arrives widened
  const auto V = V64.contiguous();
  auto out = at::empty(V.sizes(), V.options());
  const int64_t n = V.size(-1), batch = batch_count(V);
  bool finite = true;
  if (batch > 0 && n > 0) {
    AT_DISPATCH_FLOATING_TYPES(Gc.scalar_type(), "matbp_eigenbasis_sandwich", [&] {
      finite = eigenbasis_sandwich_cpu(Gc.data_ptr<scalar_t>(), V.data_ptr<double>(),
                                       out.data_ptr<double>(), batch, n, rotation, inner);
    });
  }
  return {out, finite};
}

// Backend::eigen_compose on the CPU: V diag(d) V^T, one GEMM per matrix.
inline EigenbasisProduct eigen_compose_cpu(const at::Tensor& V64, const at::Tensor& d64) {
  const auto V = V64.contiguous();
  const auto d = d64.contiguous();
  auto out = at::empty(V.sizes(), V.options());
  const int64_t n = V.size(-1), nn = n * n, batch = batch_count(V);
  const double* v_in = V.data_ptr<double>();
  const double* d_in = d.data_ptr<double>();
  double* o = out.data_ptr<double>();
  const bool finite = for_each_matrix(batch, n, [&](int64_t begin, int64_t end, bool& finite) {
    std::vector<double> w(nn), vd(nn);
    for (int64_t b = begin; b < end; ++b) {
      const double* v = v_in + b * nn;
      const double* db = d_in + b * n;
      transpose_into(v, n, w.data());
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) vd[i * n + j] = v[i * n + j] * db[j];
      square_gemm(n, vd.data(), w.data(), o + b * nn);
      finite = finite && all_finite(o + b * nn, nn);
    }
  });
  return {out, finite};
}

}  // namespace matbp::ops::cpu
