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

using Tensor2 = std::tuple<at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using OptionalTensor = std::optional<at::Tensor>;

// The forward operators. Each differentiable one also has a _with_eig (or
// _with_basis) form, which returns what its backward needs besides the
// result, and a _backward form: together they are a training step without
// Python's autograd (which registers the same pair).

// compute_dtype (sym_eig, sym_fn): unset computes in float64, whatever the
// input's dtype; at::kFloat is the opt-in float32 compute mode (CPU only).
using ComputeDtype = std::optional<at::ScalarType>;

inline Tensor2 sym_eig(const at::Tensor& A, ComputeDtype compute_dtype = std::nullopt) {
  static auto h = detail::op<Tensor2(const at::Tensor&, ComputeDtype)>("matbp::sym_eig");
  return h.call(A, compute_dtype);
}

inline at::Tensor sym_eig_backward(const OptionalTensor& gL, const OptionalTensor& gV,
                                   const at::Tensor& L, const at::Tensor& V,
                                   ComputeDtype compute_dtype = std::nullopt) {
  static auto h = detail::op<at::Tensor(const OptionalTensor&, const OptionalTensor&,
                                        const at::Tensor&, const at::Tensor&, ComputeDtype)>(
      "matbp::sym_eig_backward");
  return h.call(gL, gV, L, V, compute_dtype);
}

inline Tensor3 svd(const at::Tensor& X) {
  static auto h = detail::op<Tensor3(const at::Tensor&)>("matbp::svd");
  return h.call(X);
}

inline at::Tensor svd_backward(const OptionalTensor& gU, const OptionalTensor& gS,
                               const OptionalTensor& gV, const at::Tensor& U, const at::Tensor& S,
                               const at::Tensor& V) {
  static auto h = detail::op<at::Tensor(const OptionalTensor&, const OptionalTensor&,
                                        const OptionalTensor&, const at::Tensor&,
                                        const at::Tensor&, const at::Tensor&)>(
      "matbp::svd_backward");
  return h.call(gU, gS, gV, U, S, V);
}

inline at::Tensor sym_fn(const at::Tensor& A, c10::string_view fn, double p = 1.0,
                         ComputeDtype compute_dtype = std::nullopt) {
  static auto h = detail::op<at::Tensor(const at::Tensor&, c10::string_view, double,
                                        ComputeDtype)>("matbp::sym_fn");
  return h.call(A, fn, p, compute_dtype);
}

// (F, L, V): F = f(A) in A's dtype, the eigendecomposition L, V in the
// compute dtype (float64 unless compute_dtype says float32), which
// sym_fn_backward follows.
inline Tensor3 sym_fn_with_eig(const at::Tensor& A, c10::string_view fn, double p = 1.0,
                               ComputeDtype compute_dtype = std::nullopt) {
  static auto h = detail::op<Tensor3(const at::Tensor&, c10::string_view, double, ComputeDtype)>(
      "matbp::sym_fn_with_eig");
  return h.call(A, fn, p, compute_dtype);
}

inline at::Tensor sym_fn_backward(const at::Tensor& gF, const at::Tensor& L, const at::Tensor& V,
                                  c10::string_view fn, double p = 1.0) {
  static auto h = detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        c10::string_view, double)>("matbp::sym_fn_backward");
  return h.call(gF, L, V, fn, p);
}

// D²f(A)[G, H], the second derivative of f(A) (symmetric in G and H): the
// derivative of <H, sym_fn_backward(G, L, V)> in A, i.e. sym_fn's double backward.
inline at::Tensor sym_fn_second_derivative(const at::Tensor& G, const at::Tensor& H,
                                           const at::Tensor& L, const at::Tensor& V,
                                           c10::string_view fn, double p = 1.0) {
  static auto h =
      detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, c10::string_view, double)>(
          "matbp::sym_fn_second_derivative");
  return h.call(G, H, L, V, fn, p);
}

inline at::Tensor o2p_log(const at::Tensor& X, double eps = 1e-3) {
  static auto h = detail::op<at::Tensor(const at::Tensor&, double)>("matbp::o2p_log");
  return h.call(X, eps);
}

// (C, S, U, Y): C = log(XᵀX + eps I) and the Gram eigendecomposition of the
// path taken (docs/design.md §4).
inline Tensor4 o2p_log_with_eig(const at::Tensor& X, double eps = 1e-3) {
  static auto h = detail::op<Tensor4(const at::Tensor&, double)>("matbp::o2p_log_with_eig");
  return h.call(X, eps);
}

