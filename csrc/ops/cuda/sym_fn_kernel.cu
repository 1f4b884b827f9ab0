// CUDA kernels of matbp::sym_fn_with_eig and matbp::sym_fn_backward
// (device-generic, generic/sym_fn.h; cuSOLVER decomposes).

#include <torch/library.h>

#include "../generic/sym_fn.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("sym_fn_with_eig", on_device_of<&generic::sym_fn_with_eig<CudaBackend>, 0, "matbp.sym_fn", "A">());
  m.impl("sym_fn_backward",
         on_device_of<&generic::sym_fn_backward<CudaBackend>, 2, "matbp.sym_fn_backward", "V">());
}

}  // namespace matbp::ops::cuda
