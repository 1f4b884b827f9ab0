// CUDA kernels of matbp::sym_eig (cuSOLVER, cusolver.cpp) and
// matbp::sym_eig_backward (device-generic, generic/sym_eig.h).

#include <torch/library.h>

#include <string>

#include "../generic/sym_eig.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> sym_eig_cuda(const at::Tensor& A,
                                                std::optional<at::ScalarType> compute_dtype) {
  constexpr const char* op = "matbp.sym_eig";
  check_float_matrix(A, op, "A", /*square=*/true);
  auto guard = guard_device_of(A, op, "A");
  EigenResult eig = CudaBackend::sym_eig(A, resolve_compute_dtype(compute_dtype, op), op, "A");
  const bool raise = sync_checks_enabled();
  report_decomposition_failures(eig.finite, eig.converged, raise, {eig.L, eig.V}, op, "A",
                                "cuSOLVER");
  return {eig.L.to(A.scalar_type()), eig.V.to(A.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("sym_eig", widening<&sym_eig_cuda>());
  m.impl("sym_eig_backward",
         on_device_of<&generic::sym_eig_backward<CudaBackend>, 3, "matbp.sym_eig_backward", "V">());
}

}  // namespace matbp::ops::cuda
