#pragma once

// The CPU symmetric eigensolver, chosen here and nowhere else:
//   n <= sym_eig_ql_max_n(): sym_eig_ql (sym_eig_ql.h), sym_eig_ql_lanes matrices of
//     the batch at a time, one per SIMD lane;
//   larger n: LAPACK dsyevd (MKL in the torch wheel), one matrix per call.
//
// Why the crossover is where it is: bench/bench_sym_eig.py times matbp's
// forward with the default choice ("sym_eig fwd") and held to LAPACK
// ("sym_eig fwd lapack", MATBP_QL_MAX_N=0) against the same torch.linalg.eigh
// in one process (bench/results/sym_eig_cpu.md). On the 2-core Intel Xeon
// (AVX-512, Sapphire Rapids class) build machine, float64, B = 256, one
// thread, matbp/torch came to 0.30 at n = 8, 0.33 at 16, 0.45 at 32, 0.64
// at 64 with sym_eig_ql and 1.11, 1.22, 1.03, 0.96 held to dsyevd (two
// threads: 0.18, 0.19, 0.23, 0.35 against 0.60, 0.64, 0.59, 0.59); on the
// earlier AMD EPYC machine an earlier build's figures were 0.33, 0.42,
// 0.49, 0.66. Above 64 the margin shrinks, as QL's rotations cost about
// 8 n^3 against divide and conquer's GEMMs: on the Xeon, one thread,
// B = 64, sym_eig with the solver against dsyevd (MATBP_QL_MAX_N=128
// against the default) was 0.79 at n = 80, 0.93 at 96, 1.01 at 112, 1.18 at
// 128 in float64 and 0.49, 0.57, 0.65, 0.73 in float32; on the AMD machine
// an earlier build of the solver was 1.5-1.8x slower than dsyevd at
// n = 128. The crossover stays at 64, where both machines were measured.
// MATBP_QL_MAX_N (0 = LAPACK always) moves the crossover, to measure it on
// other machines.

#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include <c10/util/Exception.h>

#include "lapack.h"
#include "sym_eig_ql.h"

namespace matbp::ops::cpu {

constexpr int64_t kQlMaxN = 64;

// Read at every call, so a benchmark can compare both solvers in one process.
inline int64_t sym_eig_ql_max_n() {
  const char* env = std::getenv("MATBP_QL_MAX_N");
  if (env == nullptr || *env == '\0') return kQlMaxN;
  char* end = nullptr;
  const long value = std::strtol(env, &end, 10);
  TORCH_CHECK(end != env && *end == '\0' && value >= 0 && value <= 4096,
              "matbp: MATBP_QL_MAX_N must be an integer in [0, 4096], got '", env, "'");
  return static_cast<int64_t>(value);
}

// One thread's solver for n x n matrices of Real (double; float in the
// float32 compute mode, the same crossover): decompose() takes up to width()
// matrices at once (row-major, lower triangle read), overwrites each with its
// eigenvectors as rows and writes its ascending eigenvalues.
template <typename Real = double>
class SymEigSolver {
 public:
  explicit SymEigSolver(int n) : n_(n), ql_(n <= sym_eig_ql_max_n()) {
    if (ql_) {
      work_.resize(sym_eig_ql_workspace<Real>(n));
    } else {
      ws_ = lapack_syevd_workspace<Real>(n);
      work_.resize(ws_.lwork);
      iwork_.resize(ws_.liwork);
    }
  }

  int width() const { return ql_ ? sym_eig_ql_lanes<Real>(n_) : 1; }
  // The solver an n x n decomposition uses, for messages (no workspace).
  static const char* name(int n) {
    if (n <= sym_eig_ql_max_n()) return "tridiagonal QL";
    return std::is_same_v<Real, float> ? "LAPACK ssyevd" : "LAPACK dsyevd";
  }

  // Returns a bit mask of the matrices on which the solver failed.
  unsigned decompose(int count, Real* const* a, Real* const* w) {
    if (ql_) return sym_eig_ql(n_, count, a, w, work_.data());
    unsigned failed = 0;
    for (int q = 0; q < count; ++q) {
      int info = 0;
      lapack_syevd(n_, a[q], w[q], work_.data(), ws_.lwork, iwork_.data(), ws_.liwork, &info);
      if (info != 0) failed |= 1u << q;
    }
    return failed;
  }

 private:
  int n_;
  bool ql_;
  LapackWorkspace ws_;
  std::vector<Real> work_;
  std::vector<int> iwork_;
};

}  // namespace matbp::ops::cpu
