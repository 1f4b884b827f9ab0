// The schemas of every matbp operator, in one TORCH_LIBRARY block. Kernels
// register per dispatch key in the backend folders (cpu/, cuda/); fake
// kernels and autograd are registered from Python (matbp/_ops.py).

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>

#include "../matbp.h"
#include "checks.h"
#include "sync_checks.h"

namespace matbp::ops {

namespace {

// The public spectral function returns f(A) alone; it forwards to
// sym_fn_with_eig, whose extra (float64) outputs L, V are what its backward
// needs, so the decomposition is never recomputed.
at::Tensor sym_fn(const at::Tensor& A, c10::string_view fn, double p,
                  std::optional<at::ScalarType> compute_dtype) {
  return std::get<0>(matbp::sym_fn_with_eig(A, fn, p, compute_dtype));
}

// o2p_log likewise forwards to o2p_log_with_eig, whose extra outputs are the
// Gram eigendecomposition its backward reuses.
at::Tensor o2p_log(const at::Tensor& X, double eps) {
  return std::get<0>(matbp::o2p_log_with_eig(X, eps));
}

at::Tensor projector(const at::Tensor& A, std::optional<double> rtol) {
  return std::get<0>(matbp::projector_with_eig(A, rtol));
}

at::Tensor ncut_projector_distance(const at::Tensor& Y, const at::Tensor& weights,
                                   const at::Tensor& labels,
                                   const std::optional<at::Tensor>& Lambda,
                                   std::optional<double> rtol) {
  return std::get<0>(matbp::ncut_projector_distance_with_basis(Y, weights, labels, Lambda, rtol));
}

}  // namespace

TORCH_LIBRARY(matbp, m) {
  // No tensor arguments: a catch-all kernel, callable from any device context.
  m.def("set_sync_checks(bool enabled) -> bool", &set_sync_checks);
  // compute_dtype: None (float64) or float32, the opt-in float32 compute mode.
  // Positional with a default, not keyword-only: torch.library's autocast
  // kernels refuse keyword arguments (the Python wrappers make it
  // keyword-only).
  m.def("sym_eig(Tensor A, ScalarType? compute_dtype=None) -> (Tensor L, Tensor V)");
  m.def(
      "sym_eig_backward(Tensor? gL, Tensor? gV, Tensor L, Tensor V, "
      "ScalarType? compute_dtype=None) -> Tensor");
  m.def("svd(Tensor X) -> (Tensor U, Tensor S, Tensor V)");
  m.def(
      "svd_backward(Tensor? gU, Tensor? gS, Tensor? gV, Tensor U, Tensor S, Tensor V) -> "
      "Tensor");
  m.def("sym_fn(Tensor A, str fn, float p=1.0, ScalarType? compute_dtype=None) -> Tensor");
  m.def(
      "sym_fn_with_eig(Tensor A, str fn, float p=1.0, ScalarType? compute_dtype=None) -> "
      "(Tensor F, Tensor L, Tensor V)");
  m.def("sym_fn_backward(Tensor gF, Tensor L, Tensor V, str fn, float p) -> Tensor");
  m.def(
      "sym_fn_second_derivative(Tensor G, Tensor H, Tensor L, Tensor V, str fn, float p) -> "
      "Tensor");
  m.def("o2p_log(Tensor X, float eps=1e-3) -> Tensor");
  m.def(
      "o2p_log_with_eig(Tensor X, float eps=1e-3) -> (Tensor C, Tensor S, Tensor U, Tensor Y)");
  m.def(
      "o2p_log_backward(Tensor gC, Tensor X, Tensor S, Tensor U, Tensor Y, float eps) -> Tensor");
  m.def("o2p_log_jvp(Tensor dX, Tensor X, Tensor S, Tensor U, Tensor Y, float eps) -> Tensor");
  m.def("projector(Tensor A, float? rtol=None) -> Tensor");
  m.def("projector_with_eig(Tensor A, float? rtol=None) -> (Tensor P, Tensor L, Tensor V)");
  m.def("projector_backward(Tensor gP, Tensor L, Tensor V, float? rtol) -> Tensor");
  m.def(
      "projector_second_derivative(Tensor G, Tensor H, Tensor L, Tensor V, float? rtol) -> "
      "Tensor");
  m.def(
      "ncut_projector_distance(Tensor Y, Tensor weights, Tensor labels, Tensor? Lambda=None, "
      "float? rtol=None) -> Tensor");
  m.def(
      "ncut_projector_distance_with_basis(Tensor Y, Tensor weights, Tensor labels, "
      "Tensor? Lambda=None, float? rtol=None) -> "
      "(Tensor J, Tensor rank, Tensor Q, Tensor P0, Tensor mu_pinv, Tensor segment_index, "
      "Tensor segment_image, Tensor segment_stats)");
  m.def(
      "ncut_projector_distance_backward(Tensor gJ, Tensor weights, Tensor? Lambda, Tensor Q, "
      "Tensor P0, Tensor mu_pinv, Tensor segment_index, Tensor segment_image, "
      "Tensor segment_stats) -> (Tensor gY, Tensor gweights, Tensor gLambda)");
}

TORCH_LIBRARY_IMPL(matbp, CompositeImplicitAutograd, m) {
  m.impl("sym_fn", &sym_fn);
  m.impl("o2p_log", &o2p_log);
  m.impl("projector", &projector);
  m.impl("ncut_projector_distance", &ncut_projector_distance);
}

}  // namespace matbp::ops
