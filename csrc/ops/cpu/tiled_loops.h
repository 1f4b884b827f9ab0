#pragma once

// Loops over the entries of an n x n row-major matrix in tiles, for the CPU
// pipelines' transposes, mirrors and pair functors.

#include <algorithm>
#include <cstdint>

namespace matbp::ops::cpu {

// f(i, j) for every 0 <= i < rows, 0 <= j < cols, in kTransposeTile x
// kTransposeTile tiles: the strided side of a transpose then stays within a
// few cache lines (a plain double loop misses on every strided access from
// n = 128 on).
constexpr int64_t kTransposeTile = 16;
template <typename F>
void for_each_entry_tiled(int64_t rows, int64_t cols, const F& f) {
  for (int64_t i0 = 0; i0 < rows; i0 += kTransposeTile)
    for (int64_t j0 = 0; j0 < cols; j0 += kTransposeTile) {
      const int64_t i1 = std::min(rows, i0 + kTransposeTile);
      const int64_t j1 = std::min(cols, j0 + kTransposeTile);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) f(i, j);
    }
}

// The same for 0 <= i <= j < n (a pair functor's entries (i, j) and (j, i)).
template <typename F>
void for_each_upper_entry_tiled(int64_t n, const F& f) {
  for (int64_t i0 = 0; i0 < n; i0 += kTransposeTile)
    for (int64_t j0 = i0; j0 < n; j0 += kTransposeTile) {
      const int64_t i1 = std::min(n, i0 + kTransposeTile), j1 = std::min(n, j0 + kTransposeTile);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = std::max(i, j0); j < j1; ++j) f(i, j);
    }
}

}  // namespace matbp::ops::cpu
