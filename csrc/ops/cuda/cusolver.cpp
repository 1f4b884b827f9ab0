// cuSOLVER handles and the batched decompositions of the CUDA backend.

#include "cusolver.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstdint>
#include <mutex>
#include <vector>

namespace matbp::ops::cuda {
namespace {

const char* cusolver_status_name(cusolverStatus_t status) {
  switch (status) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "an unknown cuSOLVER status";
  }
}

// Free handles per device, shared by all threads; intentionally leaked so
// that no handle is destroyed after the CUDA context at process exit.
struct HandlePool {
  std::mutex mutex;
  std::vector<std::vector<cusolverDnHandle_t>> free_by_device;
};

HandlePool& pool() {
  static auto* instance = new HandlePool();
  return *instance;
}

// The handles a thread holds, one per device, returned to the pool when the
// thread ends.
struct ThreadHandles {
  std::vector<cusolverDnHandle_t> by_device;
  ~ThreadHandles() {
    auto& p = pool();
    std::lock_guard<std::mutex> lock(p.mutex);
    for (size_t d = 0; d < by_device.size(); ++d) {
      if (by_device[d] == nullptr) continue;
      if (p.free_by_device.size() <= d) p.free_by_device.resize(d + 1);
      p.free_by_device[d].push_back(by_device[d]);
    }
  }
};

int cusolver_runtime_version() {
  static const int version = [] {
    int v = 0;
    return cusolverGetVersion(&v) == CUSOLVER_STATUS_SUCCESS ? v : 0;
  }();
  return version;
}

// Releases cuSOLVER parameter objects when a call leaves scope, also on error.
struct SyevjParams {
  syevjInfo_t info = nullptr;
  SyevjParams(const char* op) { check_cusolver(cusolverDnCreateSyevjInfo(&info), op, "cusolverDnCreateSyevjInfo"); }
  ~SyevjParams() { if (info) cusolverDnDestroySyevjInfo(info); }
};
struct GesvdjParams {
  gesvdjInfo_t info = nullptr;
  GesvdjParams(const char* op) { check_cusolver(cusolverDnCreateGesvdjInfo(&info), op, "cusolverDnCreateGesvdjInfo"); }
  ~GesvdjParams() { if (info) cusolverDnDestroyGesvdjInfo(info); }
};
struct DnParams {
  cusolverDnParams_t params = nullptr;
  DnParams(const char* op) { check_cusolver(cusolverDnCreateParams(&params), op, "cusolverDnCreateParams"); }
  ~DnParams() { if (params) cusolverDnDestroyParams(params); }
};

at::Tensor device_workspace(size_t bytes, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(std::max<size_t>(bytes, 1))},
                   like.options().dtype(at::kByte));
}

// Per-matrix finiteness flags (B,) and a float64 copy of the batch (B, r, c)
// with non-finite matrices zeroed, which is what the solver overwrites.
std::pair<at::Tensor, at::Tensor> finite_copy(const at::Tensor& X, int64_t batch) {
  const int64_t r = X.size(-2), c = X.size(-1);
  const auto X64 = X.reshape({batch, r, c}).to(at::kDouble);
  const auto finite = at::isfinite(X64).reshape({batch, r * c}).all(1);
  auto work = at::where(finite.view({batch, 1, 1}), X64, at::zeros({}, X64.options())).contiguous();
  return {finite, work};
}

// syevjBatched takes n <= 32 only. MATBP_SYEVJ_MAX_N (0..32) moves the
// crossover to XsyevBatched down, to compare the two solvers on a GPU.
int64_t syevj_batched_max_n() {
  static const int64_t max_n = [] {
    constexpr int64_t kSolverLimit = 32;
    const char* env = std::getenv("MATBP_SYEVJ_MAX_N");
    if (env == nullptr || *env == '\0') return kSolverLimit;
    char* end = nullptr;
    const long value = std::strtol(env, &end, 10);
    TORCH_CHECK(end != env && *end == '\0' && value >= 0 && value <= kSolverLimit,
                "matbp: MATBP_SYEVJ_MAX_N must be an integer in [0, 32], got '", env, "'");
    return static_cast<int64_t>(value);
  }();
  return max_n;
}
constexpr int64_t kGesvdjBatchedMaxDim = 32;
// Batches larger than this go to the 32-bit batched solvers in chunks.
constexpr int64_t kMaxChunk = int64_t(1) << 20;

