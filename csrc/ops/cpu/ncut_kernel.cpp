// CPU kernels of matbp::ncut_projector_distance_with_basis and its backward.
// The op is device-generic (generic/ncut.h, which has the mathematics); this
// file holds the CPU forms of its device-specific primitives (NcutOps):
// label remap through a lookup table per image, the tall QR as one LAPACK
// call per cache-sized row block (no layout copies of the tall matrix, and
// Q_y never stored), segment statistics with per-thread accumulators (fast
// and deterministic), and the finiteness check.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "../generic/ncut.h"
#include "batch_loops.h"
#include "cpu_backend.h"
#include "lapack.h"
#include "../low_precision.h"

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

  // body(j, first, rows, work, lwork) for every row block j of a batch of
  // (m, d) matrices, in parallel, each thread with a LAPACK workspace: block
  // blk of matrix b covers `rows` rows from row `first` of the flattened
  // (B * m) rows, the last block taking the remainder (fewer than
  // 2 kNcutQrRows rows, at least d).
  template <typename Body>
  static void for_each_qr_block(int64_t batch, int64_t nblocks, int64_t m, int64_t d,
                                const Body& body) {
    const int lwork = cpu::lapack_qr_workspace(int(2 * kNcutQrRows), int(d));
    at::parallel_for(0, batch * nblocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> work(lwork);
      for (int64_t j = begin; j < end; ++j) {
        const int64_t b = j / nblocks, blk = j % nblocks, r0 = blk * kNcutQrRows;
        body(j, b * m + r0, blk + 1 == nblocks ? m - r0 : kNcutQrRows, work.data(), lwork);
      }
    });
  }

  // Each row block is transposed into column-major storage (in cache) and
  // factored in place by dgeqrf; the blocks' R factors are stacked and
  // factored again. `blocks` keeps the reflectors, (B, m * d), block by block.
  static NcutQr tall_skinny_qr(const at::Tensor& Y) {
    const int64_t batch = Y.size(0), m = Y.size(1), d = Y.size(2);
    if (!ncut_qr_blocked(m, d)) return ncut_tall_skinny_qr_aten(Y);
    const int64_t nblocks = m / kNcutQrRows;
    const auto Yc = Y.contiguous();
    auto blocks = at::empty({batch, m * d}, Y.options());
    auto tau = at::empty({batch * nblocks, d}, Y.options());
    auto stacked = at::empty({batch, nblocks * d, d}, Y.options());
    const double* y = Yc.data_ptr<double>();
    double* a_all = blocks.data_ptr<double>();
    double* tau_all = tau.data_ptr<double>();
    double* r_all = stacked.data_ptr<double>();
    for_each_qr_block(batch, nblocks, m, d, [&](int64_t j, int64_t first, int64_t rows,
                                                double* work, int lwork) {
      const double* src = y + first * d;
      double* a = a_all + first * d;
      // Column by column: contiguous writes (rows apart, a power of two,
      // would all map to one cache set).
      for (int64_t c = 0; c < d; ++c)
        for (int64_t i = 0; i < rows; ++i) a[c * rows + i] = src[i * d + c];
      int info = 0;
      cpu::lapack_geqrf(int(rows), int(d), a, int(rows), tau_all + j * d, work, lwork, &info);
      TORCH_CHECK(info == 0, kNcutOp, ": LAPACK dgeqrf failed with info = ", info);
      double* r = r_all + j * d * d;
      for (int64_t row = 0; row < d; ++row)
        for (int64_t c = 0; c < d; ++c) r[row * d + c] = c >= row ? a[c * rows + row] : 0.0;
    });
    auto [top, R] = at::linalg_qr(stacked, "reduced");
    return {R, blocks, tau, top, m};
  }

  // Q_y C block by block: dorgqr forms Q_b in place (consuming the
  // reflectors) and one GEMM writes Q_b (Q_top,b C) into the block's rows.
  static at::Tensor basis(const NcutQr& qr, const at::Tensor& C) {
    if (!qr.tau.defined()) return ncut_basis_aten(qr, C);
    const int64_t batch = C.size(0), k = C.size(-1), d = qr.R.size(-1), m = qr.m;
    const int64_t nblocks = qr.top.size(1) / d;
    const auto top_c = at::matmul(qr.top, C).contiguous();  // (B, nblocks * d, k)
    auto Q = at::empty({batch, m, k}, C.options());
    double* a_all = qr.blocks.data_ptr<double>();
    const double* tau_all = qr.tau.data_ptr<double>();
    const double* c_all = top_c.data_ptr<double>();
    double* q = Q.data_ptr<double>();
    for_each_qr_block(batch, nblocks, m, d, [&](int64_t j, int64_t first, int64_t rows,
                                                double* work, int lwork) {
      double* a = a_all + first * d;
      int info = 0;
      cpu::lapack_orgqr(int(rows), int(d), a, int(rows), tau_all + j * d, work, lwork, &info);
      TORCH_CHECK(info == 0, kNcutOp, ": LAPACK dorgqr failed with info = ", info);
      // Row-major Q rows = (column-major Q_b, i.e. row-major Q_b^T)^T (Q_top,b C).
      cpu::gemm_row_major(/*trans_a=*/true, /*trans_b=*/false, int(rows), int(k), int(d), 1.0, a,
                          int(rows), c_all + j * d * k, int(k), 0.0, q + first * k, int(k));
    });
    return Q;
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
         widening<&generic::ncut_projector_distance_with_basis<CpuBackend>>());
  m.impl("ncut_projector_distance_backward",
         widening<&generic::ncut_projector_distance_backward<CpuBackend>>());
}

}  // namespace matbp::ops::cpu
