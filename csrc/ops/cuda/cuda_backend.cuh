#pragma once

// The CUDA Backend of the device-generic ops (generic/backend.h): cuSOLVER
// for the eigensolver (cusolver.h), grid-stride kernels on the current
// stream for the elementwise loops. Nothing here waits for the device.

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <utility>

#include "../generic/backend.h"
#include "../low_precision.h"
#include "cusolver.h"

namespace matbp::ops::cuda {

constexpr int kThreadsPerBlock = 256;

template <typename F>
__global__ void for_each_kernel(int64_t count, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < count; idx += stride) {
    f(idx);
  }
}

// One thread per entry (b, i, j); those with i > j have nothing to do, which
// keeps the index arithmetic trivial and the reads of row i coalesced.
template <typename F>
__global__ void for_each_pair_kernel(int64_t batch, int64_t n, F f) {
  const int64_t nn = n * n, count = batch * nn;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < count; idx += stride) {
    const int64_t b = idx / nn, r = idx - b * nn, i = r / n, j = r - i * n;
    if (i <= j) f(b, i, j);
  }
}

// Enough blocks to fill the device a few times over; the kernels stride.
inline unsigned int blocks_for(int64_t count) {
  const int64_t wanted = (count + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const int64_t cap = int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

struct CudaBackend {
  static constexpr bool kRaisesAtOnce = false;

  // The float32 compute mode has no cuSOLVER path yet: it is refused rather
  // than computed in float64 under a float32 name.
  static EigenResult sym_eig(const at::Tensor& A, at::ScalarType compute, const char* op,
                             const char* arg) {
    TORCH_CHECK(compute == at::kDouble, op,
                ": compute_dtype=torch.float32 is not implemented on CUDA yet (only on the "
                "CPU); on CUDA leave compute_dtype unset (float64)");
    return sym_eig_cusolver(A, op, arg);
  }

  template <typename Inner>
  static EigenbasisProduct eigenbasis_sandwich(const at::Tensor& G, const at::Tensor& V,
                                               Rotation rotation, const Inner& inner) {
    return batched_eigenbasis_sandwich<CudaBackend>(G, V, rotation, inner);
  }

  static EigenbasisProduct eigen_compose(const at::Tensor& V, const at::Tensor& d) {
    return batched_eigen_compose(V, d);
  }

  template <typename F>
  static void for_each(int64_t count, const F& f) {
    if (count <= 0) return;
    for_each_kernel<<<blocks_for(count), kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
        count, f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename F>
  static void for_each_pair(int64_t batch, int64_t n, const F& f) {
    if (batch <= 0 || n <= 0) return;
    for_each_pair_kernel<<<blocks_for(batch * n * n), kThreadsPerBlock, 0,
                           at::cuda::getCurrentCUDAStream()>>>(batch, n, f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

// Runs an op's generic kernel with the tensor's device current (cuda:1 too)
// and checks that it is a CUDA tensor.
inline c10::cuda::CUDAGuard guard_device_of(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_cuda(), op, ": argument '", arg, "' must be a CUDA tensor here, got ",
              t.device());
  return c10::cuda::CUDAGuard(t.device());
}

// A string literal as a template argument (the op and argument names of
// on_device_of).
template <std::size_t N>
struct Name {
  constexpr Name(const char (&s)[N]) {
    for (std::size_t i = 0; i < N; ++i) text[i] = s[i];
  }
  char text[N];
};

// The CUDA kernel of a device-generic op: `Generic` (instantiated over
// CudaBackend) run under a guard on the device of its argument number
// `kArg`, which must be a CUDA tensor (named kArgName, op kOp, in the
// message otherwise), half and bfloat16 computed as float32 (widened,
// low_precision.h). Registered as
//   on_device_of<&generic::f<CudaBackend>, kArg, "matbp.f", "A">().
template <auto Generic, std::size_t kArg, Name kOp, Name kArgName, Narrow kNarrow, typename R,
          typename... Args>
constexpr auto on_device_of_signature(R (*)(Args...)) {
  return +[](Args... args) -> R {
    auto guard =
        guard_device_of(std::get<kArg>(std::forward_as_tuple(args...)), kOp.text, kArgName.text);
    return widened<kNarrow>(Generic, std::forward<Args>(args)...);
  };
}

template <auto Generic, std::size_t kArg, Name kOp, Name kArgName, Narrow kNarrow = Narrow::All>
constexpr auto on_device_of() {
  return on_device_of_signature<Generic, kArg, kOp, kArgName, kNarrow>(Generic);
}

}  // namespace matbp::ops::cuda
