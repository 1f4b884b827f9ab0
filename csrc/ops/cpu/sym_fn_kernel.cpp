// CPU kernels of matbp::sym_fn_with_eig, matbp::sym_fn_backward and
// matbp::sym_fn_second_derivative:
// f(A) = V f(L) V^T and its Daleckii–Krein backward
// gA = V (F1 o V^T sym(gF) V) V^T, F1 the first divided differences of f.
// The code is device-generic (generic/sym_fn.h); LAPACK decomposes.

#include <torch/library.h>

#include "../generic/sym_fn.h"
#include "cpu_backend.h"
#include "../low_precision.h"

namespace matbp::ops::cpu {

TORCH_LIBRARY_IMPL(matbp, CPU, m) {
  m.impl("sym_fn_with_eig", widening<&generic::sym_fn_with_eig<CpuBackend>, Narrow::First>());
  m.impl("sym_fn_backward", widening<&generic::sym_fn_backward<CpuBackend>>());
  m.impl("sym_fn_second_derivative",
         widening<&generic::sym_fn_second_derivative<CpuBackend>>());
}

}  // namespace matbp::ops::cpu