inline at::Tensor o2p_log_backward(const at::Tensor& gC, const at::Tensor& X, const at::Tensor& S,
                                   const at::Tensor& U, const at::Tensor& Y, double eps) {
  static auto h = detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const at::Tensor&, const at::Tensor&, double)>(
      "matbp::o2p_log_backward");
  return h.call(gC, X, S, U, Y, eps);
}

// The tangent of C along dX (forward-mode AD), the adjoint of o2p_log_backward.
inline at::Tensor o2p_log_jvp(const at::Tensor& dX, const at::Tensor& X, const at::Tensor& S,
                              const at::Tensor& U, const at::Tensor& Y, double eps) {
  static auto h = detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const at::Tensor&, const at::Tensor&, double)>(
      "matbp::o2p_log_jvp");
  return h.call(dX, X, S, U, Y, eps);
}

inline at::Tensor projector(const at::Tensor& A, std::optional<double> rtol = std::nullopt) {
  static auto h =
      detail::op<at::Tensor(const at::Tensor&, std::optional<double>)>("matbp::projector");
  return h.call(A, rtol);
}

inline Tensor3 projector_with_eig(const at::Tensor& A, std::optional<double> rtol = std::nullopt) {
  static auto h = detail::op<Tensor3(const at::Tensor&, std::optional<double>)>(
      "matbp::projector_with_eig");
  return h.call(A, rtol);
}

inline at::Tensor projector_backward(const at::Tensor& gP, const at::Tensor& L,
                                     const at::Tensor& V, std::optional<double> rtol) {
  static auto h = detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        std::optional<double>)>("matbp::projector_backward");
  return h.call(gP, L, V, rtol);
}

// D²Π(A)[G, H] at locally constant rank: projector's double backward.
inline at::Tensor projector_second_derivative(const at::Tensor& G, const at::Tensor& H,
                                              const at::Tensor& L, const at::Tensor& V,
                                              std::optional<double> rtol) {
  static auto h = detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const at::Tensor&, std::optional<double>)>(
      "matbp::projector_second_derivative");
  return h.call(G, H, L, V, rtol);
}

// The normalized-cuts core: ½‖Π_{Y Λ Yᵀ} − Π_w‖²_F, Π_w the projector onto
// the weighted segment indicators (weights ∘ e_k). J2 is (X, 1); J1 is
// (D^{-1/2} X, D^{1/2}) (docs/design.md §4).
inline at::Tensor ncut_projector_distance(const at::Tensor& Y, const at::Tensor& weights,
                                          const at::Tensor& labels,
                                          const OptionalTensor& Lambda = std::nullopt,
                                          std::optional<double> rtol = std::nullopt) {
  static auto h = detail::op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                        const OptionalTensor&, std::optional<double>)>(
      "matbp::ncut_projector_distance");
  return h.call(Y, weights, labels, Lambda, rtol);
}

// (J, rank, Q, P0, mu_pinv, segment_index, segment_image, segment_stats):
// the distance, the numerical rank and the basis its backward reuses.
using NcutBasis = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor, at::Tensor, at::Tensor>;

inline NcutBasis ncut_projector_distance_with_basis(const at::Tensor& Y, const at::Tensor& weights,
                                                    const at::Tensor& labels,
                                                    const OptionalTensor& Lambda = std::nullopt,
                                                    std::optional<double> rtol = std::nullopt) {
  static auto h = detail::op<NcutBasis(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                       const OptionalTensor&, std::optional<double>)>(
      "matbp::ncut_projector_distance_with_basis");
  return h.call(Y, weights, labels, Lambda, rtol);
}

// (gY, gweights, gLambda) from the basis of ncut_projector_distance_with_basis.
inline Tensor3 ncut_projector_distance_backward(const at::Tensor& gJ, const at::Tensor& weights,
                                                const OptionalTensor& Lambda, const NcutBasis& basis) {
  static auto h = detail::op<Tensor3(const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                                     const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
      "matbp::ncut_projector_distance_backward");
  const auto& [J, rank, Q, P0, mu_pinv, segment_index, segment_image, segment_stats] = basis;
  return h.call(gJ, weights, Lambda, Q, P0, mu_pinv, segment_index, segment_image, segment_stats);
}

}  // namespace matbp
