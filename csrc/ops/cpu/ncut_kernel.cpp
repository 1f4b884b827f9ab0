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

Segments remap_segments(const at::Tensor& labels) {
  const auto flat = labels.reshape({-1, labels.size(-1)}).to(at::kLong);
  const int64_t batch = flat.size(0), m = flat.size(1);
  TORCH_CHECK(flat.numel() == 0 || flat.min().item<int64_t>() >= 0, kOp,
              ": argument 'labels' out of range: segment ids must be >= 0, got ",
              flat.min().item<int64_t>());
  const int64_t span = flat.numel() == 0 ? 1 : flat.max().item<int64_t>() + 1;
  TORCH_CHECK(span <= std::numeric_limits<int64_t>::max() / std::max<int64_t>(batch, 1), kOp,
              ": argument 'labels' out of range: ids up to ", span - 1, " with ", batch,
              " images overflow the segment index");
  const auto image_of_pixel = at::arange(batch, flat.options()).unsqueeze(-1).expand({batch, m});
  const auto key = (image_of_pixel * span + flat).reshape({-1});
  auto [unique, inverse, counts] = at::_unique2(key, /*sorted=*/true, /*return_inverse=*/true,
                                                 /*return_counts=*/false);
  return {inverse, at::div(unique, span, "floor"), unique.numel()};
}

// Segment sums of the rows of a (B, m, c) tensor: (count, c).
at::Tensor segment_sum(const at::Tensor& rows, const Segments& seg) {
  const auto flat = rows.reshape({-1, rows.size(-1)});
  return at::zeros({seg.count, flat.size(1)}, flat.options()).index_add_(0, seg.index, flat);
}

