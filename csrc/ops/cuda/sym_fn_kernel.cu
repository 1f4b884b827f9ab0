// CUDA kernels of matbp::sym_fn_with_eig, matbp::sym_fn_backward and
// matbp::sym_fn_second_derivative
// (device-generic, generic/sym_fn.h; cuSOLVER decomposes).

#include <torch/library.h>

#include "../generic/sym_fn.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("sym_fn_with_eig",
         on_device_of<&generic::sym_fn_with_eig<CudaBackend>, 0, "matbp.sym_fn", "A", Narrow::First>());
  m.impl("sym_fn_backward",
         on_device_of<&generic::sym_fn_backward<CudaBackend>, 2, "matbp.sym_fn_backward", "V">());
  m.impl("sym_fn_second_derivative",
         on_device_of<&generic::sym_fn_second_derivative<CudaBackend>, 3,
                      "matbp.sym_fn_second_derivative", "V">());
}

}  // namespace matbp::ops::cuda
