// The schemas of every matbp operator, in one TORCH_LIBRARY block. Kernels
// register per dispatch key in the backend folders (cpu/, cuda/); fake
// kernels and autograd are registered from Python (matbp/_ops.py).

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace matbp::ops {
namespace {

// The public spectral function returns f(A) alone; it forwards to
// sym_fn_with_eig, whose extra (float64) outputs L, V are what its backward
// needs, so the decomposition is never recomputed.
at::Tensor sym_fn(const at::Tensor& A, c10::string_view fn, double p) {
  static auto with_eig = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("matbp::sym_fn_with_eig", "")
                             .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                                 const at::Tensor&, c10::string_view, double)>();
  return std::get<0>(with_eig.call(A, fn, p));
}

// o2p_log likewise forwards to o2p_log_with_eig, whose extra outputs are the
// Gram eigendecomposition its backward reuses.
at::Tensor o2p_log(const at::Tensor& X, double eps) {
  static auto with_eig = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("matbp::o2p_log_with_eig", "")
                             .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                                 const at::Tensor&, double)>();
  return std::get<0>(with_eig.call(X, eps));
}

}  // namespace

TORCH_LIBRARY(matbp, m) {
  m.def("sym_eig(Tensor A) -> (Tensor L, Tensor V)");
  m.def("sym_eig_backward(Tensor? gL, Tensor? gV, Tensor L, Tensor V) -> Tensor");
  m.def("svd(Tensor X) -> (Tensor U, Tensor S, Tensor V)");
  m.def(
      "svd_backward(Tensor? gU, Tensor? gS, Tensor? gV, Tensor U, Tensor S, Tensor V) -> "
      "Tensor");
  m.def("sym_fn(Tensor A, str fn, float p=1.0) -> Tensor");
  m.def("sym_fn_with_eig(Tensor A, str fn, float p=1.0) -> (Tensor F, Tensor L, Tensor V)");
  m.def("sym_fn_backward(Tensor gF, Tensor L, Tensor V, str fn, float p) -> Tensor");
  m.def("o2p_log(Tensor X, float eps=1e-3) -> Tensor");
  m.def(
      "o2p_log_with_eig(Tensor X, float eps=1e-3) -> (Tensor C, Tensor S, Tensor U, Tensor Y)");
  m.def(
      "o2p_log_backward(Tensor gC, Tensor X, Tensor S, Tensor U, Tensor Y, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(matbp, CompositeImplicitAutograd, m) {
  m.impl("sym_fn", &sym_fn);
  m.impl("o2p_log", &o2p_log);
}

}  // namespace matbp::ops
