// The device-generic op code (csrc/ops/generic) that the CUDA backend runs,
// run here on the CPU with a reference backend (ATen's eigh, serial loops)
// and compared with the CPU operators. The build machines have no GPU: this
// is how the CUDA backend's host logic and functors are tested.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "matbp.h"
#include "ops/generic/o2p_log.h"
#include "ops/generic/projector.h"
#include "ops/generic/svd.h"
#include "ops/generic/sym_eig.h"
#include "ops/generic/sym_fn.h"

namespace {

using Tensor = at::Tensor;
using matbp::ops::EigenResult;

// ATen's eigh and plain loops, with the CUDA backend's reporting (failures
// flagged per matrix, not raised).
struct ReferenceBackend {
  static constexpr bool kRaisesAtOnce = false;

  static EigenResult sym_eig(const Tensor& A, at::ScalarType compute, const char*, const char*) {
    const auto A64 = A.to(compute);
    const int64_t batch = matbp::ops::batch_count(A64), n = A64.size(-1);
    const auto flat = A64.reshape({batch, n * n});
    const auto finite = at::isfinite(flat).all(1);
    // Lower triangle, as LAPACK and cuSOLVER are called.
    auto [L, V] = at::linalg_eigh(at::where(finite.view({-1, 1}), flat, 0.0).view(A64.sizes()), "L");
    return {L.contiguous(), V.contiguous(), finite, at::ones_like(finite)};
  }

  // The batch-wide forms the CUDA backend uses, run here on the CPU.
  template <typename Inner>
  static matbp::ops::EigenbasisProduct eigenbasis_sandwich(const Tensor& G, const Tensor& V,
                                                           matbp::ops::Rotation rotation,
                                                           const Inner& inner) {
    return matbp::ops::batched_eigenbasis_sandwich<ReferenceBackend>(G, V, rotation, inner);
  }

  static matbp::ops::EigenbasisProduct eigen_compose(const Tensor& V, const Tensor& d) {
    return matbp::ops::batched_eigen_compose(V, d);
  }

  template <typename F>
  static void for_each(int64_t count, const F& f) {
    for (int64_t idx = 0; idx < count; ++idx) f(idx);
  }

  template <typename F>
  static void for_each_pair(int64_t batch, int64_t n, const F& f) {
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i; j < n; ++j) f(b, i, j);
  }
};

