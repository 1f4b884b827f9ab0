#pragma once

// The matbp operators for C++ (libtorch) users of libmatbp: typed calls
// through the dispatcher, so they reach whichever backend kernel the inputs'
// device selects. Linking libmatbp (with --no-as-needed: it registers its
// operators from static initializers) makes them available.

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>

namespace matbp {

namespace detail {
template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}
}  // namespace detail

inline std::tuple<at::Tensor, at::Tensor> sym_eig(const at::Tensor& A) {
  static auto h = detail::op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&)>("matbp::sym_eig");
  return h.call(A);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> svd(const at::Tensor& X) {
  static auto h =
      detail::op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&)>("matbp::svd");
  return h.call(X);
}

inline at::Tensor sym_fn(const at::Tensor& A, c10::string_view fn, double p = 1.0) {
  static auto h = detail::op<at::Tensor(const at::Tensor&, c10::string_view, double)>("matbp::sym_fn");
  return h.call(A, fn, p);
}

inline at::Tensor o2p_log(const at::Tensor& X, double eps = 1e-3) {
  static auto h = detail::op<at::Tensor(const at::Tensor&, double)>("matbp::o2p_log");
  return h.call(X, eps);
}

inline at::Tensor projector(const at::Tensor& A, std::optional<double> rtol = std::nullopt) {
  static auto h =
      detail::op<at::Tensor(const at::Tensor&, std::optional<double>)>("matbp::projector");
  return h.call(A, rtol);
}

}  // namespace matbp
