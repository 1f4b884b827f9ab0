// CPU kernels of matbp::ncut_projector_distance_with_basis and its backward:
// the core both normalized-cuts objectives share (design notes §4),
//
//   J = 1/2 || Pi_M - Pi_Omega ||_F^2,   M = Y Lambda Y^T  (m x m, never formed),
//   Pi_Omega = sum_k v_k v_k^T / |v_k|^2,  v_k = w o e_k  (segment k's indicator
//   e_k weighted by w: w = 1 gives J2's Psi, w = D^1/2 gives J1's Omega).
//
// Low rank: Y = Q_y R (thin QR), R Lambda R^T = Z diag(mu) Z^T, Q = Q_y Z (the
// columns with |mu| > rtol max|mu|) is an orthonormal basis of range(M), and
//   J = (rank M + #segments) / 2 - sum_k |S_k|^2 / n_k,
//   S_k = sum_{p in k} w_p Q_p (segment sums of the basis), n_k = sum_{p in k} w_p^2.
// Cost O(m d^2 + d^3 + m k). The code is ATen only (device-generic).
//
// Backward, with the projector derivative (eq. 19) and T = tr(Pi_M Pi_Omega):
//   gM = -gJ [(I - Pi) Pi_Omega M^+ + M^+ Pi_Omega (I - Pi)],
//   gY = 2 gM Y Lambda,  gLambda = Y^T gM Y,
//   gw_p = -2 gJ [Q_p . S_k - T_k w_p] / n_k,  T_k = |S_k|^2 / n_k,
// all in factored form: with P0 = Q^T Y = mask Z^T R and M^+ Y = Q diag(mu^+) P0,
//   gM Y = -gJ [(Omega_Q - Q C1) diag(mu^+) P0 + Q diag(mu^+) (C2 - C1 P0)],
//   Omega_Q = Pi_Omega Q (rows w_p S_k / n_k), C1 = sum_k S_k S_k^T / n_k,
//   C2 = sum_k S_k SY_k^T / n_k, SY_k = sum_{p in k} w_p Y_p.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <vector>
#include <optional>

#include "../../math/projector.h"
#include "../checks.h"
#include "batch_loops.h"

