// CUDA kernels of matbp::ncut_projector_distance_with_basis and its backward.
// The op is device-generic (generic/ncut.h, which has the mathematics); this
// file holds the CUDA forms of its device-specific primitives (NcutOps):
// label remap by one sort-based unique over (image, id) keys, and segment
// statistics as per-pixel rows scatter-added by ATen's index_add_.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>

#include "../generic/ncut.h"
#include "cuda_backend.cuh"

namespace matbp::ops::generic {

template <>
struct NcutOps<cuda::CudaBackend> {
  static bool all_finite(const at::Tensor& t) {
    return t.numel() == 0 || at::isfinite(t).all().item<bool>();
  }

  // cuSOLVER's batched QR through ATen.
  static NcutQr tall_skinny_qr(const at::Tensor& Y) { return ncut_tall_skinny_qr_aten(Y); }
  static at::Tensor basis(const NcutQr& qr, const at::Tensor& C) { return ncut_basis_aten(qr, C); }

  // Keys b * span + id, sorted and made unique: their ranks are the segment
  // numbers (consecutive per image, images in order, ids ascending) and
  // key / span the image of each segment.
  static NcutSegments remap_segments(const at::Tensor& flat, int64_t span) {
    const int64_t batch = flat.size(0), m = flat.size(1);
    NcutSegments seg;
    if (flat.numel() == 0) {
      seg.index = at::empty({0}, flat.options());
      seg.image = at::empty({0}, flat.options());
      return seg;
    }
    auto ids = flat;
    int64_t width = span;
    if (width > std::numeric_limits<int64_t>::max() / batch) {
      // Huge sparse ids in a large batch: number the ids of the whole batch
      // first, so the keys fit in 64 bits.
      auto [unique, inverse, counts] = at::_unique2(flat.reshape({batch * m}), /*sorted=*/true,
                                                    /*return_inverse=*/true,
                                                    /*return_counts=*/false);
      ids = inverse.reshape({batch, m});
      width = unique.numel();
      TORCH_CHECK(width <= std::numeric_limits<int64_t>::max() / batch, kNcutOp,
                  ": too many (image, segment id) pairs to number: ", batch, " images x ", width,
                  " distinct ids");
    }
    const auto keys = ids + at::arange(batch, flat.options()).mul_(width).unsqueeze(1);
    auto [unique, inverse, counts] = at::_unique2(keys.reshape({batch * m}), /*sorted=*/true,
                                                  /*return_inverse=*/true,
                                                  /*return_counts=*/false);
    seg.index = inverse.reshape({batch * m});
    seg.image = at::div(unique, width, "trunc");
    seg.count = unique.numel();
    return seg;
  }

  // Every pixel's row [w Q | w Y | w^2], then one scatter-add into the
  // segments (atomics inside index_add_).
  static at::Tensor segment_stats(const NcutPixelStats& pixels, int64_t count,
                                  const NcutSegments& seg, const at::TensorOptions& options) {
    const int64_t cols = pixels.cols();
    auto rows = at::empty({count, cols}, options);
    cuda::CudaBackend::for_each(count, NcutPixelStatsRows{pixels, rows.data_ptr<double>()});
    return at::zeros({seg.count, cols}, options).index_add_(0, seg.index, rows);
  }
};

}  // namespace matbp::ops::generic

namespace matbp::ops::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
ncut_projector_distance_with_basis_cuda(const at::Tensor& Y, const at::Tensor& weights,
                                        const at::Tensor& labels,
                                        const std::optional<at::Tensor>& Lambda,
                                        std::optional<double> rtol) {
  // Mixed devices get the same-device message rather than "must be CUDA".
  generic::check_ncut_devices(Y, weights, labels, Lambda);
  auto guard = guard_device_of(Y, generic::kNcutOp, "Y");
  return generic::ncut_projector_distance_with_basis<CudaBackend>(Y, weights, labels, Lambda,
                                                                  rtol);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ncut_projector_distance_backward_cuda(
    const at::Tensor& gJ, const at::Tensor& weights, const std::optional<at::Tensor>& Lambda,
    const at::Tensor& Q, const at::Tensor& P0, const at::Tensor& mu_pinv,
    const at::Tensor& segment_index, const at::Tensor& segment_image, const at::Tensor& stats) {
  generic::check_ncut_backward_devices(gJ, weights, Lambda, Q, P0, mu_pinv, segment_index,
                                       segment_image, stats);
  auto guard = guard_device_of(Q, generic::kNcutBackwardOp, "Q");
  return generic::ncut_projector_distance_backward<CudaBackend>(
      gJ, weights, Lambda, Q, P0, mu_pinv, segment_index, segment_image, stats);
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("ncut_projector_distance_with_basis", widening<&ncut_projector_distance_with_basis_cuda>());
  m.impl("ncut_projector_distance_backward", widening<&ncut_projector_distance_backward_cuda>());
}

}  // namespace matbp::ops::cuda
