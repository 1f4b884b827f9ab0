// CUDA kernels of matbp::sym_eig (cuSOLVER, cusolver.cpp) and
// matbp::sym_eig_backward (device-generic, generic/eigen_ops.h).

#include <torch/library.h>

#include <string>

#include "../generic/eigen_ops.h"
#include "cuda_backend.cuh"

namespace matbp::ops::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> sym_eig_cuda(const at::Tensor& A) {
  constexpr const char* op = "matbp.sym_eig";
  check_float_matrix(A, op, "A", /*square=*/true);
  auto guard = guard_device_of(A, op, "A");
  EigenResult eig = sym_eig_cusolver(A, op, "A");
  const bool raise = sync_checks_enabled();
  report_failures(eig.finite, raise, {eig.L, eig.V}, [&](int64_t b) {
    return std::string(op) + ": argument 'A' contains NaN or Inf (matrix " + std::to_string(b) +
           " of the flattened batch)";
  });
  report_failures(eig.converged, raise, {eig.L, eig.V}, [&](int64_t b) {
    return std::string(op) + ": cuSOLVER failed to converge on matrix " + std::to_string(b) +
           " of the flattened batch";
  });
  return {eig.L.to(A.scalar_type()), eig.V.to(A.scalar_type())};
}

at::Tensor sym_eig_backward_cuda(const std::optional<at::Tensor>& gL,
                                 const std::optional<at::Tensor>& gV, const at::Tensor& L,
                                 const at::Tensor& V) {
  auto guard = guard_device_of(V, "matbp.sym_eig_backward", "V");
  return generic::sym_eig_backward<CudaBackend>(gL, gV, L, V);
}

}  // namespace

TORCH_LIBRARY_IMPL(matbp, CUDA, m) {
  m.impl("sym_eig", &sym_eig_cuda);
  m.impl("sym_eig_backward", &sym_eig_backward_cuda);
}

}  // namespace matbp::ops::cuda
