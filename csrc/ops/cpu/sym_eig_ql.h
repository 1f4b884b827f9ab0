#pragma once

#include <cstdint>

namespace matbp::ops::cpu {

// How many matrices sym_eig_ql decomposes together, one per lane: a 64-byte
// SIMD vector's worth (8 in float64, 16 in float32) up to n = 32, two above.
// The narrow pack keeps z (n^2 lanes) near L1; above n = 32 z is in L2 either
// way, and two vectors per step give the QL chase, a chain of dependent
// square roots and divisions, two independent chains to overlap: 10 to 19%
// faster at n = 40..64 in float64, 3 to 7% in float32 (Intel Sapphire Rapids
// class Xeon, 256 matrices, one thread), 10% slower at n = 24..32.
// The failure mask has a bit per lane (at most 32).
template <typename Real>
constexpr int sym_eig_ql_lanes(int64_t n) {
  return (n > 32 ? 128 : 64) / int(sizeof(Real));
}

// Symmetric eigendecomposition of up to sym_eig_ql_lanes<Real>(n) small
// n x n matrices at once, in cache, without LAPACK's per-call overhead:
// Householder tridiagonalisation, then implicit QL with Wilkinson shifts.
// Matrix q lives in lane q of every vector, so each arithmetic step, the
// scalar recurrences of the QL chase included, runs on all matrices in SIMD
// instructions.
// The lanes step through QL together; a lane whose chase is shorter, or
// which has already converged, applies identity rotations meanwhile.
//
// a[q] (q < count): row-major, the lower triangle read (the upper one is
// ignored), the eigenvectors on exit as its rows (the layout LAPACK's
// column-major output has when read row-major). w[q]: the eigenvalues,
// ascending. work: sym_eig_ql_workspace<Real>(n) values, any alignment
// (below). Every a[q] must be
// finite. Returns a bit mask of the lanes whose QL did not converge within
// 30 sweeps per eigenvalue (LAPACK dsteqr's limit); their output is not
// meaningful.
//
// Backward stable as LAPACK is: eigenvalue error and loss of orthogonality
// are O(n eps) (tests/test_sym_eig_solver.py measures both on the
// adversarial spectra). Each matrix is first scaled by a power of two
// (exact) to a largest entry in [1, 2), so nothing overflows or underflows
// at any magnitude. Deflation is relative to the neighbouring diagonal
// entries (graded matrices keep their small eigenvalues) or to eps ||T||,
// which a cluster at the noise level of larger eigenvalues needs. Each
// matrix is oriented with the smaller end of its tridiagonal on top, where
// QL deflates first (LAPACK dsteqr's choice between QL and QR), so graded
// spectra keep their small eigenvalues to LAPACK's relative accuracy.
// In float32 every step, the deflation tests included, runs at float32's
// rounding: the error bounds scale with its epsilon.
unsigned sym_eig_ql(int n, int count, double* const* a, double* const* w, double* work);
unsigned sym_eig_ql(int n, int count, float* const* a, float* const* w, float* work);

// The solver's vectors must not straddle cache lines: with work only as
// aligned as malloc makes it (16 bytes), every 64-byte load and store is
// split, which cost 15% at n = 16 and 25% at n = 32 and 64 (float64, 256
// matrices, one thread: 44 against 33 ms at n = 64), and made the solver's
// speed depend on where the allocator happened to place its workspace. So
// sym_eig_ql rounds work up to a 64-byte boundary itself, and the workspace
// carries the slack for that.
constexpr int64_t kSymEigQlAlignment = 64;

template <typename Real>
int64_t sym_eig_ql_workspace(int64_t n) {
  return sym_eig_ql_lanes<Real>(n) * (n * (n + 1) / 2 + n * n + 7 * n + 1) +
         kSymEigQlAlignment / int64_t(sizeof(Real));
}

}  // namespace matbp::ops::cpu
