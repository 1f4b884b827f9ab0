#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace matbp::ops::cpu {

// Batched symmetric eigendecomposition computed in compute_dtype (float64,
// or float32 in the float32 compute mode; the solver for n is chosen in
// sym_eig_solver.h), results stored as out_dtype: L ascending (*, n),
// V (*, n, n) contiguous. `op` and `arg` name the calling op and the matrix
// in error messages.
std::tuple<at::Tensor, at::Tensor> sym_eig_solve(const at::Tensor& A, at::ScalarType out_dtype,
                                                  at::ScalarType compute_dtype, const char* op,
                                                  const char* arg = "A");

}  // namespace matbp::ops::cpu
