// The small-matrix GEMM of small_gemm.h: a 4 x 16 block of C in registers
// (eight 8-double vectors: 8 AVX-512 or 16 AVX2 registers), B's row segment
// loaded once per k and used by four rows of A. Narrower blocks take the
// edges.

#include "small_gemm.h"

#include <utility>

#include "simd_clones.h"

namespace matbp::ops::cpu {
namespace {

typedef double Vec8 __attribute__((vector_size(64)));
// The same, at any 8-byte aligned address (rows of B and C at odd offsets).
typedef double Vec8Unaligned __attribute__((vector_size(64), aligned(8), may_alias));

// Entry (i, k) of op(A).
template <bool TransA>
[[gnu::always_inline]] inline double a_entry(const double* A, int64_t lda, int64_t i, int64_t k) {
  return TransA ? A[k * lda + i] : A[i * lda + k];
}

// C[i0 .. i0+R) x [j, j + 8 Chunks) (+)= op(A)[i0 .. i0+R) B[:, j ..).
template <bool TransA, bool Accumulate, int R, int Chunks>
[[gnu::always_inline]] inline void block(int64_t i0, int64_t j, int64_t inner, const double* A,
                                         int64_t lda, const double* B, int64_t ldb, double* C,
                                         int64_t ldc) {
  Vec8 acc[R][Chunks] = {};
  for (int64_t k = 0; k < inner; ++k) {
    Vec8 b[Chunks];
    for (int c = 0; c < Chunks; ++c)
      b[c] = *reinterpret_cast<const Vec8Unaligned*>(B + k * ldb + j + 8 * c);
    for (int r = 0; r < R; ++r) {
      const double a = a_entry<TransA>(A, lda, i0 + r, k);
      for (int c = 0; c < Chunks; ++c) acc[r][c] += a * b[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < Chunks; ++c) {
      // Not auto: a deduced type drops the typedef's alignment of 8.
      Vec8Unaligned* out = reinterpret_cast<Vec8Unaligned*>(C + (i0 + r) * ldc + j + 8 * c);
      *out = Accumulate ? *out + acc[r][c] : acc[r][c];
    }
}

// The last Width < 8 columns, Width known to the compiler so the loops over
// it unroll into registers.
template <bool TransA, bool Accumulate, int R, int Width>
[[gnu::always_inline]] inline void edge_block(int64_t i0, int64_t j, int64_t inner,
                                              const double* A, int64_t lda, const double* B,
                                              int64_t ldb, double* C, int64_t ldc) {
  double acc[R][Width] = {};
  for (int64_t k = 0; k < inner; ++k) {
    const double* b = B + k * ldb + j;
    for (int r = 0; r < R; ++r) {
      const double a = a_entry<TransA>(A, lda, i0 + r, k);
      for (int c = 0; c < Width; ++c) acc[r][c] += a * b[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < Width; ++c) {
      double& out = C[(i0 + r) * ldc + j + c];
      out = Accumulate ? out + acc[r][c] : acc[r][c];
    }
}

template <bool TransA, bool Accumulate, int R, int... Widths>
[[gnu::always_inline]] inline void edge(int64_t width, std::integer_sequence<int, Widths...>,
                                        int64_t i0, int64_t j, int64_t inner, const double* A,
                                        int64_t lda, const double* B, int64_t ldb, double* C,
                                        int64_t ldc) {
  ((width == Widths + 1 ? edge_block<TransA, Accumulate, R, Widths + 1>(i0, j, inner, A, lda, B, ldb, C, ldc)
                        : void()),
   ...);
}

template <bool TransA, bool Accumulate, int R>
[[gnu::always_inline]] inline void row_block(int64_t i0, int64_t cols, int64_t inner,
                                             const double* A, int64_t lda, const double* B,
                                             int64_t ldb, double* C, int64_t ldc) {
  int64_t j = 0;
  for (; j + 16 <= cols; j += 16)
    block<TransA, Accumulate, R, 2>(i0, j, inner, A, lda, B, ldb, C, ldc);
  for (; j + 8 <= cols; j += 8)
    block<TransA, Accumulate, R, 1>(i0, j, inner, A, lda, B, ldb, C, ldc);
  if (j < cols)
    edge<TransA, Accumulate, R>(cols - j, std::make_integer_sequence<int, 7>(), i0, j, inner, A,
                                lda, B, ldb, C, ldc);
}

template <bool TransA, bool Accumulate>
[[gnu::always_inline]] inline void all_rows(int64_t rows, int64_t cols, int64_t inner,
                                            const double* A, int64_t lda, const double* B,
                                            int64_t ldb, double* C, int64_t ldc) {
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4)
    row_block<TransA, Accumulate, 4>(i, cols, inner, A, lda, B, ldb, C, ldc);
  for (; i < rows; ++i) row_block<TransA, Accumulate, 1>(i, cols, inner, A, lda, B, ldb, C, ldc);
}

}  // namespace

MATBP_SIMD_CLONES
void small_gemm(bool trans_a, bool accumulate, int64_t rows, int64_t cols, int64_t inner,
                const double* A, int64_t lda, const double* B, int64_t ldb, double* C,
                int64_t ldc) {
  if (trans_a) {
    if (accumulate) all_rows<true, true>(rows, cols, inner, A, lda, B, ldb, C, ldc);
    else all_rows<true, false>(rows, cols, inner, A, lda, B, ldb, C, ldc);
  } else {
    if (accumulate) all_rows<false, true>(rows, cols, inner, A, lda, B, ldb, C, ldc);
    else all_rows<false, false>(rows, cols, inner, A, lda, B, ldb, C, ldc);
  }
}

}  // namespace matbp::ops::cpu
