// Unit tests of the small-matrix CPU eigensolver (csrc/ops/cpu/sym_eig_ql.*)
// on its own, under the sanitizers too: backward stability (residual and
// orthogonality within 10 n eps), the eigenvalues against known spectra, on
// the adversarial families (repeated, clustered to 1e-12, graded to 1e-12,
// zero, extreme magnitudes, Wilkinson's close pairs), packs of 1..8 lanes
// (1..16 in float32, the float32 compute mode's solver, checked at float32's
// eps) holding different families at once.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "ops/cpu/sym_eig_ql.cpp"

namespace {

using matbp::ops::cpu::sym_eig_ql_lanes;
using matbp::ops::cpu::sym_eig_ql;
using matbp::ops::cpu::sym_eig_ql_workspace;

struct Case {
  std::vector<double> a;         // n x n symmetric, row-major
  std::vector<double> spectrum;  // ascending, when known (else empty)
};

// Q diag(lambda) Q^T with Q a product of three Householder reflectors of
// random vectors (dense, orthogonal to rounding).
Case from_spectrum(int n, std::vector<double> lambda, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::vector<double> q(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) q[size_t(i) * n + i] = 1.0;
  for (int r = 0; r < 3; ++r) {
    std::vector<double> v(n);
    double norm2 = 0;
    for (double& x : v) {
      x = normal(rng);
      norm2 += x * x;
    }
    for (int i = 0; i < n; ++i) {  // q <- q (I - 2 v v^T / v^T v)
      double dot = 0;
      for (int k = 0; k < n; ++k) dot += q[size_t(i) * n + k] * v[k];
      for (int k = 0; k < n; ++k) q[size_t(i) * n + k] -= 2.0 * dot / norm2 * v[k];
    }
  }
  Case c;
  c.a.assign(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) {
      double s = 0;
      for (int k = 0; k < n; ++k) s += q[size_t(i) * n + k] * lambda[k] * q[size_t(j) * n + k];
      c.a[size_t(i) * n + j] = c.a[size_t(j) * n + i] = s;
    }
  std::sort(lambda.begin(), lambda.end());
  c.spectrum = lambda;
  return c;
}

// `extremes`: the scales of the Gaussian family's copies at the ends of the
// range (float64's or float32's).
std::vector<Case> families(int n, std::mt19937_64& rng, std::vector<double> extremes) {
  std::normal_distribution<double> normal;
  std::vector<Case> out;
  {  // Gaussian
    Case c;
    c.a.assign(size_t(n) * n, 0.0);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j <= i; ++j) c.a[size_t(i) * n + j] = c.a[size_t(j) * n + i] = normal(rng);
    out.push_back(c);
  }
  std::vector<double> lambda(n);
  for (int i = 0; i < n; ++i) lambda[i] = double(i / 3) - 2.0;  // each value three times
  out.push_back(from_spectrum(n, lambda, rng));
  for (int i = 0; i < n; ++i) lambda[i] = i % 2 ? 1.0 + i * 1e-12 : double(i) + 2.0;  // cluster
  out.push_back(from_spectrum(n, lambda, rng));
  for (int i = 0; i < n; ++i) lambda[i] = std::pow(10.0, -12.0 * i / std::max(1, n - 1));
  out.push_back(from_spectrum(n, lambda, rng));
  for (int i = 0; i < n; ++i) lambda[i] = i < n / 2 ? 0.0 : 1.0 + i;  // rank-deficient
  out.push_back(from_spectrum(n, lambda, rng));
  {  // zero
    Case c;
    c.a.assign(size_t(n) * n, 0.0);
    c.spectrum.assign(n, 0.0);
    out.push_back(c);
  }
  {  // permuted diagonal with ties and signs: the eigenvalues are exact
    Case c;
    c.a.assign(size_t(n) * n, 0.0);
    std::vector<int> perm(n);
    for (int i = 0; i < n; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int i = 0; i < n; ++i) {
      const double x = double((i * 7) % 5) - 2.5;
      c.a[size_t(perm[i]) * n + perm[i]] = x;
      c.spectrum.push_back(x);
    }
    std::sort(c.spectrum.begin(), c.spectrum.end());
    out.push_back(c);
  }
  {  // Wilkinson's W+: pairs of eigenvalues equal to many digits
    Case c;
    c.a.assign(size_t(n) * n, 0.0);
    for (int i = 0; i < n; ++i) {
      c.a[size_t(i) * n + i] = std::abs(i - (n - 1) / 2.0);
      if (i + 1 < n) c.a[size_t(i + 1) * n + i] = c.a[size_t(i) * n + i + 1] = 1.0;
    }
    out.push_back(c);
  }
  for (double scale : extremes) {  // extreme magnitudes
    Case c = out[0];
    for (double& x : c.a) x *= scale;
    out.push_back(c);
  }
  return out;
}

