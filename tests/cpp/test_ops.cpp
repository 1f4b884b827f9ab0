// The matbp operators called the way a libtorch user calls them: the typed
// dispatcher calls of csrc/matbp.h, on CPU tensors. Linking libmatbp.so
// registers them (static initializers).

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "matbp.h"

#include <limits>
#include <string>
#include <tuple>

namespace {

using Tensor = at::Tensor;

Tensor random_symmetric(at::IntArrayRef batch, int64_t n, at::ScalarType dtype) {
  std::vector<int64_t> shape(batch.begin(), batch.end());
  shape.push_back(n);
  shape.push_back(n);
  auto B = at::randn(shape, at::TensorOptions().dtype(dtype));
  return B + B.mT();
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

class MatbpOps : public ::testing::Test {
 protected:
  void SetUp() override { at::manual_seed(0); }
};

TEST_F(MatbpOps, SymEigReconstructsAndMatchesEigh) {
  const auto A = random_symmetric({3, 2}, 6, at::kDouble);
  auto [L, V] = matbp::sym_eig(A);
  ASSERT_EQ(L.sizes(), (std::vector<int64_t>{3, 2, 6}));
  ASSERT_EQ(V.sizes(), (std::vector<int64_t>{3, 2, 6, 6}));
  EXPECT_EQ(L.scalar_type(), at::kDouble);
  const auto VLVt = at::matmul(V * L.unsqueeze(-2), V.mT());
  EXPECT_LT(max_abs_diff(VLVt, A), 1e-12);
  EXPECT_LT(max_abs_diff(at::matmul(V.mT(), V), at::eye(6, A.options()).expand_as(V)), 1e-13);
  EXPECT_LT(max_abs_diff(L, at::linalg_eigvalsh(A)), 1e-12);
  // Ascending, as documented.
  EXPECT_TRUE((L.narrow(-1, 1, 5) >= L.narrow(-1, 0, 5)).all().item<bool>());

  // float32 in, float32 out, accurate to float precision.
  const auto Af = A.to(at::kFloat);
  auto [Lf, Vf] = matbp::sym_eig(Af);
  EXPECT_EQ(Lf.scalar_type(), at::kFloat);
  EXPECT_LT(max_abs_diff(at::matmul(Vf * Lf.unsqueeze(-2), Vf.mT()), Af), 1e-4);
}

TEST_F(MatbpOps, SvdReconstructsTallAndWide) {
  for (auto shape : {std::vector<int64_t>{2, 7, 4}, std::vector<int64_t>{2, 4, 7}}) {
    const auto X = at::randn(shape, at::TensorOptions().dtype(at::kDouble));
    const int64_t m = shape[1], n = shape[2], k = std::min(m, n);
    auto [U, S, V] = matbp::svd(X);
    ASSERT_EQ(U.sizes(), (std::vector<int64_t>{2, m, k}));
    ASSERT_EQ(S.sizes(), (std::vector<int64_t>{2, k}));
    ASSERT_EQ(V.sizes(), (std::vector<int64_t>{2, n, k}));
    EXPECT_LT(max_abs_diff(at::matmul(U * S.unsqueeze(-2), V.mT()), X), 1e-12)
        << "m=" << m << " n=" << n;
    EXPECT_LT(max_abs_diff(S, at::linalg_svdvals(X)), 1e-12);
    EXPECT_TRUE((S.narrow(-1, 0, k - 1) >= S.narrow(-1, 1, k - 1)).all().item<bool>());
    const auto I = at::eye(k, X.options());
    EXPECT_LT(max_abs_diff(at::matmul(U.mT(), U), I.expand({2, k, k})), 1e-13);
    EXPECT_LT(max_abs_diff(at::matmul(V.mT(), V), I.expand({2, k, k})), 1e-13);
  }
}

TEST_F(MatbpOps, SymFnLogMatchesEigenComposition) {
  const int64_t n = 5;
  const auto B = at::randn({4, n, n}, at::TensorOptions().dtype(at::kDouble));
  const auto A = at::matmul(B, B.mT()) + 0.1 * at::eye(n, B.options());  // SPD
  const auto F = matbp::sym_fn(A, "log");
  auto [L, V] = at::linalg_eigh(A);
  const auto want = at::matmul(V * L.log().unsqueeze(-2), V.mT());
  EXPECT_EQ(F.sizes(), A.sizes());
  EXPECT_LT(max_abs_diff(F, want), 1e-11);
  // exp(log(A)) = A through the same op.
  EXPECT_LT(max_abs_diff(matbp::sym_fn(F, "exp"), A), 1e-10);
  // pow with p = 0.5 equals sqrt.
  EXPECT_LT(max_abs_diff(matbp::sym_fn(A, "pow", 0.5), matbp::sym_fn(A, "sqrt")), 1e-12);
}

TEST_F(MatbpOps, NaNInputRaisesErrorNamingTheOp) {
  auto A = random_symmetric({2}, 4, at::kDouble);
  A[1][2][3] = std::numeric_limits<double>::quiet_NaN();
  try {
    matbp::sym_eig(A);
    FAIL() << "matbp::sym_eig accepted a NaN input";
  } catch (const c10::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("matbp.sym_eig"), std::string::npos) << msg;
  }
}

TEST_F(MatbpOps, O2PLogMatchesLogOfRegularisedGramBothPaths) {
  for (auto [m, d] : {std::pair<int64_t, int64_t>{5, 8}, {8, 5}}) {
    const auto X = at::randn({3, m, d}, at::TensorOptions().dtype(at::kDouble));
    const auto C = matbp::o2p_log(X, 1e-2);
    auto [L, V] = at::linalg_eigh(at::matmul(X.mT(), X) + 1e-2 * at::eye(d, at::kDouble));
    const auto ref = at::matmul(V * L.log().unsqueeze(-2), V.mT());
    EXPECT_LT(max_abs_diff(C, ref), 1e-11) << "m=" << m << " d=" << d;
  }
}

TEST_F(MatbpOps, ProjectorOfLowRankMatrixMatchesQr) {
  const auto F = at::randn({2, 7, 3}, at::TensorOptions().dtype(at::kDouble));
  auto [Q, R] = at::linalg_qr(F, "reduced");
  EXPECT_LT(max_abs_diff(matbp::projector(at::matmul(F, F.mT())), at::matmul(Q, Q.mT())), 1e-12);
}

#ifdef MATBP_TEST_EXPECT_CUDA
// A libmatbp built with MATBP_WITH_CUDA registers a CUDA kernel for every
// tensor operator (or it is composite); no GPU is needed to check that.
TEST(MatbpRegistration, EveryTensorOperatorHasACudaKernel) {
  int checked = 0;
  for (const auto& name : c10::Dispatcher::singleton().getAllOpNames()) {
    if (name.name.rfind("matbp::", 0) != 0 || name.name == "matbp::set_sync_checks") continue;
    const auto handle = c10::Dispatcher::singleton().findSchemaOrThrow(name.name.c_str(), "");
    EXPECT_TRUE(handle.hasKernelForDispatchKey(c10::DispatchKey::CUDA) ||
                handle.hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd))
        << name.name;
    ++checked;
  }
  EXPECT_GE(checked, 16);
}
#endif

}  // namespace

