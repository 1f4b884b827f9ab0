// The small-matrix GEMM of small_gemm.h: a 4 x 2-vector block of C in
// registers (eight 64-byte vectors, 4 x 16 doubles or 4 x 32 floats: 8
// AVX-512 or 16 AVX2 registers), B's row segment
// loaded once per k and used by four rows of A. Narrower blocks take the
// edges: one vector, a half vector, then scalar columns.

#include "small_gemm.h"

#include <utility>

#include "simd_clones.h"

namespace matbp::ops::cpu {
namespace {

// One vector of Bytes bytes of Real (64: a full one; 32: the half vector
// that keeps 8 remaining floats or 4 doubles out of the scalar edge), and
// the same at any element-aligned address (rows of B and C at odd offsets).
template <typename Real, int Bytes = 64>
struct Simd {
  typedef Real Vec __attribute__((vector_size(Bytes)));
  typedef Real Unaligned __attribute__((vector_size(Bytes), aligned(sizeof(Real)), may_alias));
};
template <typename Real, int Bytes = 64>
constexpr int kLanes = Bytes / sizeof(Real);

// Entry (i, k) of op(A).
template <typename Real, bool TransA>
[[gnu::always_inline]] inline Real a_entry(const Real* A, int64_t lda, int64_t i, int64_t k) {
  return TransA ? A[k * lda + i] : A[i * lda + k];
}

// C[i0 .. i0+R) x [j, j + L Chunks) (+)= op(A)[i0 .. i0+R) B[:, j ..), L
// elements of Real in a vector of Bytes.
template <typename Real, bool TransA, bool Accumulate, int R, int Chunks, int Bytes = 64>
[[gnu::always_inline]] inline void block(int64_t i0, int64_t j, int64_t inner, const Real* A,
                                         int64_t lda, const Real* B, int64_t ldb, Real* C,
                                         int64_t ldc) {
  using Vec = typename Simd<Real, Bytes>::Vec;
  using Unaligned = typename Simd<Real, Bytes>::Unaligned;
  constexpr int L = kLanes<Real, Bytes>;
  Vec acc[R][Chunks] = {};
  for (int64_t k = 0; k < inner; ++k) {
    Vec b[Chunks];
    for (int c = 0; c < Chunks; ++c)
      b[c] = *reinterpret_cast<const Unaligned*>(B + k * ldb + j + L * c);
    for (int r = 0; r < R; ++r) {
      const Real a = a_entry<Real, TransA>(A, lda, i0 + r, k);
      for (int c = 0; c < Chunks; ++c) acc[r][c] += a * b[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < Chunks; ++c) {
      // Not auto: a deduced type drops the typedef's element alignment.
      Unaligned* out = reinterpret_cast<Unaligned*>(C + (i0 + r) * ldc + j + L * c);
      *out = Accumulate ? *out + acc[r][c] : acc[r][c];
    }
}

// The last Width < kLanes / 2 columns, Width known to the compiler so the
// loops over it unroll into registers.
template <typename Real, bool TransA, bool Accumulate, int R, int Width>
[[gnu::always_inline]] inline void edge_block(int64_t i0, int64_t j, int64_t inner,
                                              const Real* A, int64_t lda, const Real* B,
                                              int64_t ldb, Real* C, int64_t ldc) {
  Real acc[R][Width] = {};
  for (int64_t k = 0; k < inner; ++k) {
    const Real* b = B + k * ldb + j;
    for (int r = 0; r < R; ++r) {
      const Real a = a_entry<Real, TransA>(A, lda, i0 + r, k);
      for (int c = 0; c < Width; ++c) acc[r][c] += a * b[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < Width; ++c) {
      Real& out = C[(i0 + r) * ldc + j + c];
      out = Accumulate ? out + acc[r][c] : acc[r][c];
    }
}

template <typename Real, bool TransA, bool Accumulate, int R, int... Widths>
[[gnu::always_inline]] inline void edge(int64_t width, std::integer_sequence<int, Widths...>,
                                        int64_t i0, int64_t j, int64_t inner, const Real* A,
                                        int64_t lda, const Real* B, int64_t ldb, Real* C,
                                        int64_t ldc) {
  ((width == Widths + 1
        ? edge_block<Real, TransA, Accumulate, R, Widths + 1>(i0, j, inner, A, lda, B, ldb, C, ldc)
        : void()),
   ...);
}

template <typename Real, bool TransA, bool Accumulate, int R>
[[gnu::always_inline]] inline void row_block(int64_t i0, int64_t cols, int64_t inner,
                                             const Real* A, int64_t lda, const Real* B,
                                             int64_t ldb, Real* C, int64_t ldc) {
  constexpr int L = kLanes<Real>;
  int64_t j = 0;
  for (; j + 2 * L <= cols; j += 2 * L)
    block<Real, TransA, Accumulate, R, 2>(i0, j, inner, A, lda, B, ldb, C, ldc);
  for (; j + L <= cols; j += L)
    block<Real, TransA, Accumulate, R, 1>(i0, j, inner, A, lda, B, ldb, C, ldc);
  if (j + L / 2 <= cols) {
    block<Real, TransA, Accumulate, R, 1, 32>(i0, j, inner, A, lda, B, ldb, C, ldc);
    j += L / 2;
  }
  if (j < cols)
    edge<Real, TransA, Accumulate, R>(cols - j, std::make_integer_sequence<int, L / 2 - 1>(), i0,
                                      j, inner, A, lda, B, ldb, C, ldc);
}

template <typename Real, bool TransA, bool Accumulate>
[[gnu::always_inline]] inline void all_rows(int64_t rows, int64_t cols, int64_t inner,
                                            const Real* A, int64_t lda, const Real* B,
                                            int64_t ldb, Real* C, int64_t ldc) {
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4)
    row_block<Real, TransA, Accumulate, 4>(i, cols, inner, A, lda, B, ldb, C, ldc);
  for (; i < rows; ++i) row_block<Real, TransA, Accumulate, 1>(i, cols, inner, A, lda, B, ldb, C, ldc);
}


template <typename Real>
[[gnu::always_inline]] inline void dispatch(bool trans_a, bool accumulate, int64_t rows,
                                            int64_t cols, int64_t inner, const Real* A,
                                            int64_t lda, const Real* B, int64_t ldb, Real* C,
                                            int64_t ldc) {
  if (trans_a) {
    if (accumulate) all_rows<Real, true, true>(rows, cols, inner, A, lda, B, ldb, C, ldc);
    else all_rows<Real, true, false>(rows, cols, inner, A, lda, B, ldb, C, ldc);
  } else {
    if (accumulate) all_rows<Real, false, true>(rows, cols, inner, A, lda, B, ldb, C, ldc);
    else all_rows<Real, false, false>(rows, cols, inner, A, lda, B, ldb, C, ldc);
  }
}

}  // namespace

MATBP_SIMD_CLONES
void small_gemm(bool trans_a, bool accumulate, int64_t rows, int64_t cols, int64_t inner,
                const double* A, int64_t lda, const double* B, int64_t ldb, double* C,
                int64_t ldc) {
  dispatch(trans_a, accumulate, rows, cols, inner, A, lda, B, ldb, C, ldc);
}

MATBP_SIMD_CLONES
void small_gemm(bool trans_a, bool accumulate, int64_t rows, int64_t cols, int64_t inner,
                const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc) {
  dispatch(trans_a, accumulate, rows, cols, inner, A, lda, B, ldb, C, ldc);
}

}  // namespace matbp::ops::cpu
