// CUDA kernels of matbp::svd (cuSOLVER gesvdj, cusolver.cpp) and
// matbp::svd_backward (device-generic, generic/eigen_ops.h).

#include <torch/library.h>

#include <string>

#include "../generic/eigen_ops.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_cuda(const at::Tensor& X) {
  constexpr const char* op = "matbp.svd";
  check_float_matrix(X, op, "X", /*square=*/false);
  auto guard = guard_device_of(X, op, "X");
  SvdResult svd = svd_cusolver(X, op);
  const bool raise = sync_checks_enabled();
  report_failures(svd.finite, raise, {svd.U, svd.S, svd.V}, [&](int64_t b) {
    return std::string(op) + ": argument 'X' contains NaN or Inf (matrix " + std::to_string(b) +
           " of the flattened batch)";
  });
  report_failures(svd.converged, raise, {svd.U, svd.S, svd.V}, [&](int64_t b) {
    return std::string(op) + ": cuSOLVER gesvdj failed to converge on matrix " +
           std::to_string(b) + " of the flattened batch";
  });
  const auto dtype = X.scalar_type();
  return {svd.U.to(dtype), svd.S.to(dtype), svd.V.to(dtype)};
}

at::Tensor svd_backward_cuda(const std::optional<at::Tensor>& gU,
                             const std::optional<at::Tensor>& gS,
                             const std::optional<at::Tensor>& gV, const at::Tensor& U,
                             const at::Tensor& S, const at::Tensor& V) {
  auto guard = guard_device_of(U, "matbp.svd_backward", "U");
  return generic::svd_backward<CudaBackend>(gU, gS, gV, U, S, V);
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("svd", &svd_cuda);
  m.impl("svd_backward", &svd_backward_cuda);
}

}  // namespace matbp::ops::cuda
