#pragma once

// The backward shared by every op of the form F = V k(L) V^T with a
// divided-difference coupling: gA = V (K o sym(V^T gF V)) V^T, where
// K_ij = weight(b, i, j) is symmetric (called for i <= j only). One pass
// forms K and symmetrises; the four GEMMs go through ATen.

#include <ATen/ATen.h>

#include <utility>

#include "batch_loops.h"

namespace matbp::ops::cpu {

template <typename Weight>
at::Tensor eigenbasis_backward(const at::Tensor& gF64, const at::Tensor& V64, const Weight& weight) {
  const auto Vt = V64.mT();
  auto inner = at::matmul(at::matmul(Vt, gF64), V64).contiguous();
  transform_pairs_inplace(
      inner,
      [&](int64_t b, int64_t i, int64_t j, double m_ij, double m_ji) {
        const double e = weight(b, i, j) * 0.5 * (m_ij + m_ji);
        return std::pair<double, double>(e, e);
      },
      [&](int64_t b, int64_t i, double m_ii) { return weight(b, i, i) * m_ii; });
  return at::matmul(at::matmul(V64, inner), Vt);
}

}  // namespace matbp::ops::cpu
