// Unit tests of the small-matrix GEMM (csrc/ops/cpu/small_gemm.*) on its
// own, under the sanitizers too: every block shape and edge width (rows
// 0..9, columns 0..37, so the 4 x 16, 4 x 8, 4 x 4, 1 x 16, 1 x 8, 1 x 4
// blocks and the 1..3-wide edges all run; in float32, columns 0..69 for the
// 32-, 16- and 8-wide blocks and 1..7-wide edges), A transposed and C
// accumulated, leading
// dimensions larger than the matrices with the gaps poisoned (nothing outside
// the matrices is read or written), and Inf/NaN propagating as in a plain
// product.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "ops/cpu/small_gemm.cpp"

namespace {

using matbp::ops::cpu::small_gemm;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A rows x cols matrix at leading dimension ld, the gaps NaN.
template <typename Real>
std::vector<Real> random_matrix(int rows, int cols, int ld, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::vector<Real> m(size_t(std::max(rows, 1)) * ld, Real(kNaN));
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) m[size_t(i) * ld + j] = normal(rng);
  return m;
}

// op(A) B into C (rows x cols), op(A) = A^T with trans_a, added to C's
// previous entries with accumulate, against the plain triple loop (in
// double), to Real's rounding.
template <typename Real = double>
void expect_product(int rows, int cols, int inner, int pad, std::mt19937_64& rng,
                    bool trans_a = false, bool accumulate = false) {
  const int a_rows = trans_a ? inner : rows, a_cols = trans_a ? rows : inner;
  const int lda = a_cols + pad, ldb = cols + pad, ldc = cols + pad;
  const auto A = random_matrix<Real>(a_rows, a_cols, lda, rng);
  const auto B = random_matrix<Real>(inner, cols, ldb, rng);
  auto C = random_matrix<Real>(rows, cols, ldc, rng);
  for (int i = 0; i < rows; ++i)  // the gaps of C: a value that must survive
    for (int j = cols; j < ldc; ++j) C[size_t(i) * ldc + j] = -7.0;
  const auto before = C;
  small_gemm(trans_a, accumulate, rows, cols, inner, A.data(), lda, B.data(), ldb, C.data(), ldc);
  const auto a = [&](int i, int k) {
    return trans_a ? A[size_t(k) * lda + i] : A[size_t(i) * lda + k];
  };
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < ldc; ++j) {
      if (j >= cols) {
        ASSERT_EQ(C[size_t(i) * ldc + j], -7.0) << rows << "x" << cols << "x" << inner;
        continue;
      }
      double sum = accumulate ? before[size_t(i) * ldc + j] : 0.0;
      double abs_sum = std::abs(sum);
      for (int k = 0; k < inner; ++k) {
        sum += double(a(i, k)) * B[size_t(k) * ldb + j];
        abs_sum += std::abs(double(a(i, k)) * B[size_t(k) * ldb + j]);
      }
      const double unit_roundoff = std::numeric_limits<Real>::epsilon() / 2;
      ASSERT_NEAR(C[size_t(i) * ldc + j], sum, 2 * (inner + 1) * unit_roundoff * abs_sum + 1e-300)
          << rows << "x" << cols << "x" << inner << (trans_a ? " A^T" : "")
          << (accumulate ? " +=" : "") << " at (" << i << ", " << j << ")";
    }
  }
}

TEST(SmallGemm, EveryBlockShapeAndEdge) {
  std::mt19937_64 rng(1);
  for (int rows = 0; rows <= 9; ++rows)
    for (int cols = 0; cols <= 37; ++cols)
      for (int inner : {0, 1, 2, 7, 16, 33}) expect_product(rows, cols, inner, 0, rng);
}

TEST(SmallGemm, TransposedAAndAccumulate) {
  std::mt19937_64 rng(4);
  for (bool trans_a : {false, true})
    for (bool accumulate : {false, true})
      for (int rows : {1, 3, 4, 7, 9})
        for (int cols : {1, 6, 8, 16, 21, 33})
          for (int inner : {0, 1, 5, 12}) {
            expect_product(rows, cols, inner, 0, rng, trans_a, accumulate);
            expect_product(rows, cols, inner, 3, rng, trans_a, accumulate);
          }
}

TEST(SmallGemm, LeadingDimensionsWithPoisonedGaps) {
  std::mt19937_64 rng(2);
  for (int n : {1, 3, 8, 13, 16, 24, 31, 32, 33, 64})
    for (int pad : {1, 5, 8}) expect_product(n, n, n, pad, rng);
  expect_product(5, 29, 11, 3, rng);
  expect_product(17, 6, 40, 2, rng);
}

// float32 (the float32 compute mode's products): 16 floats per vector.
TEST(SmallGemm, Float32EveryBlockShapeAndEdge) {
  std::mt19937_64 rng(5);
  for (int rows = 0; rows <= 9; ++rows)
    for (int cols = 0; cols <= 69; ++cols)
      for (int inner : {0, 1, 7, 33}) expect_product<float>(rows, cols, inner, 0, rng);
}

TEST(SmallGemm, Float32TransposedAAndAccumulateWithPoisonedGaps) {
  std::mt19937_64 rng(6);
  for (bool trans_a : {false, true})
    for (bool accumulate : {false, true})
      for (int n : {1, 7, 8, 9, 16, 24, 33, 64})
        for (int pad : {0, 3}) expect_product<float>(n, n, n, pad, rng, trans_a, accumulate);
}

TEST(SmallGemm, SquareSizesOfThePipelines) {
  std::mt19937_64 rng(3);
  for (int n : {48, 65, 100, 128}) expect_product(n, n, n, 0, rng);
}

TEST(SmallGemm, NonFiniteEntriesPropagate) {
  const int n = 12;
  std::vector<double> A(n * n, 1.0), B(n * n, 1.0), C(n * n);
  A[3 * n + 5] = std::numeric_limits<double>::infinity();  // row 3 of C: Inf
  B[2 * n + 10] = kNaN;                                     // column 10 of C: NaN
  small_gemm(false, false, n, n, n, A.data(), n, B.data(), n, C.data(), n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      const double c = C[i * n + j];
      if (j == 10) {
        EXPECT_TRUE(std::isnan(c)) << i << ", " << j;
      } else if (i == 3) {
        EXPECT_TRUE(std::isinf(c)) << i << ", " << j;
      } else {
        EXPECT_EQ(c, double(n)) << i << ", " << j;
      }
    }
}

}  // namespace
