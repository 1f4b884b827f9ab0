// CUDA kernels of matbp::svd (cuSOLVER gesvdj, cusolver.cpp) and
// matbp::svd_backward (device-generic, generic/svd.h).

#include <torch/library.h>

#include <string>

#include "../generic/svd.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_cuda(const at::Tensor& X) {
  constexpr const char* op = "matbp.svd";
  check_float_matrix(X, op, "X", /*square=*/false);
  auto guard = guard_device_of(X, op, "X");
  SvdResult svd = svd_cusolver(X, op);
  const bool raise = sync_checks_enabled();
  report_decomposition_failures(svd.finite, svd.converged, raise, {svd.U, svd.S, svd.V}, op, "X",
                                "cuSOLVER gesvdj");
  const auto dtype = X.scalar_type();
  return {svd.U.to(dtype), svd.S.to(dtype), svd.V.to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("svd", widening<&svd_cuda>());
  m.impl("svd_backward", on_device_of<&generic::svd_backward<CudaBackend>, 3, "matbp.svd_backward", "U">());
}

}  // namespace matbp::ops::cuda
