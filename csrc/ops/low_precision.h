#pragma once

// Half and bfloat16 arguments. Every op accepts them and computes as it does
// for float32 input (in float64 inside): the kernels themselves see float32
// and float64 only. widened() converts the half/bfloat16 tensor arguments of
// one kernel call to float32 and its float32 results back to that dtype; the
// float64 results (saved decompositions) stay float64, and so do the float32
// ones of the float32 compute mode (Narrow::First). Registered as
// widening<&kernel>() (CPU) and through on_device_of (CUDA).

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <limits>
#include <optional>
#include <tuple>
#include <utility>

namespace matbp::ops {

inline bool is_low_precision(const at::Tensor& t) {
  return t.defined() && (t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16);
}

namespace low_precision {

// The half/bfloat16 dtype of the kernel call in progress on this thread, set
// by widened(): the kernels see float32, tolerances want the caller's dtype.
inline thread_local std::optional<at::ScalarType> caller_dtype;

class CallerDtype {
 public:
  explicit CallerDtype(at::ScalarType dtype) : previous_(caller_dtype) { caller_dtype = dtype; }
  ~CallerDtype() { caller_dtype = previous_; }
  CallerDtype(const CallerDtype&) = delete;
  CallerDtype& operator=(const CallerDtype&) = delete;

 private:
  std::optional<at::ScalarType> previous_;
};

inline void find(std::optional<at::ScalarType>& low, const at::Tensor& t) {
  if (!low && is_low_precision(t)) low = t.scalar_type();
}
inline void find(std::optional<at::ScalarType>& low, const std::optional<at::Tensor>& t) {
  if (t.has_value()) find(low, *t);
}
template <typename T>
void find(std::optional<at::ScalarType>&, const T&) {}

inline at::Tensor widen(const at::Tensor& t) { return is_low_precision(t) ? t.to(at::kFloat) : t; }
inline std::optional<at::Tensor> widen(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(widen(*t)) : t;
}
template <typename T>
const T& widen(const T& x) {
  return x;
}

inline at::Tensor narrow(at::Tensor t, at::ScalarType low) {
  return t.scalar_type() == at::kFloat ? t.to(low) : t;
}
template <typename... Ts>
std::tuple<Ts...> narrow(std::tuple<Ts...> t, at::ScalarType low) {
  return std::apply([low](auto&... x) { return std::tuple<Ts...>(narrow(std::move(x), low)...); }, t);
}

// The first result only: the others are a decomposition in the compute
// dtype, float32 in the float32 compute mode, which half must not round.
template <typename T, typename... Ts>
std::tuple<T, Ts...> narrow_first(std::tuple<T, Ts...> t, at::ScalarType low) {
  std::get<0>(t) = narrow(std::move(std::get<0>(t)), low);
  return t;
}

}  // namespace low_precision

// Which float32 results widened() rounds back to the caller's dtype: all of
// them, or the first only (sym_fn_with_eig: L and V are of the compute dtype).
enum class Narrow { All, First };

// kernel(args...), with half/bfloat16 tensors computed as float32 (above).
template <Narrow kNarrow = Narrow::All, typename Kernel, typename... Args>
auto widened(const Kernel& kernel, Args&&... args) {
  std::optional<at::ScalarType> low;
  (low_precision::find(low, args), ...);
  if (!low) return kernel(std::forward<Args>(args)...);
  low_precision::CallerDtype caller(*low);
  if constexpr (kNarrow == Narrow::First) {
    return low_precision::narrow_first(kernel(low_precision::widen(args)...), *low);
  } else {
    return low_precision::narrow(kernel(low_precision::widen(args)...), *low);
  }
}

// The machine epsilon of the dtype the caller gave `t` in (before widening).
inline double input_unit_roundoff(const at::Tensor& t) {
  switch (low_precision::caller_dtype.value_or(t.scalar_type())) {
    case at::kHalf:
      return double(std::numeric_limits<c10::Half>::epsilon());
    case at::kBFloat16:
      return double(std::numeric_limits<c10::BFloat16>::epsilon());
    case at::kFloat:
      return double(std::numeric_limits<float>::epsilon());
    default:
      return std::numeric_limits<double>::epsilon();
  }
}

template <auto Kernel, Narrow kNarrow, typename R, typename... Args>
constexpr auto widening_signature(R (*)(Args...)) {
  return +[](Args... args) -> R { return widened<kNarrow>(Kernel, std::forward<Args>(args)...); };
}

// The kernel `Kernel` (a function pointer) behind widened(), with its signature.
template <auto Kernel, Narrow kNarrow = Narrow::All>
constexpr auto widening() {
  return widening_signature<Kernel, kNarrow>(Kernel);
}

}  // namespace matbp::ops
