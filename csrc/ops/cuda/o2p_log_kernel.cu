// CUDA kernels of matbp::o2p_log_with_eig and matbp::o2p_log_backward:
// the batched device-generic pipeline of generic/o2p_log.h, with cuSOLVER
// for the Gram eigendecompositions and cuBLAS (through ATen) for the GEMMs.

#include <torch/library.h>

#include "../generic/o2p_log.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("o2p_log_with_eig", on_device_of<&generic::o2p_log_with_eig<CudaBackend>, 0, "matbp.o2p_log", "X">());
  m.impl("o2p_log_backward",
         on_device_of<&generic::o2p_log_backward<CudaBackend>, 1, "matbp.o2p_log_backward", "X">());
  m.impl("o2p_log_jvp",
         on_device_of<&generic::o2p_log_jvp<CudaBackend>, 1, "matbp.o2p_log_jvp", "X">());
}

}  // namespace matbp::ops::cuda