// Residual, orthogonality, order and (where known) the eigenvalues of one
// decomposition at the unit roundoff eps: vt holds the eigenvectors as rows.
void check_decomposition(const Case& c, int n, const double* vt, const double* w, double eps,
                         const std::string& what) {
  // Frobenius norm, scaled so that the 1e-300 family does not underflow.
  double amax = 0, sum = 0;
  for (double x : c.a) amax = std::max(amax, std::abs(x));
  for (double x : c.a) sum += amax > 0 ? (x / amax) * (x / amax) : 0.0;
  const double norm = amax * std::sqrt(sum);
  const double tol = 10.0 * n * eps;
  for (int j = 0; j < n; ++j) {
    if (j > 0) {
      EXPECT_LE(w[j - 1], w[j]) << what << ": not ascending at " << j;
    }
    for (int i = 0; i < n; ++i) {
      double av = 0;
      for (int k = 0; k < n; ++k) av += c.a[size_t(i) * n + k] * vt[size_t(j) * n + k];
      ASSERT_LE(std::abs(av - w[j] * vt[size_t(j) * n + i]), tol * norm)
          << what << ": residual of eigenpair " << j;
      double dot = 0;
      for (int k = 0; k < n; ++k) dot += vt[size_t(i) * n + k] * vt[size_t(j) * n + k];
      ASSERT_LE(std::abs(dot - (i == j ? 1.0 : 0.0)), tol)
          << what << ": orthogonality of rows " << i << ", " << j;
    }
    if (!c.spectrum.empty()) {
      ASSERT_LE(std::abs(w[j] - c.spectrum[j]), tol * norm) << what << ": eigenvalue " << j;
    }
  }
}

// The families in packs of every width 1..sym_eig_ql_lanes<Real>(n) (both
// pack widths: n up to 32 and above), cycling through them, so each lane
// meets different neighbours; input rounded to Real.
template <typename Real>
void check_mixed_packs(std::vector<double> extremes) {
  const double eps = std::numeric_limits<Real>::epsilon();
  std::mt19937_64 rng(20261203);
  for (int n : {1, 2, 3, 5, 8, 9, 16, 31, 32, 33, 64}) {
    const std::vector<Case> cases = families(n, rng, extremes);
    std::vector<Real> work(sym_eig_ql_workspace<Real>(n));
    size_t next = 0;
    for (int count = 1; count <= sym_eig_ql_lanes<Real>(n); ++count) {
      std::vector<std::vector<Real>> a(count), w(count, std::vector<Real>(n));
      std::vector<Real*> a_ptr(count), w_ptr(count);
      std::vector<size_t> which(count);
      for (int q = 0; q < count; ++q) {
        which[q] = next++ % cases.size();
        a[q].assign(cases[which[q]].a.begin(), cases[which[q]].a.end());
        // The upper triangle is not read: poison it.
        for (int i = 0; i < n; ++i)
          for (int j = i + 1; j < n; ++j) a[q][size_t(i) * n + j] = NAN;
        a_ptr[q] = a[q].data();
        w_ptr[q] = w[q].data();
      }
      ASSERT_EQ(sym_eig_ql(n, count, a_ptr.data(), w_ptr.data(), work.data()), 0u)
          << "n = " << n << ", count = " << count << ", families " << which[0] << " " << (count > 1 ? which[1] : 99) << " " << (count > 2 ? which[2] : 99);
      for (int q = 0; q < count; ++q) {
        const std::vector<double> vt(a[q].begin(), a[q].end()), lambda(w[q].begin(), w[q].end());
        check_decomposition(cases[which[q]], n, vt.data(), lambda.data(), eps,
                            "n = " + std::to_string(n) + ", family " +
                                std::to_string(which[q]) + ", lane " + std::to_string(q) +
                                " of " + std::to_string(count));
      }
    }
  }
}

