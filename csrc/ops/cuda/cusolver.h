#pragma once

// cuSOLVER for the CUDA backend: a cached solver handle per device and
// thread, status checks that name the op, and the batched decompositions.
// Workspaces come from the caching allocator, work is queued on the current
// stream, and per-matrix info stays on the device: nothing here waits for
// the GPU (the gesvdj loop for large matrices aside, see svd_cusolver).

#include <ATen/core/Tensor.h>
#include <cusolverDn.h>

#include <tuple>

#include "../generic/backend.h"

namespace matbp::ops::cuda {

// The calling thread's handle for the current device, bound to the current
// stream. Handles are created on first use and recycled when threads end,
// never destroyed (a handle may outlive the CUDA context at exit).
cusolverDnHandle_t current_solver_handle();

void check_cusolver(cusolverStatus_t status, const char* op, const char* call);

// Symmetric eigendecomposition of (*, n, n) float32/float64 CUDA matrices
// (the lower triangle is read, as on the CPU), in float64: syevjBatched for
// n <= 32, cusolverDnXsyevBatched above (cuSOLVER >= 11.7.1; else a loop of
// Xsyevd; MATBP_SYEVJ_MAX_N lowers the crossover). Non-finite matrices are not handed to the solver: their flags
// are cleared instead.
EigenResult sym_eig_cusolver(const at::Tensor& A, const char* op, const char* arg);

// Thin SVD of (*, m, n) float32/float64 CUDA matrices in float64:
// U (*, m, k), S (*, k) descending, V (*, n, k), k = min(m, n), contiguous;
// finite/converged flags over the flattened batch. gesvdjBatched when
// m, n <= 32, else one gesvdj per matrix.
struct SvdResult {
  at::Tensor U, S, V;
  at::Tensor finite, converged;
};
SvdResult svd_cusolver(const at::Tensor& X, const char* op);

}  // namespace matbp::ops::cuda
