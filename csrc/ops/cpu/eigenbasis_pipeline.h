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

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../generic/backend.h"
#include "batch_loops.h"
#include "lapack.h"

namespace matbp::ops::cpu {

// C = op(A) op(B) for n x n row-major matrices, op(X) = X^T where asked:
// V^T is never formed here (BLAS takes the flags; small_gemm reads A^T in
// place and B^T through its own transposed copy).
template <typename Real>
void square_gemm(int64_t n, bool trans_a, bool trans_b, const Real* A, const Real* B, Real* C) {
  const int k = static_cast<int>(n);
  gemm_row_major<Real>(trans_a, trans_b, k, k, k, 1.0, A, k, B, k, 0.0, C, k);
}

// The same for a product known to be symmetric (V M V^T with M symmetric):
// its lower block triangle only, mirrored (gemm_symmetric_result), where
// that saves flops; up to its leaf size the whole product costs less than
// the mirror pass.
template <typename Real>
void square_gemm_symmetric(int64_t n, bool trans_a, bool trans_b, const Real* A, const Real* B,
                           Real* C) {
  const int k = static_cast<int>(n);
  if (k <= kSymmetricResultLeaf) {
    gemm_row_major<Real>(trans_a, trans_b, k, k, k, 1.0, A, k, B, k, 0.0, C, k);
  } else {
    gemm_symmetric_result<Real>(trans_a, trans_b, k, k, A, k, B, k, C, k);
  }
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

// Real: V's type, in which the products are computed (float32 in the
// float32 compute mode). The pair functor always works on float64 (the
// divided differences and tie tests of generic/ are float64 code): on a
// float32 eigenbasis it transforms a float64 copy of the rotated matrix.
// Every inner leaves M symmetric, so V M V^T is a symmetric product; with
// Rotation::Both it reads sym(M) only (backend.h), so G is symmetrised first
// and V^T sym(G) V is one too: at n = 256, 3.2 GEMMs' flops instead of 4.
template <typename Real, typename scalar_t, typename Inner>
bool eigenbasis_sandwich_cpu(const scalar_t* g_in, const Real* v_in, Real* out, int64_t batch,
                             int64_t n, Rotation rotation, const Inner& prototype) {
  constexpr bool kWiden = !std::is_same_v<Real, double>;
  const int64_t nn = n * n;
  return for_each_matrix(batch, n, [&](int64_t begin, int64_t end, bool& finite) {
    std::vector<Real> g, t(nn), m(nn);
    std::vector<double> m64(kWiden ? nn : 0);
    Inner inner = prototype;
    if constexpr (kWiden) {
      inner.m = m64.data();
    } else {
      inner.m = m.data();
    }
    inner.stride = 0;
    for (int64_t b = begin; b < end; ++b) {
      const Real* v = v_in + b * nn;
      Real* result = out + b * nn;
      if (rotation == Rotation::Both) {
        symmetric_part_into(g_in + b * nn, n, m.data());
        square_gemm(n, true, false, v, m.data(), t.data());
        square_gemm_symmetric(n, false, false, t.data(), v, m.data());
      } else {
        square_gemm(n, true, false, v, as_real<Real>(g_in + b * nn, nn, g), m.data());
      }
      if constexpr (kWiden) std::copy(m.begin(), m.end(), m64.begin());
      for_each_upper_entry_tiled(n, [&](int64_t i, int64_t j) { inner(b, i, j); });
      if constexpr (kWiden) std::copy(m64.begin(), m64.end(), m.begin());
      square_gemm(n, false, false, v, m.data(), t.data());
      square_gemm_symmetric(n, false, true, t.data(), v, result);
      finite = finite && all_finite(result, nn);
    }
  });
}

// Backend::eigenbasis_sandwich on the CPU.
template <typename Inner>
EigenbasisProduct eigenbasis_sandwich_cpu(const at::Tensor& G, const at::Tensor& V_in,
                                          Rotation rotation, const Inner& inner) {
  const auto Gc = G.contiguous();  // float32 or float64: half arrives widened
  const auto V = V_in.contiguous();
  auto out = at::empty(V.sizes(), V.options());
  const int64_t n = V.size(-1), batch = batch_count(V);
  bool finite = true;
  if (batch > 0 && n > 0) {
    AT_DISPATCH_FLOATING_TYPES(V.scalar_type(), "matbp_eigenbasis_sandwich", [&] {
      using Real = scalar_t;
      AT_DISPATCH_FLOATING_TYPES(Gc.scalar_type(), "matbp_eigenbasis_sandwich_g", [&] {
        finite = eigenbasis_sandwich_cpu(Gc.data_ptr<scalar_t>(), V.data_ptr<Real>(),
                                         out.data_ptr<Real>(), batch, n, rotation, inner);
      });
    });
  }
  return {out, finite};
}

// Backend::eigen_compose on the CPU: V diag(d) V^T, one GEMM per matrix, in
// V's type.
inline EigenbasisProduct eigen_compose_cpu(const at::Tensor& V_in, const at::Tensor& d_in) {
  const auto V = V_in.contiguous();
  const auto d = d_in.to(V.scalar_type()).contiguous();
  auto out = at::empty(V.sizes(), V.options());
  const int64_t n = V.size(-1), nn = n * n, batch = batch_count(V);
  bool all = true;
  AT_DISPATCH_FLOATING_TYPES(V.scalar_type(), "matbp_eigen_compose", [&] {
    const scalar_t* v_in = V.data_ptr<scalar_t>();
    const scalar_t* d_all = d.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    all = for_each_matrix(batch, n, [&](int64_t begin, int64_t end, bool& finite) {
      std::vector<scalar_t> vd(nn);
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* v = v_in + b * nn;
        const scalar_t* db = d_all + b * n;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j) vd[i * n + j] = v[i * n + j] * db[j];
        square_gemm_symmetric(n, false, true, vd.data(), v, o + b * nn);
        finite = finite && all_finite(o + b * nn, nn);
      }
    });
  });
  return {out, all};
}

}  // namespace matbp::ops::cpu