double max_abs_diff(const Tensor& a, const Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Rank-deficient features: the small Gram eigenvalues need the refinement.
Tensor features(int64_t batch, int64_t m, int64_t d, int64_t rank, at::ScalarType dtype) {
  auto A = at::randn({batch, m, rank}, at::kDouble);
  auto B = at::randn({batch, rank, d}, at::kDouble);
  return (at::matmul(A, B) / std::sqrt(double(m))).to(dtype);
}

class GenericOps : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {
 protected:
  void SetUp() override { at::manual_seed(0); }
};

// Both paths (m < d and m >= d), full rank and rank deficient: the batched
// generic pipeline agrees with the CPU kernels' per-matrix pipelines.
TEST_P(GenericOps, O2pLogMatchesCpuKernels) {
  const auto [m, d, rank] = GetParam();
  const double eps = 1e-3;
  const auto X = features(3, m, d, rank, at::kDouble);
  auto [C, S, U, Y] = matbp::ops::generic::o2p_log_with_eig<ReferenceBackend>(X, eps);
  auto [Cc, Sc, Uc, Yc] = matbp::o2p_log_with_eig(X, eps);
  EXPECT_LT(max_abs_diff(C, Cc), 1e-11);
  EXPECT_LT(max_abs_diff(S, Sc), 1e-11 * Sc.abs().max().item<double>());
  EXPECT_EQ(max_abs_diff(C, C.mT()), 0.0);
  const auto gC = at::randn({3, d, d}, at::kDouble);
  const auto gX = matbp::ops::generic::o2p_log_backward<ReferenceBackend>(gC, X, S, U, Y, eps);
  const auto gXc = matbp::o2p_log_backward(gC, X, Sc, Uc, Yc, eps);
  EXPECT_LT(max_abs_diff(gX, gXc), 1e-8 * gXc.abs().max().item<double>());
}

INSTANTIATE_TEST_SUITE_P(Shapes, GenericOps,
                         ::testing::Values(std::make_tuple(5, 12, 5), std::make_tuple(5, 12, 2),
                                           std::make_tuple(12, 5, 5), std::make_tuple(12, 5, 3),
                                           std::make_tuple(6, 6, 6)));

TEST(GenericOpsFloat32, O2pLogKeepsTheInputDtype) {
  at::manual_seed(1);
  const auto X = features(2, 7, 10, 7, at::kFloat);
  auto [C, S, U, Y] = matbp::ops::generic::o2p_log_with_eig<ReferenceBackend>(X, 1e-2);
  EXPECT_EQ(C.scalar_type(), at::kFloat);
  EXPECT_EQ(S.scalar_type(), at::kDouble);
  auto [Cc, Sc, Uc, Yc] = matbp::o2p_log_with_eig(X, 1e-2);
  EXPECT_LT(max_abs_diff(C, Cc), 1e-5);
}

// Without sync checks a failed matrix's outputs become NaN and the others
// are untouched; with them (raise), the message names the first failure.
TEST(GenericOpsFailures, NonFiniteMatrixIsPoisonedNotRaised) {
  at::manual_seed(2);
  auto X = features(3, 4, 9, 4, at::kDouble);
  X[1][2][3] = std::numeric_limits<double>::quiet_NaN();
  auto [C, S, U, Y] = matbp::ops::generic::o2p_log_with_eig<ReferenceBackend>(X, 1e-3);
  EXPECT_TRUE(C[1].isnan().all().item<bool>());
  EXPECT_TRUE(S[1].isnan().all().item<bool>());
  EXPECT_TRUE(at::isfinite(C[0]).all().item<bool>());
  EXPECT_TRUE(at::isfinite(C[2]).all().item<bool>());
  auto [C0, S0, U0, Y0] = matbp::o2p_log_with_eig(X[0].unsqueeze(0), 1e-3);
  EXPECT_LT(max_abs_diff(C[0], C0[0]), 1e-11);

  const auto ok = at::tensor({1, 0, 0}).to(at::kBool);
  auto out = at::zeros({3, 2});
  EXPECT_THROW(matbp::ops::report_failures(ok, /*raise=*/true, {out},
                                           [](int64_t b) { return "failed " + std::to_string(b); }),
               c10::Error);
  try {
    matbp::ops::report_failures(ok, true, {out}, [](int64_t b) { return "failed " + std::to_string(b); });
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("failed 1"), std::string::npos);
  }
}