namespace matbp::ops::cpu {
namespace {

constexpr const char* kOp = "matbp.ncut_projector_distance";

struct Segments {
  at::Tensor index;     // (B*m,) segment of each pixel, in [0, count)
  at::Tensor image;     // (count,) image of each segment
  int64_t count = 0;
};

void check_ncut_arguments(const at::Tensor& Y, const at::Tensor& weights, const at::Tensor& labels,
                          const std::optional<at::Tensor>& Lambda, const char* op) {
  check_float_matrix(Y, op, "Y", /*square=*/false);
  const auto batch_m = Y.sizes().slice(0, Y.dim() - 1);
  TORCH_CHECK(!at::isFloatingType(labels.scalar_type()) && !at::isComplexType(labels.scalar_type()) &&
                  labels.scalar_type() != at::kBool,
              op, ": argument 'labels' must be an integer tensor of segment ids, got ",
              labels.scalar_type());
  TORCH_CHECK(labels.sizes() == batch_m, op, ": argument 'labels' must have shape (*, m) = ",
              batch_m, " matching the features (*, m, d) = ", Y.sizes(), ", got ", labels.sizes());
  TORCH_CHECK(at::isFloatingType(weights.scalar_type()), op,
              ": argument 'weights' must be a floating tensor, got ", weights.scalar_type());
  TORCH_CHECK(weights.sizes() == batch_m, op, ": argument 'weights' must have shape (*, m) = ",
              batch_m, ", got ", weights.sizes());
  TORCH_CHECK(Y.size(-2) >= 1, op, ": need at least one pixel (m >= 1), got m = 0");
  if (Lambda.has_value() && Lambda->defined()) {
    const int64_t d = Y.size(-1);
    const auto& L = *Lambda;
    check_float_matrix(L, op, "Lambda", /*square=*/true);
    const bool shared = L.dim() == 2;
    TORCH_CHECK(L.size(-1) == d && (shared || L.sizes().slice(0, L.dim() - 2) ==
                                                  Y.sizes().slice(0, Y.dim() - 2)),
                op, ": argument 'Lambda' must have shape (d, d) or (*, d, d) with d = ", d,
                " and the batch of the features ", Y.sizes(), ", got ", L.sizes());
  }
}

// Maps each image's label ids to segment numbers: consecutive per image,
// images in order, ids ascending within an image. A lookup table over
// [0, max id] per image; ids need not be contiguous.
Segments remap_segments(const at::Tensor& labels) {
  const auto flat = labels.reshape({-1, labels.size(-1)}).to(at::kLong).contiguous();
  const int64_t batch = flat.size(0), m = flat.size(1);
  const int64_t* lab = flat.data_ptr<int64_t>();
  const int64_t lowest = flat.numel() == 0 ? 0 : flat.min().item<int64_t>();
  TORCH_CHECK(lowest >= 0, kOp, ": argument 'labels' out of range: segment ids must be >= 0, got ",
              lowest);
  const int64_t span = flat.numel() == 0 ? 1 : flat.max().item<int64_t>() + 1;
  // A table per image bounded by the pixels it covers; sparse huge ids go
  // through sort-based unique instead.
  TORCH_CHECK(span <= (int64_t(1) << 40), kOp, ": argument 'labels' out of range: ids up to ",
              span - 1, " (at most 2^40 - 1 supported)");
  Segments seg;
  seg.index = at::empty({batch * m}, flat.options());
  int64_t* out = seg.index.data_ptr<int64_t>();
  std::vector<int64_t> first_segment(batch + 1, 0);
  if (span <= 4 * m + 1024) {
    std::vector<std::vector<int64_t>> tables(batch);
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        auto& table = tables[b];
        table.assign(span, -1);
        for (int64_t p = 0; p < m; ++p) table[lab[b * m + p]] = 0;
        int64_t next = 0;
        for (auto& t : table) t = t < 0 ? -1 : next++;
        first_segment[b + 1] = next;
      }
    });
    for (int64_t b = 0; b < batch; ++b) first_segment[b + 1] += first_segment[b];
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        for (int64_t p = 0; p < m; ++p) out[b * m + p] = first_segment[b] + tables[b][lab[b * m + p]];
    });
  } else {
    for (int64_t b = 0; b < batch; ++b) {
      auto [unique, inverse, counts] =
          at::_unique2(flat[b], /*sorted=*/true, /*return_inverse=*/true, /*return_counts=*/false);
      seg.index.narrow(0, b * m, m).copy_(inverse + first_segment[b]);
      first_segment[b + 1] = first_segment[b] + unique.numel();
    }
  }
  seg.count = first_segment[batch];
  seg.image = at::empty({seg.count}, flat.options());
  int64_t* img = seg.image.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = first_segment[b]; s < first_segment[b + 1]; ++s) img[s] = b;
  return seg;
}

// Per-image sums of per-segment values (count, ...) -> (B, ...).
at::Tensor image_sum(const at::Tensor& per_segment, const Segments& seg, int64_t batch) {
  auto shape = per_segment.sizes().vec();
  shape[0] = batch;
  // index_add_ over rows of a 2-D tensor (its fast path), then the shape back.
  const auto rows = per_segment.reshape({per_segment.size(0), -1});
  return at::zeros({batch, rows.size(1)}, rows.options()).index_add_(0, seg.image, rows).view(shape);
}