// Half and bfloat16 arguments are computed as their float32 values are and
// returned in their own dtype, the saved decomposition in float64
// (csrc/ops/low_precision.h); the backward op takes and returns them too.
TEST(MatbpLowPrecision, ComputedAsFloat32AndReturnedInTheirDtype) {
  at::manual_seed(1);
  for (auto dtype : {at::kHalf, at::kBFloat16}) {
    const auto X = at::randn({2, 9, 4}, at::TensorOptions().dtype(at::kDouble)).to(dtype);
    const auto X32 = X.to(at::kFloat);
    auto [C, S, U, Y] = matbp::o2p_log_with_eig(X, 1e-3);
    EXPECT_EQ(C.scalar_type(), dtype);
    EXPECT_EQ(S.scalar_type(), at::kDouble);
    EXPECT_TRUE(at::equal(C, matbp::o2p_log(X32, 1e-3).to(dtype)));

    const auto gC = at::randn({2, 4, 4}, at::TensorOptions().dtype(at::kDouble)).to(dtype);
    const auto gX = matbp::o2p_log_backward(gC, X, S, U, Y, 1e-3);
    EXPECT_EQ(gX.scalar_type(), dtype);
    auto [C32, S32, U32, Y32] = matbp::o2p_log_with_eig(X32, 1e-3);
    const auto gX32 = matbp::o2p_log_backward(gC.to(at::kFloat), X32, S32, U32, Y32, 1e-3);
    EXPECT_TRUE(at::equal(gX, gX32.to(dtype)));

    auto [L, V] = matbp::sym_eig(at::matmul(X.mT(), X));
    EXPECT_EQ(L.scalar_type(), dtype);
    EXPECT_EQ(V.scalar_type(), dtype);
  }
}