// syevjBatched: Jacobi, all matrices of a chunk in one launch, n <= 32.
void syevj_batched(double* a, double* w, int* info, int64_t batch, int n, const at::Tensor& like,
                   const char* op) {
  auto handle = current_solver_handle();
  SyevjParams params(op);
  check_cusolver(cusolverDnXsyevjSetSortEig(params.info, 1), op, "cusolverDnXsyevjSetSortEig");
  const int64_t nn = int64_t(n) * n;
  for (int64_t start = 0; start < batch; start += kMaxChunk) {
    const int chunk = static_cast<int>(std::min(kMaxChunk, batch - start));
    int lwork = 0;
    check_cusolver(cusolverDnDsyevjBatched_bufferSize(handle, CUSOLVER_EIG_MODE_VECTOR,
                                                      CUBLAS_FILL_MODE_UPPER, n, a + start * nn, n,
                                                      w + start * n, &lwork, params.info, chunk),
                   op, "cusolverDnDsyevjBatched_bufferSize");
    auto work = at::empty({std::max(lwork, 1)}, like.options().dtype(at::kDouble));
    check_cusolver(cusolverDnDsyevjBatched(handle, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER,
                                           n, a + start * nn, n, w + start * n,
                                           work.data_ptr<double>(), lwork, info + start,
                                           params.info, chunk),
                   op, "cusolverDnDsyevjBatched");
  }
}

// The 64-bit API: cusolverDnXsyevBatched where the runtime has it, else a
// loop of cusolverDnXsyevd (one launch sequence per matrix, still no sync).
void syev_64bit(double* a, double* w, int* info, int64_t batch, int64_t n, const at::Tensor& like,
                const char* op) {
  auto handle = current_solver_handle();
  DnParams params(op);
  size_t device_bytes = 0, host_bytes = 0;
#if defined(CUSOLVER_VERSION) && CUSOLVER_VERSION >= 11701
  if (cusolver_runtime_version() >= 11701) {
    check_cusolver(cusolverDnXsyevBatched_bufferSize(handle, params.params, CUSOLVER_EIG_MODE_VECTOR,
                                                     CUBLAS_FILL_MODE_UPPER, n, CUDA_R_64F, a, n,
                                                     CUDA_R_64F, w, CUDA_R_64F, &device_bytes,
                                                     &host_bytes, batch),
                   op, "cusolverDnXsyevBatched_bufferSize");
    auto device_work = device_workspace(device_bytes, like);
    std::vector<char> host_work(std::max<size_t>(host_bytes, 1));
    check_cusolver(cusolverDnXsyevBatched(handle, params.params, CUSOLVER_EIG_MODE_VECTOR,
                                          CUBLAS_FILL_MODE_UPPER, n, CUDA_R_64F, a, n, CUDA_R_64F, w,
                                          CUDA_R_64F, device_work.data_ptr(), device_bytes,
                                          host_work.data(), host_bytes, info, batch),
                   op, "cusolverDnXsyevBatched");
    return;
  }
#endif
  check_cusolver(cusolverDnXsyevd_bufferSize(handle, params.params, CUSOLVER_EIG_MODE_VECTOR,
                                             CUBLAS_FILL_MODE_UPPER, n, CUDA_R_64F, a, n,
                                             CUDA_R_64F, w, CUDA_R_64F, &device_bytes, &host_bytes),
                 op, "cusolverDnXsyevd_bufferSize");
  auto device_work = device_workspace(device_bytes, like);
  std::vector<char> host_work(std::max<size_t>(host_bytes, 1));
  for (int64_t b = 0; b < batch; ++b) {
    check_cusolver(cusolverDnXsyevd(handle, params.params, CUSOLVER_EIG_MODE_VECTOR,
                                    CUBLAS_FILL_MODE_UPPER, n, CUDA_R_64F, a + b * n * n, n,
                                    CUDA_R_64F, w + b * n, CUDA_R_64F, device_work.data_ptr(),
                                    device_bytes, host_work.data(), host_bytes, info + b),
                   op, "cusolverDnXsyevd");
  }
}

}  // namespace

