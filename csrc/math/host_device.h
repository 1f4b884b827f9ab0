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

}  // namespace matbp::math