// Thin QR of tall (B, m, d) matrices by TSQR: Householder QR of row blocks
// that fit in cache, then of their stacked R factors. One QR of a 154 401 x 20
// matrix is memory-bound in LAPACK's unblocked panel code (a pass per
// column); the blocked form is ~3x faster and as accurate.
std::tuple<at::Tensor, at::Tensor> tall_skinny_qr(const at::Tensor& Y) {
  constexpr int64_t kRows = 2048;
  const int64_t batch = Y.size(0), m = Y.size(1), d = Y.size(2);
  if (m <= 2 * kRows || m < 4 * d) return at::linalg_qr(Y, "reduced");
  const int64_t blocks = (m + kRows - 1) / kRows;
  auto padded = Y;
  if (blocks * kRows != m) {
    padded = at::cat({Y, at::zeros({batch, blocks * kRows - m, d}, Y.options())}, 1);
  }
  auto [Qb, Rb] = at::linalg_qr(padded.reshape({batch * blocks, kRows, d}), "reduced");
  auto [Qt, R] = at::linalg_qr(Rb.reshape({batch, blocks * d, d}), "reduced");
  auto Q = at::matmul(Qb, Qt.reshape({batch * blocks, d, d})).reshape({batch, blocks * kRows, d});
  return {Q.narrow(1, 0, m), R};
}

