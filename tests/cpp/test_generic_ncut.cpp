// The device-generic normalized-cuts core (ops/generic/ncut.h) on the CPU:
// its per-pixel functors run through CpuBackend::for_each (as the CUDA
// kernels run them) against plain loops, and the CPU operator with its hooks
// (label remap, segment statistics) against direct computations and the
// dense m x m formulas.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "matbp.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/generic/ncut.h"

namespace {

using at::Tensor;
using matbp::ops::cpu::CpuBackend;
namespace generic = matbp::ops::generic;

const auto kF64 = at::TensorOptions().dtype(at::kDouble);
const auto kI64 = at::TensorOptions().dtype(at::kLong);

double max_abs_diff(const Tensor& a, const Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

template <typename F>
std::string error_of(const F& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

class GenericNcut : public ::testing::Test {
 protected:
  void SetUp() override { at::manual_seed(0); }
};

// ------------------------------------------------------------ the functors

TEST_F(GenericNcut, PixelStatsRowsMatchPlainLoop) {
  const int64_t pixels = 10000, k = 5, d = 3, cols = k + d + 1;  // several parallel chunks
  const auto q = at::randn({pixels, k}, kF64), y = at::randn({pixels, d}, kF64);
  const auto w = at::rand({pixels}, kF64);
  const generic::NcutPixelStats stats{q.data_ptr<double>(), y.data_ptr<double>(),
                                      w.data_ptr<double>(), k, d};
  ASSERT_EQ(stats.cols(), cols);
  auto rows = at::full({pixels, cols}, 7.0, kF64);  // overwritten, not accumulated
  CpuBackend::for_each(pixels, generic::NcutPixelStatsRows{stats, rows.data_ptr<double>()});

  const auto expected = at::cat({w.unsqueeze(1) * q, w.unsqueeze(1) * y, (w * w).unsqueeze(1)}, 1);
  EXPECT_EQ(max_abs_diff(rows, expected), 0.0);

  // add_to accumulates the same row.
  std::vector<double> acc(cols, 1.0);
  stats.add_to(acc.data(), 17);
  stats.add_to(acc.data(), 17);
  for (int64_t j = 0; j < cols; ++j) {
    EXPECT_DOUBLE_EQ(acc[j], 1.0 + 2.0 * expected[17][j].item<double>()) << "column " << j;
  }
}

TEST_F(GenericNcut, BackwardPixelsMatchPlainLoop) {
  const int64_t pixels = 9000, count = 11, k = 4, d = 6;
  const auto coef_seg = at::randn({count, d}, kF64), S = at::randn({count, k}, kF64);
  const auto coef_w = at::randn({count}, kF64), T = at::rand({count}, kF64);
  const auto q = at::randn({pixels, k}, kF64), w = at::rand({pixels}, kF64);
  const auto segment = at::randint(0, count, {pixels}, kI64);
  const auto gy0 = at::randn({pixels, d}, kF64);
  auto gy = gy0.clone();
  auto gw = at::full({pixels}, 7.0, kF64);
  CpuBackend::for_each(
      pixels, generic::NcutBackwardPixels{coef_seg.data_ptr<double>(), S.data_ptr<double>(),
                                          coef_w.data_ptr<double>(), T.data_ptr<double>(),
                                          q.data_ptr<double>(), w.data_ptr<double>(),
                                          segment.data_ptr<int64_t>(), gy.data_ptr<double>(),
                                          gw.data_ptr<double>(), k, d});

  const auto* cs = coef_seg.data_ptr<double>();
  const auto* sp = S.data_ptr<double>();
  const auto* qp = q.data_ptr<double>();
  const auto* wp = w.data_ptr<double>();
  const auto* seg = segment.data_ptr<int64_t>();
  const auto* gy0p = gy0.data_ptr<double>();
  const auto* gyp = gy.data_ptr<double>();
  const auto* gwp = gw.data_ptr<double>();
  for (int64_t p = 0; p < pixels; ++p) {
    const int64_t s = seg[p];
    for (int64_t j = 0; j < d; ++j) {
      ASSERT_EQ(gyp[p * d + j], gy0p[p * d + j] + wp[p] * cs[s * d + j]) << "pixel " << p;
    }
    double dot = 0;
    for (int64_t j = 0; j < k; ++j) dot += qp[p * k + j] * sp[s * k + j];
    ASSERT_EQ(gwp[p], coef_w[s].item<double>() * (dot - T[s].item<double>() * wp[p]))
        << "pixel " << p;
  }
}

TEST_F(GenericNcut, ImageSumAndLambdaBatch) {
  generic::NcutSegments seg;
  seg.image = at::tensor(std::vector<int64_t>{0, 0, 1, 2, 2, 2}, kI64);
  seg.count = 6;
  const auto values = at::arange(12, kF64).reshape({6, 2});
  const auto sums = generic::ncut_image_sum(values, seg, 4);
  const auto expected =
      at::tensor(std::vector<double>{0 + 2, 1 + 3, 4, 5, 6 + 8 + 10, 7 + 9 + 11, 0, 0}, kF64)
          .reshape({4, 2});
  EXPECT_EQ(max_abs_diff(sums, expected), 0.0);
  // No segments at all (an empty batch) is fine too.
  generic::NcutSegments none{at::empty({0}, kI64), at::empty({0}, kI64), 0};
  EXPECT_EQ(generic::ncut_image_sum(at::empty({0}, kF64), none, 0).sizes(),
            (std::vector<int64_t>{0}));

  const auto shared = at::randn({3, 3}, kF64);
  EXPECT_EQ(generic::ncut_lambda_batch(shared, 4, 3).sizes(), (std::vector<int64_t>{4, 3, 3}));
  const auto per_image = at::randn({2, 2, 3, 3}, kF64);
  const auto flat = generic::ncut_lambda_batch(per_image, 4, 3);
  EXPECT_EQ(max_abs_diff(flat[3], per_image[1][1]), 0.0);
}

// ------------------------------------------------------------ the CPU operator

// The segments expected of labels (B, m): consecutive per image, ids ascending.
std::tuple<Tensor, Tensor> expected_segments(const Tensor& labels) {
  const auto flat = labels.reshape({-1, labels.size(-1)});
  std::vector<int64_t> index, image;
  int64_t next = 0;
  for (int64_t b = 0; b < flat.size(0); ++b) {
    const auto ids = std::get<0>(at::_unique2(flat[b], /*sorted=*/true));
    for (int64_t p = 0; p < flat.size(1); ++p) {
      const int64_t id = flat[b][p].item<int64_t>();
      index.push_back(next + (ids < id).sum().item<int64_t>());
    }
    for (int64_t s = 0; s < ids.numel(); ++s) image.push_back(b);
    next += ids.numel();
  }
  return {at::tensor(index, kI64).reshape(labels.sizes()), at::tensor(image, kI64)};
}

TEST_F(GenericNcut, SegmentRemapAndStatsOfTheCpuHooks) {
  const int64_t m = 60, d = 4;
  const auto Y = at::rand({3, m, d}, kF64);
  const auto w = at::rand({3, m}, kF64) + 0.1;
  const auto ids = at::tensor(std::vector<int64_t>{9, 2, 5, 40}, kI64);
  const auto labels = ids.index_select(0, at::randint(0, 4, {3 * m}, kI64)).reshape({3, m});
  auto [eindex, eimage] = expected_segments(labels);

  // Dense ids (lookup tables) and huge sparse ids (sort-based unique) alike.
  for (const int64_t scale : {int64_t(1), int64_t(1) << 30}) {
    auto out = matbp::ncut_projector_distance_with_basis(Y, w, labels * scale, std::nullopt, std::nullopt);
    const auto& Q = std::get<2>(out);
    const auto& index = std::get<5>(out);
    const auto& image = std::get<6>(out);
    const auto& stats = std::get<7>(out);
    EXPECT_TRUE(at::equal(index, eindex)) << "scale " << scale;
    EXPECT_TRUE(at::equal(image, eimage)) << "scale " << scale;

    // The statistics: per-segment sums of [w Q | w Y | w^2].
    const int64_t k = Q.size(-1), count = eimage.numel();
    ASSERT_EQ(stats.sizes(), (std::vector<int64_t>{count, k + d + 1}));
    const auto rows = at::cat({(w.unsqueeze(-1) * Q).reshape({-1, k}),
                               (w.unsqueeze(-1) * Y).reshape({-1, d}), (w * w).reshape({-1, 1})},
                              1);
    const auto expected = at::zeros({count, k + d + 1}, kF64).index_add_(0, eindex.reshape(-1), rows);
    EXPECT_LT(max_abs_diff(stats, expected), 1e-12) << "scale " << scale;
  }
}

// The tall QR by row blocks in its ATen form (what CUDA runs) and the CPU
// operator's LAPACK blocks: a zero row block and a duplicated column make R
// singular; the last block takes the remainder.
TEST_F(GenericNcut, TallSkinnyQrOfRowBlocks) {
  const int64_t m = 3 * generic::kNcutQrRows + 777, d = 6;
  ASSERT_TRUE(generic::ncut_qr_blocked(m, d));
  auto Y = at::rand({2, m, 5}, kF64) + 0.05;
  Y = at::cat({Y, Y.narrow(2, 0, 1)}, 2);
  Y.select(0, 1).narrow(0, generic::kNcutQrRows, generic::kNcutQrRows).zero_();

  const auto qr = generic::ncut_tall_skinny_qr_aten(Y);
  ASSERT_TRUE(qr.top.defined());
  const auto I = at::eye(d, kF64).expand({2, d, d});
  const auto Qy = generic::ncut_basis_aten(qr, I);
  EXPECT_LT(max_abs_diff(at::matmul(Qy, qr.R), Y), 1e-13);
  EXPECT_LT(max_abs_diff(at::matmul(Qy.mT(), Qy), I), 1e-13);
  const auto C = at::randn({2, d, 3}, kF64);
  EXPECT_LT(max_abs_diff(generic::ncut_basis_aten(qr, C), at::matmul(Qy, C)), 1e-13);

  // The CPU operator's basis Q = Q_y Z_r (one null column, rank 5) spans the
  // range of Y: orthonormal range columns, and Y = Q Q^T Y.
  const auto w = at::ones({2, m}, kF64);
  const auto labels = at::randint(0, 4, {2, m}, kI64);
  auto out = matbp::ncut_projector_distance_with_basis(Y, w, labels, std::nullopt, std::nullopt);
  const auto& rank = std::get<1>(out);
  const auto& Q = std::get<2>(out);
  EXPECT_TRUE(at::equal(rank, at::full({2}, 5, kI64)));
  const auto QtQ = at::matmul(Q.mT(), Q);
  const auto mask = (QtQ.diagonal(0, -2, -1) > 0.5).to(at::kDouble);
  EXPECT_LT(max_abs_diff(QtQ, at::diag_embed(mask)), 1e-13);
  EXPECT_LT(max_abs_diff(at::matmul(Q, at::matmul(Q.mT(), Y)), Y), 1e-12);
  // The same subspace as the ATen form's.
  EXPECT_LT(max_abs_diff(at::matmul(Qy, at::matmul(Qy.mT(), Q)), Q), 1e-13);
}

// J = 1/2 ||Pi_W - Pi_Omega||^2 and its gradients from m x m matrices.
struct Dense {
  double J;
  Tensor gY, gw;
};

Tensor range_projector(const Tensor& A, double rtol, Tensor* pinv) {
  auto [L, V] = at::linalg_eigh(0.5 * (A + A.mT()));
  const auto mask = L.abs() > rtol * L.abs().max();
  const auto Vm = V * mask.to(at::kDouble);
  if (pinv != nullptr) {
    *pinv = at::matmul(Vm * at::where(mask, L.reciprocal(), at::zeros_like(L)), V.mT());
  }
  return at::matmul(Vm, V.mT());
}

Tensor weighted_segment_projector(const Tensor& labels, const Tensor& w) {
  const auto ids = std::get<0>(at::_unique2(labels, /*sorted=*/true));
  const auto E = (labels.unsqueeze(1) == ids.unsqueeze(0)).to(at::kDouble) * w.unsqueeze(1);
  return at::matmul(E / E.square().sum(0), E.mT());
}

double dense_j(const Tensor& Y, const Tensor& labels, const Tensor& w) {
  const double rtol = std::max(Y.size(0), Y.size(1)) * 2.220446049250313e-16;
  const auto P = range_projector(at::matmul(Y, Y.mT()), rtol, nullptr);
  return 0.5 * (P - weighted_segment_projector(labels, w)).square().sum().item<double>();
}

TEST_F(GenericNcut, ValueAndGradientsMatchDenseFormulas) {
  const int64_t m = 40, d = 5;
  const auto Y = at::rand({2, m, d}, kF64) + 0.05;
  const auto w = at::rand({2, m}, kF64) + 0.5;
  const auto labels = at::randint(0, 4, {2, m}, kI64) * 3;
  auto out = matbp::ncut_projector_distance_with_basis(Y, w, labels, std::nullopt, std::nullopt);
  const auto gJ = at::tensor(std::vector<double>{0.7, -1.3}, kF64);
  auto [gY, gw, gLambda] = matbp::ncut_projector_distance_backward(gJ, w, std::nullopt, out);
  EXPECT_TRUE(at::equal(std::get<1>(out), at::full({2}, d, kI64)));  // rank
  EXPECT_EQ(gLambda.sizes(), (std::vector<int64_t>{d, d}));
  for (int64_t b = 0; b < 2; ++b) {
    const auto Yb = Y[b], wb = w[b], lb = labels[b];
    const double J = dense_j(Yb, lb, wb);
    EXPECT_NEAR(std::get<0>(out)[b].item<double>(), J, 1e-10 * J);
    // gW = -gJ [(I - Pi) Pi_Omega W^+ + W^+ Pi_Omega (I - Pi)], gY = 2 gW Y (eqs. 19, 23).
    Tensor Wp;
    const double rtol = m * 2.220446049250313e-16;
    const auto P = range_projector(at::matmul(Yb, Yb.mT()), rtol, &Wp);
    const auto Po = weighted_segment_projector(lb, wb);
    const auto I = at::eye(m, kF64);
    const double g = gJ[b].item<double>();
    const auto gW = -g * (at::matmul(at::matmul(I - P, Po), Wp) + at::matmul(at::matmul(Wp, Po), I - P));
    const auto gY_ref = 2.0 * at::matmul(gW, Yb);
    EXPECT_LT(max_abs_diff(gY[b], gY_ref), 1e-9 * gY_ref.abs().max().item<double>());
    // gw by central differences at a few pixels.
    for (const int64_t p : {int64_t(0), int64_t(17), m - 1}) {
      const double h = 1e-6;
      auto wp = wb.clone(), wm = wb.clone();
      wp[p] += h;
      wm[p] -= h;
      const double fd = g * (dense_j(Yb, lb, wp) - dense_j(Yb, lb, wm)) / (2 * h);
      EXPECT_NEAR(gw[b][p].item<double>(), fd, 1e-6 * (1 + std::abs(fd))) << "pixel " << p;
    }
  }
}

TEST_F(GenericNcut, BatchShapesAndPerImageLambda) {
  const int64_t m = 30, d = 4;
  // Empty batch.
  {
    auto out = matbp::ncut_projector_distance_with_basis(at::rand({0, m, d}, kF64), at::ones({0, m}, kF64),
                                    at::zeros({0, m}, kI64), std::nullopt, std::nullopt);
    EXPECT_EQ(std::get<0>(out).sizes(), (std::vector<int64_t>{0}));
    EXPECT_EQ(std::get<6>(out).numel(), 0);
  }
  // Two batch dimensions with a per-image Lambda: the same as one image at a time.
  const auto Y = at::rand({2, 3, m, d}, kF64);
  const auto w = at::ones({2, 3, m}, kF64);
  const auto labels = at::randint(0, 3, {2, 3, m}, kI64);
  const auto A = at::randn({2, 3, d, d}, kF64);
  const auto Lambda = at::matmul(A, A.mT()) + 0.1 * at::eye(d, kF64);
  auto out = matbp::ncut_projector_distance_with_basis(Y, w, labels, Lambda, std::nullopt);
  ASSERT_EQ(std::get<0>(out).sizes(), (std::vector<int64_t>{2, 3}));
  auto [gY, gw, gLambda] = matbp::ncut_projector_distance_backward(at::ones({2, 3}, kF64), w, Lambda, out);
  EXPECT_EQ(gY.sizes(), Y.sizes());
  EXPECT_EQ(gLambda.sizes(), Lambda.sizes());
  for (const auto& [i, j] : {std::pair<int64_t, int64_t>{0, 0}, {1, 2}}) {
    auto one = matbp::ncut_projector_distance_with_basis(Y[i][j], w[i][j], labels[i][j], Lambda[i][j], std::nullopt);
    EXPECT_NEAR(std::get<0>(out)[i][j].item<double>(), std::get<0>(one).item<double>(), 1e-12);
  }
}

TEST_F(GenericNcut, BadInputsRaiseClearErrors) {
  const int64_t m = 20, d = 3;
  const auto Y = at::rand({2, m, d}, kF64);
  const auto w = at::ones({2, m}, kF64);
  auto call = [&](const Tensor& labels) {
    return error_of([&] { matbp::ncut_projector_distance_with_basis(Y, w, labels, std::nullopt, std::nullopt); });
  };
  auto labels = at::zeros({2, m}, kI64);
  labels[1][3] = -2;
  EXPECT_NE(call(labels).find("matbp.ncut_projector_distance: argument 'labels' out of range: "
                              "segment ids must be >= 0, got -2"),
            std::string::npos);
  labels[1][3] = int64_t(1) << 40;
  EXPECT_NE(call(labels).find("(at most 2^40 - 1 supported)"), std::string::npos);

  auto Yn = Y.clone();
  Yn[0][1][2] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(error_of([&] {
              matbp::ncut_projector_distance_with_basis(Yn, w, at::zeros({2, m}, kI64), std::nullopt, std::nullopt);
            }).find("argument 'Y' contains NaN or Inf"),
            std::string::npos);
  const auto bad_lambda = at::full({d, d}, std::numeric_limits<double>::infinity(), kF64);
  EXPECT_NE(error_of([&] {
              matbp::ncut_projector_distance_with_basis(Y, w, at::zeros({2, m}, kI64), bad_lambda, std::nullopt);
            }).find("argument 'Lambda' contains NaN or Inf"),
            std::string::npos);

  // The backward refuses segment numbers that would index out of bounds.
  auto out = matbp::ncut_projector_distance_with_basis(Y, w, at::randint(0, 3, {2, m}, kI64), std::nullopt, std::nullopt);
  auto index = std::get<5>(out).clone();
  index[0][0] = std::get<7>(out).size(0);
  const auto message = error_of([&] {
    auto corrupt = out;
    std::get<5>(corrupt) = index;
    matbp::ncut_projector_distance_backward(at::ones({2}, kF64), w, std::nullopt, corrupt);
  });
  EXPECT_NE(message.find("matbp.ncut_projector_distance_backward: 'segment_index' must be in [0, "),
            std::string::npos)
      << message;
}

}  // namespace
