// CUDA kernels of matbp::sym_fn_with_eig and matbp::sym_fn_backward
// (device-generic, generic/eigen_ops.h; cuSOLVER decomposes).

#include <torch/library.h>

#include "../generic/eigen_ops.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> sym_fn_with_eig_cuda(const at::Tensor& A,
                                                                    c10::string_view fn,
                                                                    double p) {
  auto guard = guard_device_of(A, "matbp.sym_fn", "A");
  return generic::sym_fn_with_eig<CudaBackend>(A, fn, p);
}

at::Tensor sym_fn_backward_cuda(const at::Tensor& gF, const at::Tensor& L, const at::Tensor& V,
                                c10::string_view fn, double p) {
  auto guard = guard_device_of(V, "matbp.sym_fn_backward", "V");
  return generic::sym_fn_backward<CudaBackend>(gF, L, V, fn, p);
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("sym_fn_with_eig", &sym_fn_with_eig_cuda);
  m.impl("sym_fn_backward", &sym_fn_backward_cuda);
}

}  // namespace matbp::ops::cuda