// One pass over the pixels: per-segment [sum w Q | sum w Y | sum w^2],
// (count, k + d + 1), with per-thread accumulators.
at::Tensor segment_stats(const at::Tensor& w, const at::Tensor& Q, const at::Tensor& Y,
                         const Segments& seg) {
  const int64_t pixels = w.numel(), k = Q.size(-1), d = Y.size(-1), cols = k + d + 1;
  const auto Qc = Q.contiguous(), Yc = Y.contiguous(), wc = w.contiguous();
  const double* q = Qc.data_ptr<double>();
  const double* y = Yc.data_ptr<double>();
  const double* wp = wc.data_ptr<double>();
  const int64_t* idx = seg.index.data_ptr<int64_t>();
  const int threads = at::get_num_threads();
  std::vector<double> partial(size_t(threads) * seg.count * cols, 0.0);
  at::parallel_for(0, pixels, 4096, [&](int64_t begin, int64_t end) {
    double* acc = partial.data() + size_t(at::get_thread_num()) * seg.count * cols;
    for (int64_t p = begin; p < end; ++p) {
      double* row = acc + idx[p] * cols;
      const double wv = wp[p];
      for (int64_t j = 0; j < k; ++j) row[j] += wv * q[p * k + j];
      for (int64_t j = 0; j < d; ++j) row[k + j] += wv * y[p * d + j];
      row[k + d] += wv * wv;
    }
  });
  auto stats = at::zeros({seg.count, cols}, Y.options());
  double* out = stats.data_ptr<double>();
  for (int t = 0; t < threads; ++t) {
    const double* acc = partial.data() + size_t(t) * seg.count * cols;
    for (int64_t e = 0; e < seg.count * cols; ++e) out[e] += acc[e];
  }
  return stats;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
ncut_projector_distance_with_basis_cpu(const at::Tensor& Y, const at::Tensor& weights,
                                       const at::Tensor& labels,
                                       const std::optional<at::Tensor>& Lambda,
                                       std::optional<double> rtol) {
  check_ncut_arguments(Y, weights, labels, Lambda, kOp);
  TORCH_CHECK(all_finite(Y), kOp, ": the features contain NaN or Inf");
  TORCH_CHECK(all_finite(weights) && (weights.numel() == 0 || weights.min().item<double>() >= 0),
              kOp, ": argument 'weights' must be finite and >= 0");
  const int64_t m = Y.size(-2), d = Y.size(-1);
  const auto Y64 = Y.to(at::kDouble).reshape({-1, m, d});
  const int64_t batch = Y64.size(0);
  const auto w = weights.to(at::kDouble).reshape({batch, m});
  const auto seg = remap_segments(labels);

  auto [Qy, R] = tall_skinny_qr(Y64);  // (B, m, k), (B, k, d)
  auto B = Lambda.has_value() && Lambda->defined()
               ? at::matmul(at::matmul(R, Lambda->to(at::kDouble).expand({batch, d, d})), R.mT())
               : at::matmul(R, R.mT());
  auto [mu, Z] = at::linalg_eigh(0.5 * (B + B.mT()));  // (B, k), (B, k, k)
  const int64_t k = mu.size(-1);
  const double r = rtol.has_value() ? *rtol : math::default_rank_rtol<double>(std::max(m, d));
  TORCH_CHECK(std::isfinite(r) && r >= 0, kOp, ": argument 'rtol' must be a finite number >= 0");
  const auto tol = std::get<0>(mu.abs().max(-1, /*keepdim=*/true)) * r;
  const auto mask = (mu.abs() > tol).to(at::kDouble);
  const auto rank = mask.sum(-1).to(at::kLong);
  const auto mu_pinv = at::where(mask > 0, mu.reciprocal(), at::zeros_like(mu));
  const auto Zr = Z * mask.unsqueeze(-2);      // range columns only
  const auto Q = at::matmul(Qy, Zr);           // (B, m, k), null columns zero
  const auto P0 = at::matmul(Zr.mT(), R);      // Q^T Y, (B, k, d)

  const auto stats = segment_stats(w, Q, Y64, seg);
  const auto S = stats.narrow(1, 0, k);
  const auto n = stats.select(1, k + d);
  const auto valid = n > 0;
  const auto Tk = at::where(valid, S.square().sum(-1) / at::where(valid, n, at::ones_like(n)),
                            at::zeros_like(n));
  const auto T = image_sum(Tk, seg, batch);
  const auto segments = image_sum(valid.to(at::kDouble), seg, batch);
  auto J = 0.5 * (rank.to(at::kDouble) + segments) - T;

  const auto batch_shape = Y.sizes().slice(0, Y.dim() - 2);
  return {J.reshape(batch_shape).to(Y.scalar_type()),
          rank.reshape(batch_shape),
          Q.reshape(with_trailing(Y, {m, k})),
          P0.reshape(with_trailing(Y, {k, d})),
          mu_pinv.reshape(with_trailing(Y, {k})),
          seg.index.reshape(labels.sizes()),
          seg.image,
          stats};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ncut_projector_distance_backward_cpu(
    const at::Tensor& gJ, const at::Tensor& weights, const std::optional<at::Tensor>& Lambda,
    const at::Tensor& Q, const at::Tensor& P0, const at::Tensor& mu_pinv,
    const at::Tensor& segment_index, const at::Tensor& segment_image, const at::Tensor& stats) {
  const int64_t m = Q.size(-2), k = Q.size(-1), d = P0.size(-1);
  const auto Qb = Q.to(at::kDouble).reshape({-1, m, k}).contiguous();
  const int64_t batch = Qb.size(0);
  const auto w = weights.to(at::kDouble).reshape({batch * m}).contiguous();
  const auto P0b = P0.to(at::kDouble).reshape({batch, k, d});
  const auto pinv = mu_pinv.to(at::kDouble).reshape({batch, k});
  const auto g = gJ.to(at::kDouble).reshape({batch});
  const Segments seg{segment_index.reshape({-1}).contiguous(), segment_image, stats.size(0)};

  const auto S = stats.narrow(1, 0, k);
  const auto SY = stats.narrow(1, k, d);
  const auto n = stats.select(1, k + d);
  const auto valid = n > 0;
  const auto n_inv = at::where(valid, at::where(valid, n, at::ones_like(n)).reciprocal(),
                               at::zeros_like(n));
  const auto Tk = S.square().sum(-1) * n_inv;
  const auto g_seg = g.index_select(0, seg.image);

  // gM Y = -gJ [Q Cc + w o rows(Sn P1)], Cc = pinv o (C2 - C1 P0) - C1 P1.
  const auto Sn = S * n_inv.unsqueeze(-1);
  const auto C1 = image_sum(Sn.unsqueeze(-1) * S.unsqueeze(-2), seg, batch);   // (B, k, k)
  const auto C2 = image_sum(Sn.unsqueeze(-1) * SY.unsqueeze(-2), seg, batch);  // (B, k, d)
  const auto P1 = pinv.unsqueeze(-1) * P0b;
  const auto Cc = pinv.unsqueeze(-1) * (C2 - at::matmul(C1, P0b)) - at::matmul(C1, P1);
  const auto SnP1 = at::matmul(Sn.unsqueeze(-2), P1.index_select(0, seg.image)).squeeze(-2);  // (count, d)
  const auto neg_g = -g.view({batch, 1, 1});

  const bool has_lambda = Lambda.has_value() && Lambda->defined();
  const auto L64 = has_lambda ? Lambda->to(at::kDouble).expand({batch, d, d}) : at::Tensor();
  // gY = 2 gM Y Lambda: the small factors absorb 2, -gJ and Lambda.
  auto coef_Q = 2.0 * neg_g * Cc;
  auto coef_seg = 2.0 * (-g_seg).unsqueeze(-1) * SnP1;
  if (has_lambda) {
    coef_Q = at::matmul(coef_Q, L64);
    coef_seg = at::matmul(coef_seg.unsqueeze(-2), L64.index_select(0, seg.image)).squeeze(-2);
  }
  auto gY = at::matmul(Qb, coef_Q).contiguous();  // (B, m, d)
  auto gw = at::empty({batch * m}, w.options());
  {
    const auto cs = coef_seg.contiguous();
    const auto Sc = S.contiguous();
    const auto coef_w = (-2.0 * g_seg * n_inv).contiguous();
    const auto Tkc = Tk.contiguous();
    const double* csp = cs.data_ptr<double>();
    const double* sp = Sc.data_ptr<double>();
    const double* cw = coef_w.data_ptr<double>();
    const double* tk = Tkc.data_ptr<double>();
    const double* qp = Qb.data_ptr<double>();
    const double* wp = w.data_ptr<double>();
    const int64_t* idx = seg.index.data_ptr<int64_t>();
    double* gyp = gY.data_ptr<double>();
    double* gwp = gw.data_ptr<double>();
    // One pass: gY_p += w_p coef_seg[k(p)], gw_p = -2 gJ (Q_p . S_k - T_k w_p) / n_k.
    at::parallel_for(0, batch * m, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t s = idx[p];
        const double wv = wp[p];
        for (int64_t j = 0; j < d; ++j) gyp[p * d + j] += wv * csp[s * d + j];
        double dot = 0;
        for (int64_t j = 0; j < k; ++j) dot += qp[p * k + j] * sp[s * k + j];
        gwp[p] = cw[s] * (dot - tk[s] * wv);
      }
    });
  }

  at::Tensor gLambda;
  if (has_lambda) {
    // gLambda = Y^T gM Y = -gJ [P0^T Cc + sum_k SY_k (Sn P1)_k^T], no pass over pixels.
    auto gL = neg_g * (at::matmul(P0b.mT(), Cc) +
                       image_sum(SY.unsqueeze(-1) * SnP1.unsqueeze(-2), seg, batch));
    gL = 0.5 * (gL + gL.mT());
    gLambda = (Lambda->dim() == 2 ? gL.sum(0) : gL.reshape(Lambda->sizes()))
                  .to(Lambda->scalar_type());
  } else {
    gLambda = at::zeros({d, d}, Qb.options());
  }
  auto y_shape = Q.sizes().vec();
  y_shape.back() = d;
  return {gY.reshape(y_shape), gw.reshape(weights.sizes()).to(weights.scalar_type()), gLambda};
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("ncut_projector_distance_with_basis", &ncut_projector_distance_with_basis_cpu);
  m.impl("ncut_projector_distance_backward", &ncut_projector_distance_backward_cpu);
}

}  // namespace matbp::ops::cpu
