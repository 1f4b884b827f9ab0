// Unit tests of csrc/math/projector.h: the divided differences of the rank
// indicator that the projector backward (eq. 19) uses, run on the CPU as the
// CUDA kernels will run them.

#include <gtest/gtest.h>

#include <cmath>

#include "math/projector.h"

namespace mm = matbp::math;

TEST(ProjectorAdjointWeight, IndicatorDividedDifferences) {
  const double tol = 1e-10;
  // Both in the range or both in the null space: no coupling.
  EXPECT_EQ(mm::projector_adjoint_weight(2.0, 3.0, tol), 0.0);
  EXPECT_EQ(mm::projector_adjoint_weight(2.0, 2.0, tol), 0.0);
  EXPECT_EQ(mm::projector_adjoint_weight(0.0, 1e-12, tol), 0.0);
  // One of each: (1 - 0) / (lambda_range - lambda_null), symmetric in its
  // arguments, and signed like the eigenvalue (indefinite matrices).
  EXPECT_EQ(mm::projector_adjoint_weight(4.0, 0.0, tol), 0.25);
  EXPECT_EQ(mm::projector_adjoint_weight(0.0, 4.0, tol), 0.25);
  EXPECT_EQ(mm::projector_adjoint_weight(-2.0, 1e-13, tol), 1.0 / (-2.0 - 1e-13));
  // A null eigenvalue below a large tolerance still counts in the gap.
  EXPECT_EQ(mm::projector_adjoint_weight(1.0, 0.05, 0.2), 1.0 / 0.95);
}

// Second divided differences (x, y, z) -> (1[x, y] - 1[y, z]) / (x - z),
// symmetric in all three arguments.
TEST(ProjectorSecondWeight, IndicatorSecondDividedDifferences) {
  const double tol = 0.1;
  const auto first = [&](double x, double y) { return mm::projector_adjoint_weight(x, y, tol); };
  const double values[][3] = {{2.0, 3.0, 0.01}, {2.0, 0.01, -0.05}, {-1.5, 0.0, 0.0},
                              {4.0, 0.0, 3.0}, {0.02, 0.03, 0.0}, {2.0, 3.0, 5.0}};
  for (const auto& v : values) {
    const double x = v[0], y = v[1], z = v[2];
    const double w = mm::projector_second_weight(x, y, z, tol);
    EXPECT_EQ(w, mm::projector_second_weight(y, z, x, tol));
    EXPECT_EQ(w, mm::projector_second_weight(z, y, x, tol));
    if (x != z) {
      EXPECT_NEAR(w, (first(x, y) - first(y, z)) / (x - z), 1e-14 * (1 + std::abs(w)));
    }
  }
  EXPECT_EQ(mm::projector_second_weight(-1.5, 0.0, 0.0, tol), 1.0 / 2.25);
  EXPECT_EQ(mm::projector_second_weight(2.0, 0.0, 4.0, tol), -1.0 / 8.0);
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