// Per-image sums of per-segment values (count, ...) -> (B, ...).
at::Tensor image_sum(const at::Tensor& per_segment, const Segments& seg, int64_t batch) {
  auto shape = per_segment.sizes().vec();
  shape[0] = batch;
  return at::zeros(shape, per_segment.options()).index_add_(0, seg.image, per_segment);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
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

  auto [Qy, R] = at::linalg_qr(Y64, "reduced");  // (B, m, k), (B, k, d)
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
  const auto Q = at::matmul(Qy, Z) * mask.unsqueeze(-2);  // (B, m, k), null columns zero
  const auto P0 = mask.unsqueeze(-1) * at::matmul(Z.mT(), R);  // Q^T Y, (B, k, d)

  const auto S = segment_sum(w.unsqueeze(-1) * Q, seg);             // (count, k)
  const auto n = segment_sum(w.square().unsqueeze(-1), seg).squeeze(-1);  // (count,)
  const auto valid = n > 0;
  const auto Tk = at::where(valid, S.square().sum(-1) / at::where(valid, n, at::ones_like(n)),
                            at::zeros_like(n));
  const auto T = image_sum(Tk, seg, batch);
  const auto segments = image_sum(valid.to(at::kDouble), seg, batch);
  auto J = 0.5 * (rank.to(at::kDouble) + segments) - T;

  const auto batch_shape = Y.sizes().slice(0, Y.dim() - 2);
  return {J.reshape(batch_shape).to(Y.scalar_type()), rank.reshape(batch_shape),
          Q.reshape(with_trailing(Y, {m, k})), P0.reshape(with_trailing(Y, {k, d})),
          mu_pinv.reshape(with_trailing(Y, {k}))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ncut_projector_distance_backward_cpu(
    const at::Tensor& gJ, const at::Tensor& Y, const at::Tensor& weights, const at::Tensor& labels,
    const std::optional<at::Tensor>& Lambda, const at::Tensor& Q, const at::Tensor& P0,
    const at::Tensor& mu_pinv) {
  constexpr const char* op = "matbp.ncut_projector_distance_backward";
  check_ncut_arguments(Y, weights, labels, Lambda, op);
  const int64_t m = Y.size(-2), d = Y.size(-1), k = mu_pinv.size(-1);
  const auto Y64 = Y.to(at::kDouble).reshape({-1, m, d});
  const int64_t batch = Y64.size(0);
  const auto w = weights.to(at::kDouble).reshape({batch, m});
  const auto Qb = Q.to(at::kDouble).reshape({batch, m, k});
  const auto P0b = P0.to(at::kDouble).reshape({batch, k, d});
  const auto pinv = mu_pinv.to(at::kDouble).reshape({batch, k});
  const auto g = gJ.to(at::kDouble).reshape({batch});
  const auto seg = remap_segments(labels);

  const auto S = segment_sum(w.unsqueeze(-1) * Qb, seg);                    // (count, k)
  const auto SY = segment_sum(w.unsqueeze(-1) * Y64, seg);                  // (count, d)
  const auto n = segment_sum(w.square().unsqueeze(-1), seg).squeeze(-1);    // (count,)
  const auto valid = n > 0;
  const auto n_inv = at::where(valid, at::where(valid, n, at::ones_like(n)).reciprocal(),
                               at::zeros_like(n));
  const auto Tk = S.square().sum(-1) * n_inv;
  const auto g_seg = g.index_select(0, seg.image);  // gJ of each segment's image

  // gw_p = -2 gJ [Q_p . S_k - T_k w_p] / n_k
  const auto S_pix = S.index_select(0, seg.index).reshape({batch, m, k});
  const auto coef = (g_seg * n_inv).index_select(0, seg.index).reshape({batch, m});
  const auto Tk_pix = Tk.index_select(0, seg.index).reshape({batch, m});
  const auto gw = -2.0 * coef * ((Qb * S_pix).sum(-1) - Tk_pix * w);

  // C1 = sum_k S_k S_k^T / n_k, C2 = sum_k S_k SY_k^T / n_k, per image.
  const auto Sn = S * n_inv.unsqueeze(-1);
  const auto C1 = image_sum(Sn.unsqueeze(-1) * S.unsqueeze(-2), seg, batch);   // (B, k, k)
  const auto C2 = image_sum(Sn.unsqueeze(-1) * SY.unsqueeze(-2), seg, batch);  // (B, k, d)
  // Omega_Q rows w_p S_k / n_k.
  const auto Omega_Q = w.unsqueeze(-1) * Sn.index_select(0, seg.index).reshape({batch, m, k});
  const auto P1 = pinv.unsqueeze(-1) * P0b;  // diag(mu^+) P0
  auto gMY = at::matmul(Omega_Q - at::matmul(Qb, C1), P1);
  gMY += at::matmul(Qb, pinv.unsqueeze(-1) * (C2 - at::matmul(C1, P0b)));
  gMY *= -g.view({batch, 1, 1});

  const bool has_lambda = Lambda.has_value() && Lambda->defined();
  at::Tensor gY, gLambda;
  if (has_lambda) {
    const auto L64 = Lambda->to(at::kDouble);
    gY = 2.0 * at::matmul(gMY, L64.expand({batch, d, d}));
    auto gL = at::matmul(Y64.mT(), gMY);
    gL = 0.5 * (gL + gL.mT());
    gLambda = (Lambda->dim() == 2 ? gL.sum(0) : gL.reshape(Lambda->sizes()))
                  .to(Lambda->scalar_type());
  } else {
    gY = 2.0 * gMY;
    gLambda = at::zeros({d, d}, Y64.options()).to(Y.scalar_type());
  }
  return {gY.reshape(Y.sizes()).to(Y.scalar_type()), gw.reshape(weights.sizes()).to(weights.scalar_type()),
          gLambda};
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("ncut_projector_distance_with_basis", &ncut_projector_distance_with_basis_cpu);
  m.impl("ncut_projector_distance_backward", &ncut_projector_distance_backward_cpu);
}

}  // namespace matbp::ops::cpu
