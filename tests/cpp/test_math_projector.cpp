// Unit tests of csrc/math/projector.h: the divided differences of the rank
// indicator that the projector backward (eq. 19) uses, run on the CPU as the
// CUDA kernels will run them.

#include <gtest/gtest.h>

#include "math/projector.h"

namespace mm = matbp::math;

TEST(ProjectorAdjointWeight, IndicatorDividedDifferences) {
  const double tol = 1e-10;
  // Both in the range or both in the null space: no coupling.
  EXPECT_EQ(mm::projector_adjoint_weight(2.0, 3.0, tol), 0.0);
  EXPECT_EQ(mm::projector_adjoint_weight(2.0, 2.0, tol), 0.0);
  EXPECT_EQ(mm::projector_adjoint_weight(0.0, 1e-12, tol), 0.0);
  // One of each: (1 - 0) / (lambda_range - 0), symmetric in its arguments,
  // and signed like the eigenvalue (indefinite matrices).
  EXPECT_EQ(mm::projector_adjoint_weight(4.0, 0.0, tol), 0.25);
  EXPECT_EQ(mm::projector_adjoint_weight(0.0, 4.0, tol), 0.25);
  EXPECT_EQ(mm::projector_adjoint_weight(-2.0, 1e-13, tol), -0.5);
}

TEST(ProjectorAdjointWeight, ToleranceDecidesTheRank) {
  EXPECT_TRUE(mm::in_numerical_range(1e-9, 1e-10));
  EXPECT_FALSE(mm::in_numerical_range(1e-10, 1e-10));
  EXPECT_FALSE(mm::in_numerical_range(-5e-11, 1e-10));
  EXPECT_DOUBLE_EQ(mm::projector_adjoint_weight(1e-9, 0.0, 1e-10), 1e9);
  EXPECT_EQ(mm::projector_adjoint_weight(1e-9, 0.0, 1e-8), 0.0);
}

TEST(DefaultRankRtol, ScalesWithSize) {
  EXPECT_EQ(mm::default_rank_rtol<double>(0), mm::machine_epsilon<double>());
  EXPECT_EQ(mm::default_rank_rtol<double>(1), mm::machine_epsilon<double>());
  EXPECT_EQ(mm::default_rank_rtol<double>(100), 100 * mm::machine_epsilon<double>());
  EXPECT_EQ(mm::default_rank_rtol<float>(10), 10 * mm::machine_epsilon<float>());
}
