#pragma once

// Argument checks shared by every op. Messages name the op ("matbp.sym_eig"),
// the argument and what was expected, so a user can act on them.

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <climits>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace matbp::ops {

// Whether an optional tensor argument was passed.
inline bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

inline void check_float_dtype(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.defined(), op, ": argument '", arg, "' is undefined");
  const auto dtype = t.scalar_type();
  // Half and bfloat16 arrive here as float32 (low_precision.h).
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op, ": argument '", arg,
              "' must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
              dtype);
}

// A float32/float64 tensor of at least 2 dims, square if asked.
inline void check_float_matrix(const at::Tensor& t, const char* op, const char* arg,
                               bool square) {
  check_float_dtype(t, op, arg);
  TORCH_CHECK(t.dim() >= 2, op, ": argument '", arg,
              "' must be a batch of matrices with shape (*, m, n), got a ", t.dim(),
              "-dimensional tensor");
  if (square) {
    TORCH_CHECK(t.size(-1) == t.size(-2), op, ": argument '", arg,
                "' must be a batch of square matrices (*, n, n), got shape ", t.sizes());
  }
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                              const char* b_name, const char* op) {
  TORCH_CHECK(a.device() == b.device(), op, ": arguments '", a_name, "' and '", b_name,
              "' must be on the same device, got ", a.device(), " and ", b.device());
}

// A float32/float64 argument whose shape is fixed by another one, `ref`:
// exactly `shape`, on ref's device. Backward ops check every argument this
// way before touching memory, since their kernels index one tensor by the
// sizes of another.
inline void check_fits(const at::Tensor& t, const char* op, const char* arg,
                       at::IntArrayRef shape, const at::Tensor& ref, const char* ref_arg) {
  check_float_dtype(t, op, arg);
  check_same_device(t, arg, ref, ref_arg, op);
  TORCH_CHECK(t.sizes() == shape, op, ": argument '", arg, "' must have shape ", shape,
              " to match '", ref_arg, "' of shape ", ref.sizes(), ", got ", t.sizes());
}

// The batch sizes of (*, r, c) matrices followed by `trailing`.
inline std::vector<int64_t> with_trailing(const at::Tensor& t, std::vector<int64_t> trailing) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end() - 2);
  shape.insert(shape.end(), trailing.begin(), trailing.end());
  return shape;
}

// LAPACK takes 32-bit integers: refuse sizes whose arrays or workspaces
// would overflow them rather than let LAPACK write out of bounds.
inline void check_lapack_size(int64_t elements, const char* op, const char* what) {
  TORCH_CHECK(elements <= INT_MAX, op, ": ", what, " needs ", elements,
              " elements, more than 32-bit LAPACK integers can address (", INT_MAX, ")");
}

// The compute_dtype argument (sym_eig, sym_fn, projector): None computes in
// float64, the default for every input dtype; float32 is the opt-in float32
// compute mode (docs/design.md, "dtype policy").
inline at::ScalarType resolve_compute_dtype(std::optional<at::ScalarType> dtype, const char* op) {
  if (!dtype.has_value()) return at::kDouble;
  TORCH_CHECK(*dtype == at::kDouble || *dtype == at::kFloat, op,
              ": argument 'compute_dtype' must be torch.float32 or torch.float64 (or None: "
              "float64), got ",
              *dtype);
  return *dtype;
}

// "float32" or "float64", for messages.
inline std::string dtype_name(at::ScalarType compute) {
  return compute == at::kFloat ? "float32" : "float64";
}

// The unit roundoff (machine epsilon) of a compute dtype.
inline double unit_roundoff(at::ScalarType compute) {
  return compute == at::kFloat ? double(std::numeric_limits<float>::epsilon())
                               : std::numeric_limits<double>::epsilon();
}

}  // namespace matbp::ops
