// CPU kernels of matbp::ncut_projector_distance_with_basis and its backward.
// The op is device-generic (generic/ncut.h, which has the mathematics); this
// file holds the CPU forms of its device-specific primitives (NcutOps):
// label remap through a lookup table per image, segment statistics with
// per-thread accumulators (fast and deterministic), and the finiteness check.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "../generic/ncut.h"
#include "batch_loops.h"
#include "cpu_backend.h"

namespace matbp::ops::generic {

template <>
struct NcutOps<cpu::CpuBackend> {
  static bool all_finite(const at::Tensor& t) { return cpu::all_finite(t); }

  // A lookup table over [0, span) per image; ids need not be contiguous.
  static NcutSegments remap_segments(const at::Tensor& flat, int64_t span) {
    const int64_t batch = flat.size(0), m = flat.size(1);
    const int64_t* lab = flat.data_ptr<int64_t>();
    NcutSegments seg;
    seg.index = at::empty({batch * m}, flat.options());
    int64_t* out = seg.index.data_ptr<int64_t>();
    std::vector<int64_t> first_segment(batch + 1, 0);
    // A table per image bounded by the pixels it covers; sparse huge ids go
    // through sort-based unique instead.
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
          for (int64_t p = 0; p < m; ++p)
            out[b * m + p] = first_segment[b] + tables[b][lab[b * m + p]];
      });
    } else {
      for (int64_t b = 0; b < batch; ++b) {
        auto [unique, inverse, counts] = at::_unique2(flat[b], /*sorted=*/true,
                                                      /*return_inverse=*/true,
                                                      /*return_counts=*/false);
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

  // One pass over the pixels with per-thread accumulators, summed in thread
  // order: the result does not depend on the scheduling.
  static at::Tensor segment_stats(const NcutPixelStats& pixels, int64_t count,
                                  const NcutSegments& seg, const at::TensorOptions& options) {
    const int64_t cols = pixels.cols();
    const int64_t* idx = seg.index.data_ptr<int64_t>();
    const int threads = at::get_num_threads();
    std::vector<double> partial(size_t(threads) * seg.count * cols, 0.0);
    at::parallel_for(0, count, 4096, [&](int64_t begin, int64_t end) {
      double* acc = partial.data() + size_t(at::get_thread_num()) * seg.count * cols;
      for (int64_t p = begin; p < end; ++p) pixels.add_to(acc + idx[p] * cols, p);
    });
    auto stats = at::zeros({seg.count, cols}, options);
    double* out = stats.data_ptr<double>();
    for (int t = 0; t < threads; ++t) {
      const double* acc = partial.data() + size_t(t) * seg.count * cols;
      for (int64_t e = 0; e < seg.count * cols; ++e) out[e] += acc[e];
    }
    return stats;
  }
};

}  // namespace matbp::ops::generic

namespace matbp::ops::cpu {

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("ncut_projector_distance_with_basis",
         &generic::ncut_projector_distance_with_basis<CpuBackend>);
  m.impl("ncut_projector_distance_backward",
         &generic::ncut_projector_distance_backward<CpuBackend>);
}

}  // namespace matbp::ops::cpu