// The eigenbasis products batch-wide (batched_eigenbasis_sandwich and
// batched_eigen_compose, as CUDA runs them) against the CPU's per-matrix
// pipelines (the operators), from the same decomposition: the backwards of
// sym_fn, sym_eig (gL and gV, each alone) and projector, and the forwards
// of sym_fn and projector, with a float32 incoming gradient.
TEST(GenericOpsEigenbasis, BatchWideProductsMatchThePerMatrixPipelines) {
  namespace gen = matbp::ops::generic;
  at::manual_seed(2);
  for (int64_t n : {1, 5, 13, 40}) {
    const auto X = at::randn({4, n, n}, at::kDouble);
    const auto A = at::matmul(X, X.mT()) / double(n) + 0.5 * at::eye(n, at::kDouble);
    const auto G = at::randn({4, n, n}, at::kDouble);
    const auto gL = at::randn({4, n}, at::kDouble);
    auto [F, L, V] = gen::sym_fn_with_eig<ReferenceBackend>(A, "log", 1.0, std::nullopt);
    auto [Fc, Lc, Vc] = matbp::sym_fn_with_eig(A, "log", 1.0);
    EXPECT_LT(max_abs_diff(F, Fc), 1e-13) << n;
    // One decomposition (the CPU's) for both, so eigenvector signs agree.
    for (const auto& g : {G, G.to(at::kFloat)}) {
      const auto got = gen::sym_fn_backward<ReferenceBackend>(g, Lc, Vc, "log", 1.0);
      const auto want = matbp::sym_fn_backward(g, Lc, Vc, "log", 1.0);
      EXPECT_EQ(got.scalar_type(), g.scalar_type());
      EXPECT_LT(max_abs_diff(got, want), 1e-12 * want.abs().max().item<double>() + 1e-30) << n;
    }
    const std::optional<Tensor> none;
    for (const auto& [l, v] : {std::make_pair(std::optional<Tensor>(gL), std::optional<Tensor>(G)),
                               std::make_pair(none, std::optional<Tensor>(G)),
                               std::make_pair(std::optional<Tensor>(gL), none)}) {
      const auto got = gen::sym_eig_backward<ReferenceBackend>(l, v, Lc, Vc, std::nullopt);
      const auto want = matbp::sym_eig_backward(l, v, Lc, Vc);
      EXPECT_LT(max_abs_diff(got, want), 1e-11 * want.abs().max().item<double>() + 1e-30) << n;
    }
    const auto R = at::matmul(X.narrow(-1, 0, (n + 1) / 2), X.narrow(-1, 0, (n + 1) / 2).mT());
    auto [P, PL, PV] = gen::projector_with_eig<ReferenceBackend>(R, std::nullopt);
    auto [Pc, PLc, PVc] = matbp::projector_with_eig(R, std::nullopt);
    EXPECT_LT(max_abs_diff(P, Pc), 1e-12) << n;
    const auto got = gen::projector_backward<ReferenceBackend>(G, PLc, PVc, std::nullopt);
    const auto want = matbp::projector_backward(G, PLc, PVc, std::nullopt);
    EXPECT_LT(max_abs_diff(got, want), 1e-10 * want.abs().max().item<double>() + 1e-30) << n;
  }
}

// The sym_fn domain check flags the matrix instead of raising.
TEST(GenericOpsFailures, SymFnDomainViolationIsFlagged) {
  auto A = at::diag_embed(at::tensor({1.0, 2.0, 3.0, -1.0, 2.0, 3.0}, at::kDouble).view({2, 3}));
  auto [F, L, V] = matbp::ops::generic::sym_fn_with_eig<ReferenceBackend>(A, "log", 1.0, std::nullopt);
  EXPECT_TRUE(at::isfinite(F[0]).all().item<bool>());
  EXPECT_TRUE(F[1].isnan().all().item<bool>());
  EXPECT_LT(max_abs_diff(F[0], at::diag(at::tensor({1.0, 2.0, 3.0}, at::kDouble).log())), 1e-14);
}

// The plain definition of D^2 f(A)[G, H]: each weight f[l_i, l_j, l_c] from
// the three eigenvalues sorted, through math::second_divided_difference.
struct PlainSecondWeight {
  const double* lam;
  const double* f1;
  int64_t n;
  matbp::math::SpectralFn fn;
  double p;
  double operator()(int64_t b, int64_t i, int64_t j, int64_t c) const {
    const double* l = lam + b * n;
    const double* f = f1 + b * n * n;
    int64_t idx[3] = {i, j, c};
    std::sort(idx, idx + 3, [&](int64_t x, int64_t y) { return l[x] < l[y]; });
    return matbp::math::second_divided_difference(fn, l[idx[0]], l[idx[1]], l[idx[2]], p,
                                                   f[idx[0] * n + idx[1]], f[idx[1] * n + idx[2]]);
  }
};

