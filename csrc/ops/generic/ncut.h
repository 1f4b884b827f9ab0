#pragma once

// Device-generic kernels of matbp::ncut_projector_distance_with_basis and its
// backward (generic/backend.h): the core both normalized-cuts objectives
// share (docs/design.md §4),
//
//   J = 1/2 || Pi_M - Pi_Omega ||_F^2,   M = Y Lambda Y^T  (m x m, never formed),
//   Pi_Omega = sum_k v_k v_k^T / |v_k|^2,  v_k = w o e_k  (segment k's indicator
//   e_k weighted by w: w = 1 gives J2's Psi, w = D^1/2 gives J1's Omega).
//
// Low rank: Y = Q_y R (thin QR), R Lambda R^T = Z diag(mu) Z^T, Q = Q_y Z (the
// columns with |mu| > rtol max|mu|) is an orthonormal basis of range(M), and
//   J = (rank M + #segments) / 2 - sum_k |S_k|^2 / n_k,
//   S_k = sum_{p in k} w_p Q_p (segment sums of the basis), n_k = sum_{p in k} w_p^2.
// Cost O(m d^2 + d^3 + m k).
//
// Backward, with the projector derivative (eq. 19) and T = tr(Pi_M Pi_Omega):
//   gM = -gJ [(I - Pi) Pi_Omega M^+ + M^+ Pi_Omega (I - Pi)],
//   gY = 2 gM Y Lambda,  gLambda = Y^T gM Y,
//   gw_p = -2 gJ [Q_p . S_k - T_k w_p] / n_k,  T_k = |S_k|^2 / n_k,
// all in factored form: with P0 = Q^T Y = mask Z^T R and M^+ Y = Q diag(mu^+) P0,
//   gM Y = -gJ [(Omega_Q - Q C1) diag(mu^+) P0 + Q diag(mu^+) (C2 - C1 P0)],
//   Omega_Q = Pi_Omega Q (rows w_p S_k / n_k), C1 = sum_k S_k S_k^T / n_k,
//   C2 = sum_k S_k SY_k^T / n_k, SY_k = sum_{p in k} w_p Y_p.
//
// Everything is ATen (GEMMs, QR, small reductions) or a per-pixel functor
// run with Backend::for_each, except the primitives whose best form
// differs by device (the finiteness check, the label remap, the tall QR and
// the segment sums): the NcutOps<Backend> hooks below, specialised next to
// each backend's registration (cpu/ncut_kernel.cpp, cuda/ncut_kernel.cu).
// These ops synchronise with the device (label ranges, the number of
// segments, finiteness checks): the segment count sizes their outputs.

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>

#include "../../math/host_device.h"
#include "../../math/projector.h"
#include "../checks.h"
#include "backend.h"