TEST(MatbpLowPrecision, OtherDtypesAreRejectedNamingTheArgument) {
  const auto A = at::eye(3, at::TensorOptions().dtype(at::kLong));
  try {
    matbp::sym_eig(A);
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace())
                  .find("matbp.sym_eig: argument 'A' must be a floating-point tensor"),
              std::string::npos)
        << e.what_without_backtrace();
  }
}

// The forward-mode operator is the adjoint of the backward, on both paths.
TEST(MatbpForwardMode, O2pLogJvpIsTheAdjointOfTheBackward) {
  at::manual_seed(2);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  for (auto shape : {std::vector<int64_t>{2, 9, 4}, std::vector<int64_t>{2, 3, 7}}) {
    const auto X = at::randn(shape, f64);
    const int64_t d = shape[2];
    auto [C, S, U, Y] = matbp::o2p_log_with_eig(X, 1e-3);
    const auto dX = at::randn(shape, f64);
    const auto gC = at::randn({2, d, d}, f64);
    const auto dC = matbp::o2p_log_jvp(dX, X, S, U, Y, 1e-3);
    ASSERT_EQ(dC.sizes(), C.sizes());
    EXPECT_TRUE(at::equal(dC, dC.mT()));
    const double lhs = (gC * dC).sum().item<double>();
    const double rhs = (matbp::o2p_log_backward(gC, X, S, U, Y, 1e-3) * dX).sum().item<double>();
    EXPECT_NEAR(lhs, rhs, 1e-12 * std::max(1.0, std::abs(rhs)));
  }
}

// The second-derivative operators (double backward): symmetric in G and H,
// and the derivative of the backward, <H, D²f[G, E]> = d/dt <H, Df(A + tE)[G]>.
TEST(MatbpSecondOrder, SymFnSecondDerivativeIsTheDerivativeOfTheBackward) {
  at::manual_seed(3);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const auto sym = [](const at::Tensor& M) { return (M + M.mT()) / 2; };
  const auto B = at::randn({2, 5, 5}, f64);
  const auto A = at::matmul(B, B.mT()) + at::eye(5, f64);
  const auto G = sym(at::randn({2, 5, 5}, f64)), H = sym(at::randn({2, 5, 5}, f64));
  const auto E = sym(at::randn({2, 5, 5}, f64));
  for (const char* fn : {"log", "sqrt", "exp"}) {
    auto [F, L, V] = matbp::sym_fn_with_eig(A, fn);
    const auto D = matbp::sym_fn_second_derivative(G, H, L, V, fn);
    EXPECT_TRUE(at::allclose(D, matbp::sym_fn_second_derivative(H, G, L, V, fn), 1e-12, 1e-12)) << fn;
    const double h = 1e-5;
    const auto backward_at = [&](double t) {
      auto [Ft, Lt, Vt] = matbp::sym_fn_with_eig(A + t * E, fn);
      return matbp::sym_fn_backward(G, Lt, Vt, fn);
    };
    const double fd = ((backward_at(h) - backward_at(-h)) * H).sum().item<double>() / (2 * h);
    const double exact = (matbp::sym_fn_second_derivative(G, E, L, V, fn) * H).sum().item<double>();
    EXPECT_NEAR(exact, fd, 1e-7 * std::max(1.0, std::abs(fd))) << fn;
  }
  // The projector along a rank-preserving direction of A = C C^T.
  const auto C = at::randn({2, 5, 2}, f64), dC = at::randn({2, 5, 2}, f64);
  const auto projector_backward_at = [&](double t) {
    const auto Ct = C + t * dC;
    auto [P, L, V] = matbp::projector_with_eig(at::matmul(Ct, Ct.mT()), std::nullopt);
    return matbp::projector_backward(G, L, V, std::nullopt);
  };
  auto [P, L, V] = matbp::projector_with_eig(at::matmul(C, C.mT()), std::nullopt);
  const auto dA = at::matmul(dC, C.mT()) + at::matmul(C, dC.mT());
  const double h = 1e-6;
  const double fd = ((projector_backward_at(h) - projector_backward_at(-h)) * H).sum().item<double>() / (2 * h);
  const double exact =
      (matbp::projector_second_derivative(G, dA, L, V, std::nullopt) * H).sum().item<double>();
  EXPECT_NEAR(exact, fd, 1e-6 * std::max(1.0, std::abs(fd)));
}