// sym_fn_second_derivative's kernel (GEMMs for eigenvalue pairs apart, three
// c ranges otherwise) against the plain definition, on spectra with ties,
// clusters, zeros and wide ranges, in an unsorted L (the op sorts it).
TEST(GenericOpsSecondOrder, SymFnSecondDerivativeMatchesThePlainDefinition) {
  namespace gen = matbp::ops::generic;
  using Fn = matbp::math::SpectralFn;
  at::manual_seed(5);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t n = 12;
  const std::vector<double> spectra[] = {
      {1, 1, 1, 1.0000001, 1.03, 1.05, 1.2, 2, 2, 5, 30, 1e3},
      {1e-3, 1e-3, 1e-3, 1e-3, 0.05, 0.06, 0.5, 0.9, 1, 1.5, 4, 4},
      {0, 0, 0, 1e-8, 0.01, 0.02, 0.5, 0.5, 1, 2, 3, 7},
  };
  struct Case { Fn fn; double p; int spectrum; double shift; };
  const Case cases[] = {{Fn::Log, 1, 0, 0}, {Fn::Log, 1, 1, 0}, {Fn::Sqrt, 1, 0, 0},
                        {Fn::Sqrt, 1, 1, 0}, {Fn::Pow, 2.5, 2, 0}, {Fn::Pow, -1.5, 0, 0},
                        {Fn::Pow, 0.3, 1, 0}, {Fn::Exp, 1, 0, -500}, {Fn::Exp, 1, 1, -2},
                        {Fn::Exp, 1, 2, 0}};
  for (const auto& c : cases) {
    auto L = at::tensor(spectra[c.spectrum], f64).add(c.shift);
    L = L.index_select(0, at::randperm(n, at::kLong)).unsqueeze(0).repeat({2, 1});
    const auto V = std::get<0>(at::linalg_qr(at::randn({2, n, n}, f64)));
    const auto G = at::randn({2, n, n}, f64), H = at::randn({2, n, n}, f64);
    const char* name = c.fn == Fn::Log ? "log" : c.fn == Fn::Sqrt ? "sqrt" : c.fn == Fn::Pow ? "pow" : "exp";
    const auto got = gen::sym_fn_second_derivative<ReferenceBackend>(G, H, L, V, name, c.p);
    const auto Lc = L.contiguous();
    const at::Tensor fL = gen::spectral_fn_values<ReferenceBackend>(Lc, c.fn, c.p);
    auto f1 = at::empty({2, n, n}, f64);
    ReferenceBackend::for_each_pair(
        2, n, gen::FillSymmetricWeight<gen::SpectralWeight>{
                  f1.data_ptr<double>(), n,
                  gen::SpectralWeight{Lc.data_ptr<double>(), fL.data_ptr<double>(), n, c.fn, c.p}});
    const auto want = gen::eigenbasis_second_derivative<ReferenceBackend>(
        G, H, V, PlainSecondWeight{Lc.data_ptr<double>(), f1.data_ptr<double>(), n, c.fn, c.p});
    const double scale = want.abs().max().item<double>();
    EXPECT_TRUE(std::isfinite(scale)) << name << " " << c.p;
    EXPECT_LE(max_abs_diff(got, want), 1e-12 * scale) << name << " p=" << c.p << " spectrum " << c.spectrum;
  }
}

// for_each_pair's contract, which the CUDA kernel's index arithmetic mirrors:
// each (b, i <= j) exactly once.
TEST(GenericOpsBackend, PairsAreVisitedOnce) {
  std::set<std::tuple<int64_t, int64_t, int64_t>> seen;
  ReferenceBackend::for_each_pair(2, 4, [&](int64_t b, int64_t i, int64_t j) {
    EXPECT_LE(i, j);
    EXPECT_TRUE(seen.insert({b, i, j}).second);
  });
  EXPECT_EQ(seen.size(), 2u * 10u);
}

}  // namespace