void check_cusolver(cusolverStatus_t status, const char* op, const char* call) {
  TORCH_CHECK(status == CUSOLVER_STATUS_SUCCESS, op, ": ", call, " failed with ",
              cusolver_status_name(status), " (", static_cast<int>(status), ")");
}

cusolverDnHandle_t current_solver_handle() {
  thread_local ThreadHandles handles;
  const int device = c10::cuda::current_device();
  if (handles.by_device.size() <= static_cast<size_t>(device)) {
    handles.by_device.resize(device + 1, nullptr);
  }
  auto& handle = handles.by_device[device];
  if (handle == nullptr) {
    {
      auto& p = pool();
      std::lock_guard<std::mutex> lock(p.mutex);
      if (p.free_by_device.size() > static_cast<size_t>(device) &&
          !p.free_by_device[device].empty()) {
        handle = p.free_by_device[device].back();
        p.free_by_device[device].pop_back();
      }
    }
    if (handle == nullptr) {
      check_cusolver(cusolverDnCreate(&handle), "matbp", "cusolverDnCreate");
    }
  }
  check_cusolver(cusolverDnSetStream(handle, at::cuda::getCurrentCUDAStream()), "matbp",
                 "cusolverDnSetStream");
  return handle;
}

EigenResult sym_eig_cusolver(const at::Tensor& A, const char* op, const char* arg) {
  check_float_matrix(A, op, arg, /*square=*/true);
  TORCH_CHECK(A.is_cuda(), op, ": argument '", arg, "' must be a CUDA tensor here, got ",
              A.device());
  const int64_t n = A.size(-1), batch = batch_count(A);
  TORCH_CHECK(n <= INT_MAX, op, ": argument '", arg, "' is too large for cuSOLVER (n = ", n, ")");
  const auto opts = A.options().dtype(at::kDouble);
  if (batch == 0 || n == 0) {
    return {at::empty(with_trailing(A, {n}), opts), at::empty(with_trailing(A, {n, n}), opts),
            at::ones({batch}, opts.dtype(at::kBool)), at::ones({batch}, opts.dtype(at::kBool))};
  }
  auto [finite, work] = finite_copy(A, batch);
  auto W = at::empty({batch, n}, opts);
  auto info = at::zeros({batch}, opts.dtype(at::kInt));
  if (n <= syevj_batched_max_n()) {
    syevj_batched(work.data_ptr<double>(), W.data_ptr<double>(), info.data_ptr<int>(), batch,
                  static_cast<int>(n), A, op);
  } else {
    syev_64bit(work.data_ptr<double>(), W.data_ptr<double>(), info.data_ptr<int>(), batch, n, A,
               op);
  }
  // cuSOLVER's column-major eigenvectors, read row-major, are V^T.
  auto V = work.mT().contiguous();
  return {W.reshape(with_trailing(A, {n})), V.reshape(with_trailing(A, {n, n})), finite,
          info.eq(0)};
}

