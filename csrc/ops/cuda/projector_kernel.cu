// CUDA kernels of matbp::projector_with_eig, matbp::projector_backward and
// matbp::projector_second_derivative
// (device-generic, generic/projector.h; cuSOLVER decomposes).

#include <torch/library.h>

#include "../generic/projector.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("projector_with_eig",
         on_device_of<&generic::projector_with_eig<CudaBackend>, 0, "matbp.projector", "A">());
  m.impl("projector_backward",
         on_device_of<&generic::projector_backward<CudaBackend>, 2, "matbp.projector_backward", "V">());
  m.impl("projector_second_derivative",
         on_device_of<&generic::projector_second_derivative<CudaBackend>, 3,
                      "matbp.projector_second_derivative", "V">());
}

}  // namespace matbp::ops::cuda
