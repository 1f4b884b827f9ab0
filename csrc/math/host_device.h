#pragma once

// Device-independent arithmetic is written once, in inline templates marked
// MATBP_HOST_DEVICE, and called both by the CPU loops and by the CUDA
// kernels. The CPU test suite therefore exercises the arithmetic the GPU runs.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define MATBP_HOST_DEVICE __host__ __device__
#else
#define MATBP_HOST_DEVICE
#endif

#include <cmath>

// A loop whose sum may be reassociated into SIMD lanes (host code under
// OpenMP; a plain loop elsewhere): the order of a floating-point sum is not
// otherwise the compiler's to change.
#define MATBP_PRAGMA(text) _Pragma(#text)
#if defined(_OPENMP) && !defined(__CUDA_ARCH__)
#define MATBP_SIMD_SUM(var) MATBP_PRAGMA(omp simd reduction(+ : var))
#else
#define MATBP_SIMD_SUM(var)
#endif

namespace matbp::math {

// std:: math functions are usable in device code under nvcc for float and
// double; these aliases keep the call sites identical in both compilers.
using std::abs;
using std::exp;
using std::expm1;
using std::fmax;
using std::fmin;
using std::isfinite;
using std::log;
using std::log1p;
using std::pow;
using std::sqrt;

// std::numeric_limits is not usable in device code without relaxed
// constexpr; these are the two constants the math needs.
template <typename T>
struct FloatConstants;
template <>
struct FloatConstants<float> {
  static constexpr float epsilon = 1.1920928955078125e-07f, smallest_normal = 1.17549435082228750797e-38f;
};
template <>
struct FloatConstants<double> {
  static constexpr double epsilon = 2.220446049250313e-16, smallest_normal = 2.2250738585072013830902e-308;
};

template <typename T>
MATBP_HOST_DEVICE constexpr T machine_epsilon() {
  return FloatConstants<T>::epsilon;
}
template <typename T>
MATBP_HOST_DEVICE constexpr T smallest_normal() {
  return FloatConstants<T>::smallest_normal;
}

}  // namespace matbp::math
