// CUDA kernels of matbp::o2p_log_with_eig and matbp::o2p_log_backward:
// the batched device-generic pipeline of generic/o2p_log.h, with cuSOLVER
// for the Gram eigendecompositions and cuBLAS (through ATen) for the GEMMs.

#include <torch/library.h>

#include "../generic/o2p_log.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> o2p_log_with_eig_cuda(
    const at::Tensor& X, double eps) {
  auto guard = guard_device_of(X, "matbp.o2p_log", "X");
  return generic::o2p_log_with_eig<CudaBackend>(X, eps);
}

at::Tensor o2p_log_backward_cuda(const at::Tensor& gC, const at::Tensor& X, const at::Tensor& S,
                                 const at::Tensor& U, const at::Tensor& Y, double eps) {
  auto guard = guard_device_of(X, "matbp.o2p_log_backward", "X");
  return generic::o2p_log_backward<CudaBackend>(gC, X, S, U, Y, eps);
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("o2p_log_with_eig", &o2p_log_with_eig_cuda);
  m.impl("o2p_log_backward", &o2p_log_backward_cuda);
}

}  // namespace matbp::ops::cuda