SvdResult svd_cusolver(const at::Tensor& X, const char* op) {
  check_float_matrix(X, op, "X", /*square=*/false);
  TORCH_CHECK(X.is_cuda(), op, ": argument 'X' must be a CUDA tensor here, got ", X.device());
  const int64_t m = X.size(-2), n = X.size(-1), k = std::min(m, n), batch = batch_count(X);
  TORCH_CHECK(m <= INT_MAX && n <= INT_MAX && m * n <= INT_MAX, op,
              ": argument 'X' is too large for cuSOLVER's gesvdj (", m, " x ", n, ")");
  const auto opts = X.options().dtype(at::kDouble);
  if (batch == 0 || k == 0) {
    return {at::zeros(with_trailing(X, {m, k}), opts), at::zeros(with_trailing(X, {k}), opts),
            at::zeros(with_trailing(X, {n, k}), opts), at::ones({batch}, opts.dtype(at::kBool)),
            at::ones({batch}, opts.dtype(at::kBool))};
  }
  // X (m x n) row-major is the n x m column-major matrix A' = X^T. Its SVD
  // A' = U' S V'^T gives X = V' S U'^T: X's U is V' (m x ., column-major)
  // and X's V is U' (n x ., column-major).
  auto [finite, work] = finite_copy(X, batch);
  auto info = at::zeros({batch}, opts.dtype(at::kInt));
  auto S = at::empty({batch, k}, opts);
  auto handle = current_solver_handle();
  GesvdjParams params(op);
  check_cusolver(cusolverDnXgesvdjSetSortEig(params.info, 1), op, "cusolverDnXgesvdjSetSortEig");
  const int rows = static_cast<int>(n), cols = static_cast<int>(m);  // of A'
  at::Tensor U, V;
  if (m <= kGesvdjBatchedMaxDim && n <= kGesvdjBatchedMaxDim) {
    // Full U' (n x n) and V' (m x m).
    auto Up = at::empty({batch, n, n}, opts);
    auto Vp = at::empty({batch, m, m}, opts);
    for (int64_t start = 0; start < batch; start += kMaxChunk) {
      const int chunk = static_cast<int>(std::min(kMaxChunk, batch - start));
      double* a = work.data_ptr<double>() + start * m * n;
      double* s = S.data_ptr<double>() + start * k;
      double* up = Up.data_ptr<double>() + start * n * n;
      double* vp = Vp.data_ptr<double>() + start * m * m;
      int lwork = 0;
      check_cusolver(cusolverDnDgesvdjBatched_bufferSize(handle, CUSOLVER_EIG_MODE_VECTOR, rows,
                                                         cols, a, rows, s, up, rows, vp, cols,
                                                         &lwork, params.info, chunk),
                     op, "cusolverDnDgesvdjBatched_bufferSize");
      auto ws = at::empty({std::max(lwork, 1)}, opts);
      check_cusolver(cusolverDnDgesvdjBatched(handle, CUSOLVER_EIG_MODE_VECTOR, rows, cols, a, rows,
                                              s, up, rows, vp, cols, ws.data_ptr<double>(), lwork,
                                              info.data_ptr<int>() + start, params.info, chunk),
                     op, "cusolverDnDgesvdjBatched");
    }
    // Column-major read row-major is the transpose; keep the first k columns.
    U = Vp.mT().narrow(-1, 0, k).contiguous();
    V = Up.mT().narrow(-1, 0, k).contiguous();
  } else {
    // Economy gesvdj per matrix: U' (n x k), V' (m x k).
    auto Up = at::empty({batch, k, n}, opts);
    auto Vp = at::empty({batch, k, m}, opts);
    int lwork = 0;
    check_cusolver(cusolverDnDgesvdj_bufferSize(handle, CUSOLVER_EIG_MODE_VECTOR, /*econ=*/1, rows,
                                                cols, work.data_ptr<double>(), rows,
                                                S.data_ptr<double>(), Up.data_ptr<double>(), rows,
                                                Vp.data_ptr<double>(), cols, &lwork, params.info),
                   op, "cusolverDnDgesvdj_bufferSize");
    auto ws = at::empty({std::max(lwork, 1)}, opts);
    for (int64_t b = 0; b < batch; ++b) {
      check_cusolver(cusolverDnDgesvdj(handle, CUSOLVER_EIG_MODE_VECTOR, /*econ=*/1, rows, cols,
                                       work.data_ptr<double>() + b * m * n, rows,
                                       S.data_ptr<double>() + b * k, Up.data_ptr<double>() + b * n * k,
                                       rows, Vp.data_ptr<double>() + b * m * k, cols,
                                       ws.data_ptr<double>(), lwork, info.data_ptr<int>() + b,
                                       params.info),
                     op, "cusolverDnDgesvdj");
    }
    U = Vp.mT().contiguous();
    V = Up.mT().contiguous();
  }
  return {U.reshape(with_trailing(X, {m, k})), S.reshape(with_trailing(X, {k})),
          V.reshape(with_trailing(X, {n, k})), finite, info.eq(0)};
}

}  // namespace matbp::ops::cuda
