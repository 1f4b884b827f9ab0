#pragma once

// Direct LAPACK calls on the CPU. The torch wheel's libtorch_cpu exports the
// Fortran symbols (MKL inside); we declare them as PyTorch itself does and
// call one single-threaded LAPACK routine per matrix, the batch split across
// ATen's threads. MKL sees it is inside a parallel region and stays serial.
//
// Matrices are handed to LAPACK as the row-major data we own: a row-major
// matrix is, to column-major LAPACK, its transpose.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "small_gemm.h"
#include "tiled_loops.h"

extern "C" {
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda,
             double* w, double* work, const int* lwork, int* iwork, const int* liwork,
             int* info);
void ssyevd_(const char* jobz, const char* uplo, const int* n, float* a, const int* lda, float* w,
             float* work, const int* lwork, int* iwork, const int* liwork, int* info);
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc);
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s,
             double* u, const int* ldu, double* vt, const int* ldvt, double* work,
             const int* lwork, int* iwork, int* info);
void dgeqrf_(const int* m, const int* n, double* a, const int* lda, double* tau, double* work,
             const int* lwork, int* info);
void dorgqr_(const int* m, const int* n, const int* k, double* a, const int* lda,
             const double* tau, double* work, const int* lwork, int* info);
}

namespace matbp::ops::cpu {

struct LapackWorkspace {
  int lwork = 0;
  int liwork = 0;
};

// Symmetric eigendecomposition of an n x n column-major matrix in place
// (upper triangle read: the lower triangle of the row-major matrix).
// Typed as PyTorch's wrappers are: ssyevd in float32 (the opt-in float32
// compute mode), dsyevd otherwise.
template <typename Real>
void lapack_syevd(int n, Real* a, Real* w, Real* work, int lwork, int* iwork, int liwork,
                  int* info) {
  const char jobz = 'V';
  const char uplo = 'U';
  const int lda = std::max(n, 1);
  if constexpr (std::is_same_v<Real, float>) {
    ssyevd_(&jobz, &uplo, &n, a, &lda, w, work, &lwork, iwork, &liwork, info);
  } else {
    dsyevd_(&jobz, &uplo, &n, a, &lda, w, work, &lwork, iwork, &liwork, info);
  }
}

// dsyevd with jobz = 'V' needs lwork = 1 + 6n + 2n^2 (LAPACK's documented
// minimum): the size to check against 32-bit integers before any query.
inline int64_t lapack_syevd_min_workspace(int64_t n) { return 1 + 6 * n + 2 * n * n; }

template <typename Real>
LapackWorkspace lapack_syevd_workspace(int n) {
  Real a = 0, w = 0, work = 0;
  int iwork = 0, info = 0;
  lapack_syevd(n, &a, &w, &work, -1, &iwork, -1, &info);
  return {std::max(1, static_cast<int>(work)), std::max(1, iwork)};
}

// Thin SVD (jobz = 'S') of an m x n column-major matrix, destroyed on exit.
inline void lapack_gesdd(int m, int n, double* a, double* s, double* u, double* vt, double* work,
                         int lwork, int* iwork, int* info) {
  const char jobz = 'S';
  const int k = std::min(m, n);
  const int lda = std::max(m, 1);
  const int ldu = std::max(m, 1);
  const int ldvt = std::max(k, 1);
  dgesdd_(&jobz, &m, &n, a, &lda, s, u, &ldu, vt, &ldvt, work, &lwork, iwork, info);
}

// dgesdd with jobz = 'S' needs lwork >= 4k^2 + 7k + max(m, n) (k = min(m, n)),
// with margin: the size to check against 32-bit integers before any query.
inline int64_t lapack_gesdd_min_workspace(int64_t m, int64_t n) {
  const int64_t k = std::min(m, n);
  return 5 * k * k + 7 * k + std::max(m, n);
}

inline LapackWorkspace lapack_gesdd_workspace(int m, int n) {
  double a = 0, s = 0, u = 0, vt = 0, work = 0;
  int iwork = 0, info = 0;
  lapack_gesdd(m, n, &a, &s, &u, &vt, &work, -1, &iwork, &info);
  return {std::max(1, static_cast<int>(work)), std::max(1, 8 * std::min(m, n))};
}

// Householder QR of an m x n column-major matrix in place (m >= n): R in the
// upper triangle, the reflectors below it and in tau (n).
inline void lapack_geqrf(int m, int n, double* a, int lda, double* tau, double* work, int lwork,
                         int* info) {
  dgeqrf_(&m, &n, a, &lda, tau, work, &lwork, info);
}

// The explicit m x n Q of lapack_geqrf's output, in place.
inline void lapack_orgqr(int m, int n, double* a, int lda, const double* tau, double* work,
                         int lwork, int* info) {
  dorgqr_(&m, &n, &n, a, &lda, tau, work, &lwork, info);
}

// A workspace size that serves both lapack_geqrf and lapack_orgqr at (m, n).
inline int lapack_qr_workspace(int m, int n) {
  double a = 0, tau = 0, work_geqrf = 0, work_orgqr = 0;
  int info = 0;
  const int lda = std::max(m, 1);
  lapack_geqrf(m, n, &a, lda, &tau, &work_geqrf, -1, &info);
  lapack_orgqr(m, n, &a, lda, &tau, &work_orgqr, -1, &info);
  return std::max({1, n, static_cast<int>(work_geqrf), static_cast<int>(work_orgqr)});
}

// Row-major C (rows x cols) = alpha op(A) op(B) + beta C, op(A) rows x inner.
// A row-major matrix is its transpose to column-major BLAS, so this is
// C^T = op(B)^T op(A)^T there, with the same transpose flags.
// Small products (small_gemm_preferred) go to small_gemm, op(B) = B^T
// through a transposed copy. Real (float: sgemm, double: dgemm) is A's.
template <typename Real>
void gemm_row_major(bool trans_a, bool trans_b, int rows, int cols, int inner,
                    std::type_identity_t<Real> alpha, const Real* A, int lda, const Real* B,
                    int ldb, std::type_identity_t<Real> beta, Real* C, int ldc) {
  if (rows == 0 || cols == 0) return;
  if (alpha == 1.0 && (beta == 0.0 || beta == 1.0) && small_gemm_preferred(rows, cols, inner)) {
    if (trans_b) {
      thread_local std::vector<Real> transposed;
      transposed.resize(size_t(inner) * cols);
      for_each_entry_tiled(cols, inner, [&](int64_t j, int64_t k) {
        transposed[size_t(k) * cols + j] = B[size_t(j) * ldb + k];
      });
      B = transposed.data();
      ldb = cols;
    }
    small_gemm(trans_a, beta == 1.0, rows, cols, inner, A, lda, B, ldb, C, ldc);
    return;
  }
  const char ta = trans_a ? 'T' : 'N';
  const char tb = trans_b ? 'T' : 'N';
  if constexpr (std::is_same_v<Real, float>) {
    sgemm_(&tb, &ta, &cols, &rows, &inner, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
  } else {
    dgemm_(&tb, &ta, &cols, &rows, &inner, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
  }
}

// Row-major C (n x n) = op(A) op(B) for a product known to be symmetric
// (X X^T, Y^T diag(h) Y, W^T G W, ...): only the lower block triangle is
// computed, recursively halving the diagonal blocks (62% of the flops at
// n = 256), then mirrored, which also makes C exactly symmetric. BLAS has
// dsyrk for the X X^T case only, and the torch wheel does not export it.
constexpr int kSymmetricResultLeaf = 64;  // diagonal blocks computed whole
template <typename Real>
void gemm_symmetric_result(bool trans_a, bool trans_b, int n, int inner, const Real* A, int lda,
                           const Real* B, int ldb, Real* C, int ldc) {
  constexpr int kLeaf = kSymmetricResultLeaf;
  // Rows r0.. of op(A) and columns c0.. of op(B).
  auto a_rows = [&](int r0) { return trans_a ? A + r0 : A + int64_t(r0) * lda; };
  auto b_cols = [&](int c0) { return trans_b ? B + int64_t(c0) * ldb : B + c0; };
  auto block = [&](int r0, int rows, int c0, int cols) {
    gemm_row_major<Real>(trans_a, trans_b, rows, cols, inner, 1.0, a_rows(r0), lda, b_cols(c0), ldb,
                         0.0, C + int64_t(r0) * ldc + c0, ldc);
  };
  auto lower = [&](auto&& self, int r0, int size) -> void {
    if (size <= kLeaf) {
      block(r0, size, r0, size);
      return;
    }
    const int half = size / 2;
    self(self, r0, half);
    block(r0 + half, size - half, r0, half);
    self(self, r0 + half, size - half);
  };
  if (n == 0) return;
  lower(lower, 0, n);
  for_each_upper_entry_tiled(n, [&](int64_t i, int64_t j) { C[i * ldc + j] = C[j * ldc + i]; });
}

// Runs body(begin, end) over the batch on ATen's thread pool. Small matrices
// are grouped so a thread gets enough work to pay for its start-up.
template <typename Body>
void parallel_over_batch(int64_t batch, int64_t n, const Body& body) {
  const int64_t flops_per_matrix = std::max<int64_t>(1, n * n * n);
  const int64_t grain = std::max<int64_t>(1, 4096 / flops_per_matrix);
  at::parallel_for(0, batch, grain, body);
}

}  // namespace matbp::ops::cpu