TEST(SymEigQl, AdversarialFamiliesInMixedPacks) {
  check_mixed_packs<double>({1e150, 1e-150, 1e-300});
}

// The float32 compute mode's solver: 16 lanes, float32's rounding in every
// step, the bounds at float32's eps.
TEST(SymEigQl, Float32AdversarialFamiliesInMixedPacks) {
  check_mixed_packs<float>({1e30, 1e-30, 1e-36});
}

// The solver aligns its workspace itself (sym_eig_ql.h): a work pointer at
// every element offset from a 64-byte boundary, with exactly
// sym_eig_ql_workspace values after it (the sanitizers see any overrun),
// gives the same decomposition.
template <typename Real>
void check_workspace_alignment() {
  const double eps = std::numeric_limits<Real>::epsilon();
  std::mt19937_64 rng(20261207);
  for (int n : {8, 33}) {
    const std::vector<Case> cases = families(n, rng, {1e30, 1e-30, 1e-36});
    const int count = std::min<int>(sym_eig_ql_lanes<Real>(n), int(cases.size()));
    const int64_t size = sym_eig_ql_workspace<Real>(n);
    const int offsets = int(matbp::ops::cpu::kSymEigQlAlignment / int64_t(sizeof(Real)));
    for (int offset = 0; offset < offsets; ++offset) {
      std::vector<Real> storage(size_t(size + offset));
      std::vector<std::vector<Real>> a(count), w(count, std::vector<Real>(n));
      std::vector<Real*> a_ptr(count), w_ptr(count);
      for (int q = 0; q < count; ++q) {
        a[q].assign(cases[q].a.begin(), cases[q].a.end());
        a_ptr[q] = a[q].data();
        w_ptr[q] = w[q].data();
      }
      ASSERT_EQ(sym_eig_ql(n, count, a_ptr.data(), w_ptr.data(), storage.data() + offset), 0u)
          << "n = " << n << ", offset " << offset;
      for (int q = 0; q < count; ++q) {
        const std::vector<double> vt(a[q].begin(), a[q].end()), lambda(w[q].begin(), w[q].end());
        check_decomposition(cases[q], n, vt.data(), lambda.data(), eps,
                            "n = " + std::to_string(n) + ", offset " + std::to_string(offset) +
                                ", family " + std::to_string(q));
      }
    }
  }
}

TEST(SymEigQl, WorkspaceAtAnyAlignment) {
  check_workspace_alignment<double>();
  check_workspace_alignment<float>();
}

TEST(SymEigQl, GradedMatrixKeepsSmallEigenvaluesRelatively) {
  // diag(1, 1e-4, 1e-8, 1e-12) with tiny off-diagonal coupling: deflation is
  // relative, so the small eigenvalues come out to near relative accuracy
  // rather than to 1e-16 absolute.
  const int n = 4;
  std::vector<double> a = {1.0,  0,      0,     0,      1e-10, 1e-4,   0,     0,
                           0,    1e-12,  1e-8,  0,      0,     0,      1e-18, 1e-12};
  std::vector<double> w(n), work(sym_eig_ql_workspace<double>(n));
  double* a_ptr = a.data();
  double* w_ptr = w.data();
  ASSERT_EQ(sym_eig_ql(n, 1, &a_ptr, &w_ptr, work.data()), 0u);
  const double expected[] = {1e-12, 1e-8, 1e-4, 1.0};
  for (int i = 0; i < n; ++i) EXPECT_NEAR(w[i], expected[i], 1e-6 * expected[i]) << i;
}

}  // namespace
