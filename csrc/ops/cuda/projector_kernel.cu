// CUDA kernels of matbp::projector_with_eig and matbp::projector_backward
// (device-generic, generic/eigen_ops.h; cuSOLVER decomposes).

#include <torch/library.h>

#include "../generic/eigen_ops.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> projector_with_eig_cuda(
    const at::Tensor& A, std::optional<double> rtol) {
  auto guard = guard_device_of(A, "matbp.projector", "A");
  return generic::projector_with_eig<CudaBackend>(A, rtol);
}

at::Tensor projector_backward_cuda(const at::Tensor& gP, const at::Tensor& L, const at::Tensor& V,
                                   std::optional<double> rtol) {
  auto guard = guard_device_of(V, "matbp.projector_backward", "V");
  return generic::projector_backward<CudaBackend>(gP, L, V, rtol);
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("projector_with_eig", &projector_with_eig_cuda);
  m.impl("projector_backward", &projector_backward_cuda);
}

}  // namespace matbp::ops::cuda
