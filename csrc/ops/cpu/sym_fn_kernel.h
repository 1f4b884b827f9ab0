#pragma once

#include <ATen/core/Tensor.h>

#include "../../math/divided_differences.h"

namespace matbp::ops::cpu {

// Daleckii–Krein backward of f(A) = V f(L) V^T in float64:
// gA = V (F1 o V^T sym(gF) V) V^T, F1 the first divided differences of fn at L.
// Shared by sym_fn and the d x d path of o2p_log; `scale` multiplies gA for
// free (folded into the elementwise pass).
at::Tensor spectral_function_backward(const at::Tensor& gF64, const at::Tensor& L64,
                                      const at::Tensor& V64, math::SpectralFn fn, double p,
                                      double scale = 1.0);

}  // namespace matbp::ops::cpu
