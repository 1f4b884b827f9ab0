#pragma once

#include <algorithm>
#include <cstdint>

namespace matbp::ops::cpu {

// C = op(A) B, or C += op(A) B with `accumulate`, for small row-major
// matrices: op(A) (rows x inner; A itself, or A^T with trans_a, at leading
// dimension lda), B (inner x cols, ldb), C (rows x cols, ldc), C not
// overlapping A or B. The per-matrix CPU pipelines multiply matrices of a
// few dozen rows one at a time in cache; there a BLAS dgemm call costs more
// in dispatch and packing than in arithmetic (the torch wheel's MKL reached
// 14-20 GFLOP/s per core at n = 32 on the AMD build machine, this kernel 52),
// so gemm_row_major (lapack.h) sends such products here, compiled per SIMD
// width.
void small_gemm(bool trans_a, bool accumulate, int64_t rows, int64_t cols, int64_t inner,
                const double* A, int64_t lda, const double* B, int64_t ldb, double* C,
                int64_t ldc);
// The same in float32 (the float32 compute mode), 16 floats per vector.
void small_gemm(bool trans_a, bool accumulate, int64_t rows, int64_t cols, int64_t inner,
                const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc);

// Where small_gemm beats BLAS: every dimension up to 128. Timed per call on
// n x n matrices in cache against the torch wheel's MKL dgemm, one thread:
// 3-6x its speed at n = 8..64, 1.5x at 128.
inline bool small_gemm_preferred(int64_t rows, int64_t cols, int64_t inner) {
  return std::max({rows, cols, inner}) <= 128;
}

}  // namespace matbp::ops::cpu
