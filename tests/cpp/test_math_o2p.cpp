// Unit tests of csrc/math/o2p_log.h, the scalar math of the O2P log layer
// (header-only: these run on the CPU what the CUDA kernels will run).
//
// Reference values: mpmath at 60 digits,
//   phi(x) = log1p(x)/x, phi'(x) = (x/(1+x) - log1p(x))/x^2, phi'(0) = -1/2,
//   phi[x, y] = (phi(x) - phi(y))/(x - y), phi[x, x] = phi'(x).

#include <gtest/gtest.h>

#include <cmath>

#include "math/o2p_log.h"

namespace mm = matbp::math;

namespace {

struct PhiCase {
  double x, y, ref;
};

const PhiCase kPhiCases[] = {
    {0.0, 0.0, -0.5},
    {1e-10, 0.0, -0.4999999999666666666691667},
    {0.01, 0.02, -0.4901720507822633518071769},
    {0.049, 0.051, -0.4684468339889296222897166},  // straddles the series threshold
    {0.05, 0.05, -0.4684466201537536054443708},
    {0.1, 0.10000000000100001, -0.4401088895231262333144061},
    {1.0, 1.000000001, -0.1931471804917981232452443},
    {1.0, 1.4, -0.1695309204107562501822127},
    {1.0, 3.0, -0.1155245300933242182362054},
    {1000.0, 1000.0009999999999, -0.000005909748369567018427697335},
    {1000000.0, 1.0, -0.0000006931340581824455280886558},
    {100000000.0, 0.0, -9.999998157931924604763458e-9},
    {0.0, 5.0, -0.1283296212308777999675009},
    {0.001, 10000.0, -0.00009985793889047744056720064},
    {0.03, 0.07, -0.4685321749245718225519128},
    {2.5, 2.5, -0.08615636067354459359581359},
    {1000000000000.0, 1000000000000.0, -2.66310211159305482082159e-23},
};

double rel(double got, double ref) { return std::abs(got - ref) / std::abs(ref); }

// The close-argument branch loses at most ~40x in relative accuracy (see the
// header); everything else is within a few ulps.
constexpr double kTol = 1e-14;

TEST(Log1pRatioDividedDifference, MatchesHighPrecision) {
  for (const auto& c : kPhiCases) {
    EXPECT_LE(rel(mm::log1p_ratio_divided_difference(c.x, c.y), c.ref), kTol)
        << "x=" << c.x << " y=" << c.y;
    EXPECT_EQ(mm::log1p_ratio_divided_difference(c.x, c.y),
              mm::log1p_ratio_divided_difference(c.y, c.x));
  }
}

TEST(O2PH, ValueAtZeroAndSmallAndLarge) {
  const double eps = 1e-3;
  EXPECT_EQ(mm::o2p_h(0.0, eps), 1.0 / eps);
  EXPECT_LE(rel(mm::o2p_h(1e-20, eps), 1.0 / eps), 1e-16);
  EXPECT_LE(rel(mm::o2p_h(2.0, eps), std::log1p(2.0 / eps) / 2.0), 1e-15);
  EXPECT_LE(rel(mm::o2p_log_eigenvalue(1e-20, eps), std::log(eps)), 1e-16);
}

// Singular values below max(m, d) eps sigma_max are the numerical rank's zeros.
TEST(O2PGramZeroCutoff, IsTheSquaredRankTolerance) {
  const double r = 7 * mm::machine_epsilon<double>();
  EXPECT_EQ(mm::o2p_gram_zero_cutoff(4.0, 3, 7), r * r * 4.0);
  EXPECT_EQ(mm::o2p_gram_zero_cutoff(4.0, 7, 3), r * r * 4.0);
  EXPECT_EQ(mm::o2p_gram_zero_cutoff(0.0, 7, 3), 0.0);
}

// h[s_i, s_j] = phi[s_i/eps, s_j/eps] / eps^2, whichever branch the
// h-value shortcut takes, for several eps.
TEST(O2PHDividedDifference, EqualsScaledPhiDividedDifference) {
  for (double eps : {1e-3, 1e-8, 0.5}) {
    for (const auto& c : kPhiCases) {
      const double si = c.x * eps, sj = c.y * eps;
      const double got = mm::o2p_h_divided_difference(si, sj, mm::o2p_h(si, eps),
                                                      mm::o2p_h(sj, eps), eps);
      EXPECT_LE(rel(got, c.ref / eps / eps), 4 * kTol) << "eps=" << eps << " x=" << c.x
                                                       << " y=" << c.y;
    }
  }
}

// Continuity across the branch switches: a relative gap of exactly 1/2 and
// the series threshold, approached from both sides.
TEST(O2PHDividedDifference, ContinuousAcrossBranches) {
  const double eps = 1e-3;
  for (double lo : {0.02, 0.5, 7.0}) {
    const double hi = 2 * lo;
    const double below = mm::log1p_ratio_divided_difference(std::nextafter(hi, 0.0), lo);
    const double above = mm::log1p_ratio_divided_difference(std::nextafter(hi, 1e9), lo);
    EXPECT_LE(rel(below, above), 1e-13) << lo;
  }
  const double t = mm::kPhiSeriesThreshold;
  const double a = mm::log1p_ratio_divided_difference(std::nextafter(t, 0.0), t / 1.5);
  const double b = mm::log1p_ratio_divided_difference(t, t / 1.5);
  EXPECT_LE(rel(a, b), 1e-13);
  (void)eps;
}

}  // namespace

namespace {

// The precomputed-log form of the log divided difference agrees with the
// reference form on both sides of its factor-2 switch.
TEST(DividedDifferenceLogWithLogs, AgreesWithLog1pForm) {
  for (double lo : {1e-8, 1e-3, 0.7, 3.0, 1e6}) {
    for (double ratio : {1.0, 1.0 + 1e-12, 1.5, 1.999, 2.001, 10.0, 1e6}) {
      const double hi = lo * ratio;
      const double got = mm::divided_difference_log(hi, lo, std::log(hi), std::log(lo));
      const double ref = mm::divided_difference_log(hi, lo);
      EXPECT_LE(std::abs(got - ref) / ref, 1e-14) << "lo=" << lo << " ratio=" << ratio;
    }
  }
}

}  // namespace

// Tiny eps (s / eps up to 1e300): h and its divided differences stay finite
// and agree with the plain quotients where those have no cancellation.
TEST(O2PHDividedDifference, TinyEps) {
  const double eps = 1e-300;
  for (double s : {1e-10, 2.0, 1e10}) {
    EXPECT_LE(rel(mm::o2p_h(s, eps), (std::log(s) - std::log(eps)) / s), 1e-14);
    EXPECT_LE(rel(mm::o2p_log_eigenvalue(s, eps), std::log(s)), 1e-15);
  }
  const double si = 1.0, sj = 1.25;
  const double hi = mm::o2p_h(si, eps), hj = mm::o2p_h(sj, eps);
  EXPECT_LE(rel(mm::o2p_h_divided_difference(si, sj, hi, hj, eps), (hi - hj) / (si - sj)), 1e-13);
  // h'(s) = (1 / (eps + s) - h(s)) / s at a double point.
  EXPECT_LE(rel(mm::o2p_h_divided_difference(si, si, hi, hi, eps), (1.0 / (eps + si) - hi) / si),
            1e-13);
}