namespace matbp::ops::generic {

constexpr const char* kNcutOp = "matbp.ncut_projector_distance";
constexpr const char* kNcutBackwardOp = "matbp.ncut_projector_distance_backward";

// Segment ids are remapped through tables bounded by the largest id.
constexpr int64_t kNcutMaxLabelId = (int64_t(1) << 40) - 1;

// The segments of a flattened batch of label maps: consecutive numbers per
// image, images in order, label ids ascending within an image.
struct NcutSegments {
  at::Tensor index;  // (B*m,) int64, segment of each pixel, in [0, count)
  at::Tensor image;  // (count,) int64, image of each segment
  int64_t count = 0;
};

// Per-pixel row [w Q_p | w Y_p | w^2] of the segment statistics; a segment's
// statistics are the sum of its pixels' rows.
struct NcutPixelStats {
  const double* q;  // (pixels, k)
  const double* y;  // (pixels, d)
  const double* w;  // (pixels,)
  int64_t k, d;
  MATBP_HOST_DEVICE int64_t cols() const { return k + d + 1; }
  MATBP_HOST_DEVICE void add_to(double* row, int64_t p) const {
    const double wv = w[p];
    for (int64_t j = 0; j < k; ++j) row[j] += wv * q[p * k + j];
    for (int64_t j = 0; j < d; ++j) row[k + j] += wv * y[p * d + j];
    row[k + d] += wv * wv;
  }
  MATBP_HOST_DEVICE void write(double* row, int64_t p) const {
    const double wv = w[p];
    for (int64_t j = 0; j < k; ++j) row[j] = wv * q[p * k + j];
    for (int64_t j = 0; j < d; ++j) row[k + j] = wv * y[p * d + j];
    row[k + d] = wv * wv;
  }
};

// Every pixel's row into rows (pixels, cols), for a scatter-add afterwards.
struct NcutPixelStatsRows {
  NcutPixelStats stats;
  double* rows;
  MATBP_HOST_DEVICE void operator()(int64_t p) const { stats.write(rows + p * stats.cols(), p); }
};

// The fused per-pixel backward pass, one independent write per pixel:
//   gY_p += w_p coef_seg[s],  gw_p = coef_w[s] (Q_p . S_s - T_s w_p),  s = segment(p).
struct NcutBackwardPixels {
  const double* coef_seg;  // (count, d)
  const double* S;         // (count, k)
  const double* coef_w;    // (count,)
  const double* T;         // (count,)
  const double* q;         // (pixels, k)
  const double* w;         // (pixels,)
  const int64_t* segment;  // (pixels,)
  double* gy;              // (pixels, d), accumulated into
  double* gw;              // (pixels,)
  int64_t k, d;
  MATBP_HOST_DEVICE void operator()(int64_t p) const {
    const int64_t s = segment[p];
    const double wv = w[p];
    for (int64_t j = 0; j < d; ++j) gy[p * d + j] += wv * coef_seg[s * d + j];
    double dot = 0;
    for (int64_t j = 0; j < k; ++j) dot += q[p * k + j] * S[s * k + j];
    gw[p] = coef_w[s] * (dot - T[s] * wv);
  }
};

// The device-specific primitives, specialised by each backend:
//
//   static bool all_finite(const at::Tensor& t);
//       no NaN or Inf in a floating tensor (may synchronise).
//   static NcutSegments remap_segments(const at::Tensor& labels, int64_t span);
//       labels (B, m) int64 contiguous, ids in [0, span): the segments as
//       documented on NcutSegments.
//   static NcutQr tall_skinny_qr(const at::Tensor& Y);
//       Y (B, m, d) float64: its thin QR, Q_y factored as on NcutQr.
//   static at::Tensor basis(const NcutQr& qr, const at::Tensor& C);
//       Q_y C, (B, m, k) float64 contiguous, for C (B, r, k); called once
//       per factorisation (it may consume the factors).
//   static at::Tensor segment_stats(const NcutPixelStats& pixels, int64_t count,
//                                   const NcutSegments& seg, const at::TensorOptions& options);
//       (seg.count, pixels.cols()) float64: the sums of the rows of the
//       `count` pixels per segment.
template <typename Backend>
struct NcutOps;

inline void check_ncut_lambda(const at::Tensor& L, const at::Tensor& Y, int64_t d, const char* op) {
  check_float_matrix(L, op, "Lambda", /*square=*/true);
  const bool shared = L.dim() == 2;
  TORCH_CHECK(L.size(-1) == d && (shared || L.sizes().slice(0, L.dim() - 2) ==
                                                Y.sizes().slice(0, Y.dim() - 2)),
              op, ": argument 'Lambda' must have shape (d, d) or (*, d, d) with d = ", d,
              " and the batch of the features ", Y.sizes(), ", got ", L.sizes());
}

// Every tensor argument of the forward on Y's device.
inline void check_ncut_devices(const at::Tensor& Y, const at::Tensor& weights,
                               const at::Tensor& labels, const std::optional<at::Tensor>& Lambda) {
  check_same_device(weights, "weights", Y, "Y", kNcutOp);
  check_same_device(labels, "labels", Y, "Y", kNcutOp);
  if (Lambda.has_value() && Lambda->defined()) check_same_device(*Lambda, "Lambda", Y, "Y", kNcutOp);
}

inline void check_ncut_arguments(const at::Tensor& Y, const at::Tensor& weights,
                                 const at::Tensor& labels, const std::optional<at::Tensor>& Lambda,
                                 const char* op) {
  check_float_matrix(Y, op, "Y", /*square=*/false);
  const auto batch_m = Y.sizes().slice(0, Y.dim() - 1);
  TORCH_CHECK(!at::isFloatingType(labels.scalar_type()) &&
                  !at::isComplexType(labels.scalar_type()) && labels.scalar_type() != at::kBool,
              op, ": argument 'labels' must be an integer tensor of segment ids, got ",
              labels.scalar_type());
  TORCH_CHECK(labels.sizes() == batch_m, op, ": argument 'labels' must have shape (*, m) = ",
              batch_m, " matching the features (*, m, d) = ", Y.sizes(), ", got ", labels.sizes());
  check_float_dtype(weights, op, "weights");
  TORCH_CHECK(weights.sizes() == batch_m, op, ": argument 'weights' must have shape (*, m) = ",
              batch_m, ", got ", weights.sizes());
  TORCH_CHECK(Y.size(-2) >= 1, op, ": need at least one pixel (m >= 1), got m = 0");
  if (Lambda.has_value() && Lambda->defined()) check_ncut_lambda(*Lambda, Y, Y.size(-1), op);
  check_ncut_devices(Y, weights, labels, Lambda);
}

// The span [0, max id] of the labels (B, m) int64, after the range checks.
inline int64_t ncut_label_span(const at::Tensor& labels) {
  if (labels.numel() == 0) return 1;
  auto [lo, hi] = at::aminmax(labels);
  const auto range = at::stack({lo, hi}).cpu();  // one synchronisation
  const int64_t lowest = range[0].item<int64_t>(), highest = range[1].item<int64_t>();
  TORCH_CHECK(lowest >= 0, kNcutOp,
              ": argument 'labels' out of range: segment ids must be >= 0, got ", lowest);
  TORCH_CHECK(highest <= kNcutMaxLabelId, kNcutOp,
              ": argument 'labels' out of range: ids up to ", highest,
              " (at most 2^40 - 1 supported)");
  return highest + 1;
}

// A symmetric Lambda, shared (d, d) or per image (*, d, d), as (B, d, d) float64.
inline at::Tensor ncut_lambda_batch(const at::Tensor& Lambda, int64_t batch, int64_t d) {
  const auto L64 = Lambda.to(at::kDouble);
  return Lambda.dim() == 2 ? L64.expand({batch, d, d}) : L64.reshape({batch, d, d});
}

// Per-image sums of per-segment values (count, ...) -> (B, ...).
inline at::Tensor ncut_image_sum(const at::Tensor& per_segment, const NcutSegments& seg,
                                 int64_t batch) {
  auto shape = per_segment.sizes().vec();
  shape[0] = batch;
  int64_t cols = 1;
  for (size_t i = 1; i < shape.size(); ++i) cols *= shape[i];
  // index_add_ over rows of a 2-D tensor (its fast path), then the shape back.
  const auto rows = per_segment.reshape({per_segment.size(0), cols});
  return at::zeros({batch, cols}, rows.options()).index_add_(0, seg.image, rows).view(shape);
}

// Thin QR Y = Q_y R of tall (B, m, d) matrices by TSQR: Householder QR of row
// blocks that fit in cache, then of their stacked R factors, so that
// Q_y = diag(Q_1, ..., Q_blocks) Q_top. One QR of a 154 401 x 20 matrix is
// memory-bound in LAPACK's unblocked panel code (a pass per column); the
// blocked form is several times faster and as accurate. Q_y is kept factored:
// the op needs only Q_y C for one small C (ncut_basis), which is formed block
// by block as Q_b (Q_top,b C) without ever storing Q_y.
constexpr int64_t kNcutQrRows = 2048;

// Whether (m, d) matrices are split into row blocks at all.
inline bool ncut_qr_blocked(int64_t m, int64_t d) {
  return d > 0 && 4 * d <= kNcutQrRows && m > 2 * kNcutQrRows;
}

// The factored Q_y and R. `blocks` holds the row blocks' factors in the
// backend's form (ATen: their explicit Q, (B * nblocks, kNcutQrRows, d));
// `top` is Q_top (B, nblocks * d, d), undefined when there is one block
// (then `blocks` is Q_y itself, (B, m, r)).
struct NcutQr {
  at::Tensor R;       // (B, r, d), r = min(m, d)
  at::Tensor blocks;  // backend-specific, see above
  at::Tensor tau;     // backend-specific (the CPU's Householder scalars)
  at::Tensor top;     // (B, nblocks * d, d) or undefined
  int64_t m = 0;
};

// The ATen form: batched QR of zero-padded row blocks (any backend).
inline NcutQr ncut_tall_skinny_qr_aten(const at::Tensor& Y) {
  const int64_t batch = Y.size(0), m = Y.size(1), d = Y.size(2);
  if (!ncut_qr_blocked(m, d)) {
    auto [Q, R] = at::linalg_qr(Y, "reduced");
    return {R, Q, at::Tensor(), at::Tensor(), m};
  }
  const int64_t nblocks = (m + kNcutQrRows - 1) / kNcutQrRows;
  auto padded = Y;
  if (nblocks * kNcutQrRows != m) {
    padded = at::cat({Y, at::zeros({batch, nblocks * kNcutQrRows - m, d}, Y.options())}, 1);
  }
  auto [Qb, Rb] = at::linalg_qr(padded.reshape({batch * nblocks, kNcutQrRows, d}), "reduced");
  auto [Qt, R] = at::linalg_qr(Rb.reshape({batch, nblocks * d, d}), "reduced");
  return {R, Qb, at::Tensor(), Qt, m};
}

// Q_y C (B, m, k) for C (B, r, k), in the ATen form.
inline at::Tensor ncut_basis_aten(const NcutQr& qr, const at::Tensor& C) {
  if (!qr.top.defined()) return at::matmul(qr.blocks, C).contiguous();
  const int64_t batch = C.size(0), k = C.size(-1), d = qr.R.size(-1);
  const int64_t nblocks = qr.top.size(1) / d;
  const auto top_c = at::matmul(qr.top, C).reshape({batch * nblocks, d, k});
  return at::bmm(qr.blocks, top_c).reshape({batch, nblocks * kNcutQrRows, k}).narrow(1, 0, qr.m)
      .contiguous();
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
ncut_projector_distance_with_basis(const at::Tensor& Y, const at::Tensor& weights,
                                   const at::Tensor& labels,
                                   const std::optional<at::Tensor>& Lambda,
                                   std::optional<double> rtol) {
  using Ops = NcutOps<Backend>;
  constexpr const char* op = kNcutOp;
  check_ncut_arguments(Y, weights, labels, Lambda, op);
  const bool has_lambda = Lambda.has_value() && Lambda->defined();
  TORCH_CHECK(Ops::all_finite(Y), op, ": argument 'Y' contains NaN or Inf");
  TORCH_CHECK(Ops::all_finite(weights) && (weights.numel() == 0 || weights.min().item<double>() >= 0),
              op, ": argument 'weights' must be finite and >= 0");
  TORCH_CHECK(!has_lambda || Ops::all_finite(*Lambda), op, ": argument 'Lambda' contains NaN or Inf");
  const int64_t m = Y.size(-2), d = Y.size(-1), batch = batch_count(Y);
  const auto Y64 = Y.to(at::kDouble).reshape({batch, m, d});
  const auto w = weights.to(at::kDouble).reshape({batch, m});
  const auto flat = labels.reshape({batch, m}).to(at::kLong).contiguous();
  const auto seg = Ops::remap_segments(flat, ncut_label_span(flat));

  const NcutQr qr = Ops::tall_skinny_qr(Y64);
  const auto& R = qr.R;  // (B, r, d)
  auto B = has_lambda ? at::matmul(at::matmul(R, ncut_lambda_batch(*Lambda, batch, d)), R.mT())
                      : at::matmul(R, R.mT());
  // Features near the float64 limits make the d x d core of W overflow.
  TORCH_CHECK(Ops::all_finite(B), op,
              ": the affinity W = Y Lambda Y^T overflows float64; scale the features down");
  const EigenResult eig = Backend::sym_eig(0.5 * (B + B.mT()), at::kDouble, op, "R Lambda R^T");
  const auto& mu = eig.L;  // (B, k) ascending
  const auto& Z = eig.V;   // (B, k, k)
  const int64_t k = mu.size(-1);
  const double r = rtol.has_value() ? *rtol : math::default_rank_rtol<double>(std::max(m, d));
  TORCH_CHECK(std::isfinite(r) && r >= 0, op, ": argument 'rtol' must be a finite number >= 0");
  const auto tol = k > 0 ? std::get<0>(mu.abs().max(-1, /*keepdim=*/true)) * r
                         : at::zeros({batch, 1}, mu.options());
  const auto mask = (mu.abs() > tol).to(at::kDouble);
  const auto rank = mask.sum(-1).to(at::kLong);
  auto mu_pinv = at::where(mask > 0, mu.reciprocal(), at::zeros_like(mu));
  const auto Zr = Z * mask.unsqueeze(-2);  // range columns only
  const at::Tensor Q = Ops::basis(qr, Zr);  // Q_y Zr (B, m, k), null columns zero
  auto P0 = at::matmul(Zr.mT(), R).contiguous();  // Q^T Y, (B, k, d)

  const auto Yc = Y64.contiguous(), wc = w.contiguous();
  const auto stats = Ops::segment_stats(
      NcutPixelStats{Q.data_ptr<double>(), Yc.data_ptr<double>(), wc.data_ptr<double>(), k, d},
      batch * m, seg, Y64.options());
  const auto S = stats.narrow(1, 0, k);
  const auto n = stats.select(1, k + d);
  const auto valid = n > 0;
  const auto Tk = at::where(valid, S.square().sum(-1) / at::where(valid, n, at::ones_like(n)),
                            at::zeros_like(n));
  const auto T = ncut_image_sum(Tk, seg, batch);
  const auto segments = ncut_image_sum(valid.to(at::kDouble), seg, batch);
  auto J = (0.5 * (rank.to(at::kDouble) + segments) - T).contiguous();

  // Eigensolver failures found on the device (the CPU has raised already).
  // The op synchronises anyway, so it raises as the CPU does rather than
  // return NaN: an int64 rank cannot carry a NaN.
  report_failures(eig.finite, /*raise=*/true, {J, Q, P0, mu_pinv}, [&](int64_t b) {
    return std::string(op) + ": the affinity W = Y Lambda Y^T of matrix " + std::to_string(b) +
           " of the flattened batch overflows float64; scale the features down";
  });
  report_failures(eig.converged, /*raise=*/true, {J, Q, P0, mu_pinv},
                  [&](int64_t b) { return not_converged_message(op, "the eigensolver", b); });

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

// Every tensor argument of the backward on Q's device.
inline void check_ncut_backward_devices(const at::Tensor& gJ, const at::Tensor& weights,
                                        const std::optional<at::Tensor>& Lambda,
                                        const at::Tensor& Q, const at::Tensor& P0,
                                        const at::Tensor& mu_pinv,
                                        const at::Tensor& segment_index,
                                        const at::Tensor& segment_image, const at::Tensor& stats) {
  constexpr const char* op = kNcutBackwardOp;
  check_same_device(gJ, "gJ", Q, "Q", op);
  check_same_device(weights, "weights", Q, "Q", op);
  check_same_device(P0, "P0", Q, "Q", op);
  check_same_device(mu_pinv, "mu_pinv", Q, "Q", op);
  check_same_device(segment_index, "segment_index", Q, "Q", op);
  check_same_device(segment_image, "segment_image", Q, "Q", op);
  check_same_device(stats, "segment_stats", Q, "Q", op);
  if (Lambda.has_value() && Lambda->defined()) check_same_device(*Lambda, "Lambda", Q, "Q", op);
}

// The backward's arguments are the forward's outputs; direct calls get the
// same checks, so that no segment number can index out of bounds.
inline void check_ncut_backward_arguments(const at::Tensor& gJ, const at::Tensor& weights,
                                          const std::optional<at::Tensor>& Lambda,
                                          const at::Tensor& Q, const at::Tensor& P0,
                                          const at::Tensor& mu_pinv,
                                          const at::Tensor& segment_index,
                                          const at::Tensor& segment_image,
                                          const at::Tensor& stats) {
  constexpr const char* op = kNcutBackwardOp;
  check_ncut_backward_devices(gJ, weights, Lambda, Q, P0, mu_pinv, segment_index, segment_image,
                              stats);
  check_float_matrix(Q, op, "Q", /*square=*/false);
  check_float_matrix(P0, op, "P0", /*square=*/false);

  const auto batch_shape = Q.sizes().slice(0, Q.dim() - 2);
  const auto batch_m = Q.sizes().slice(0, Q.dim() - 1);
  const int64_t k = Q.size(-1), d = P0.size(-1);
  auto batch_k = batch_shape.vec();
  batch_k.push_back(k);
  TORCH_CHECK(P0.sizes().slice(0, P0.dim() - 1) == at::IntArrayRef(batch_k), op,
              ": 'Q' (*, m, k) and 'P0' (*, k, d) disagree: ", Q.sizes(), " and ", P0.sizes());
  TORCH_CHECK(mu_pinv.sizes() == at::IntArrayRef(batch_k), op, ": 'mu_pinv' must have shape ",
              at::IntArrayRef(batch_k), ", got ", mu_pinv.sizes());
  TORCH_CHECK(gJ.sizes() == batch_shape, op, ": 'gJ' must have shape ", batch_shape, ", got ",
              gJ.sizes());
  check_float_dtype(gJ, op, "gJ");
  check_float_dtype(mu_pinv, op, "mu_pinv");
  check_float_dtype(weights, op, "weights");
  TORCH_CHECK(weights.sizes() == batch_m, op, ": 'weights' must have shape ", batch_m, ", got ",
              weights.sizes());
  TORCH_CHECK(segment_index.scalar_type() == at::kLong && segment_index.sizes() == batch_m, op,
              ": 'segment_index' must be an int64 tensor of shape ", batch_m, ", got ",
              segment_index.scalar_type(), " ", segment_index.sizes());
  check_float_dtype(stats, op, "segment_stats");
  TORCH_CHECK(stats.dim() == 2 && stats.size(1) == k + d + 1, op,
              ": 'segment_stats' must have shape (segments, k + d + 1 = ", k + d + 1, "), got ",
              stats.sizes());
  TORCH_CHECK(segment_image.scalar_type() == at::kLong && segment_image.dim() == 1 &&
                  segment_image.size(0) == stats.size(0),
              op, ": 'segment_image' must be an int64 tensor of shape (", stats.size(0),
              ",), got ", segment_image.scalar_type(), " ", segment_image.sizes());
  if (Lambda.has_value() && Lambda->defined()) check_ncut_lambda(*Lambda, Q, d, op);
  // Segment numbers index the per-segment arrays: in range, or no kernel runs.
  const int64_t batch = batch_count(Q), count = stats.size(0);
  std::vector<at::Tensor> bounds;
  if (segment_index.numel() > 0) {
    auto [lo, hi] = at::aminmax(segment_index);
    bounds.insert(bounds.end(), {lo, hi});
  }
  if (segment_image.numel() > 0) {
    auto [lo, hi] = at::aminmax(segment_image);
    bounds.insert(bounds.end(), {lo, hi});
  }
  if (bounds.empty()) return;
  const auto b = at::stack(bounds).cpu();  // one synchronisation
  const int64_t* v = b.data_ptr<int64_t>();
  if (segment_index.numel() > 0) {
    TORCH_CHECK(v[0] >= 0 && v[1] < count, op, ": 'segment_index' must be in [0, ", count,
                "), the segments of 'segment_stats', got values in [", v[0], ", ", v[1], "]");
    v += 2;
  }
  if (segment_image.numel() > 0) {
    TORCH_CHECK(v[0] >= 0 && v[1] < batch, op, ": 'segment_image' must be in [0, ", batch,
                "), the images, got values in [", v[0], ", ", v[1], "]");
  }
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> ncut_projector_distance_backward(
    const at::Tensor& gJ, const at::Tensor& weights, const std::optional<at::Tensor>& Lambda,
    const at::Tensor& Q, const at::Tensor& P0, const at::Tensor& mu_pinv,
    const at::Tensor& segment_index, const at::Tensor& segment_image, const at::Tensor& stats_in) {
  check_ncut_backward_arguments(gJ, weights, Lambda, Q, P0, mu_pinv, segment_index, segment_image,
                                stats_in);
  const int64_t m = Q.size(-2), k = Q.size(-1), d = P0.size(-1), batch = batch_count(Q);
  const auto Qb = Q.to(at::kDouble).reshape({batch, m, k}).contiguous();
  const auto w = weights.to(at::kDouble).reshape({batch * m}).contiguous();
  const auto P0b = P0.to(at::kDouble).reshape({batch, k, d});
  const auto pinv = mu_pinv.to(at::kDouble).reshape({batch, k});
  const auto g = gJ.to(at::kDouble).reshape({batch});
  const auto stats = stats_in.to(at::kDouble);
  const NcutSegments seg{segment_index.reshape({batch * m}).contiguous(), segment_image,
                         stats.size(0)};

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
  const auto C1 = ncut_image_sum(Sn.unsqueeze(-1) * S.unsqueeze(-2), seg, batch);   // (B, k, k)
  const auto C2 = ncut_image_sum(Sn.unsqueeze(-1) * SY.unsqueeze(-2), seg, batch);  // (B, k, d)
  const auto P1 = pinv.unsqueeze(-1) * P0b;
  const auto Cc = pinv.unsqueeze(-1) * (C2 - at::matmul(C1, P0b)) - at::matmul(C1, P1);
  const auto SnP1 =
      at::matmul(Sn.unsqueeze(-2), P1.index_select(0, seg.image)).squeeze(-2);  // (count, d)
  const auto neg_g = -g.view({batch, 1, 1});

  const bool has_lambda = Lambda.has_value() && Lambda->defined();
  const auto L64 = has_lambda ? ncut_lambda_batch(*Lambda, batch, d) : at::Tensor();
  // gY = 2 gM Y Lambda: the small factors absorb 2, -gJ and Lambda.
  auto coef_Q = 2.0 * neg_g * Cc;
  auto coef_seg = 2.0 * (-g_seg).unsqueeze(-1) * SnP1;
  if (has_lambda) {
    coef_Q = at::matmul(coef_Q, L64);
    coef_seg = at::matmul(coef_seg.unsqueeze(-2), L64.index_select(0, seg.image)).squeeze(-2);
  }
  auto gY = at::matmul(Qb, coef_Q).contiguous();  // (B, m, d)
  auto gw = at::empty({batch * m}, w.options());
  if (batch * m > 0) {
    const auto cs = coef_seg.contiguous();
    const auto Sc = S.contiguous();
    const auto coef_w = (-2.0 * g_seg * n_inv).contiguous();
    const auto Tkc = Tk.contiguous();
    Backend::for_each(batch * m,
                      NcutBackwardPixels{cs.data_ptr<double>(), Sc.data_ptr<double>(),
                                         coef_w.data_ptr<double>(), Tkc.data_ptr<double>(),
                                         Qb.data_ptr<double>(), w.data_ptr<double>(),
                                         seg.index.data_ptr<int64_t>(), gY.data_ptr<double>(),
                                         gw.data_ptr<double>(), k, d});
  }

  at::Tensor gLambda;
  if (has_lambda) {
    // gLambda = Y^T gM Y = -gJ [P0^T Cc + sum_k SY_k (Sn P1)_k^T], no pass over pixels.
    auto gL = neg_g * (at::matmul(P0b.mT(), Cc) +
                       ncut_image_sum(SY.unsqueeze(-1) * SnP1.unsqueeze(-2), seg, batch));
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

}  // namespace matbp::ops::generic
