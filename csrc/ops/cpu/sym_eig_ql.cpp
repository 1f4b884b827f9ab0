// The small-matrix CPU eigensolver (sym_eig_ql.h). Where it is used instead
// of LAPACK, and the measurement behind that, is in sym_eig_solver.h.
//
// Every quantity is a vector of W (sym_eig_ql_lanes) values, matrix q in lane q; the
// FOR_LANES loops are what the compiler turns into SIMD instructions.

#include "sym_eig_ql.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "simd_clones.h"

#define FOR_LANES _Pragma("omp simd") for (int q = 0; q < W; ++q)

namespace matbp::ops::cpu {
namespace {

// The solver for one scalar type and pack width: W matrices at a time,
// Real's rounding in the deflation tests.
template <typename Real, int W>
struct QlSolver {
  static constexpr Real kUnitRoundoff = std::numeric_limits<Real>::epsilon() / 2;
  // Where x^2 + y^2 can neither overflow nor underflow Real.
  static constexpr Real kHypotSafeLow = Real(std::is_same_v<Real, double> ? 0x1p-450 : 0x1p-60);
  static constexpr Real kHypotSafeHigh = Real(std::is_same_v<Real, double> ? 0x1p450 : 0x1p60);
  // A power of two taking [denormal min, kHypotSafeLow) and (kHypotSafeHigh,
  // max] into the safe range (and 1/it back out); exact either way.
  static constexpr Real kHypotRescale = Real(std::is_same_v<Real, double> ? 0x1p600 : 0x1p100);

  // sqrt(x^2 + y^2) without std::hypot's cost where the squares can neither
  // overflow nor underflow: always in a unit-scaled matrix, except deep in
  // graded tails. Branch-free, so it vectorises.
  [[gnu::always_inline]] static Real fast_hypot(Real x, Real y) {
    const Real ax = std::abs(x), ay = std::abs(y);
    const Real big = std::max(ax, ay), small = std::min(ax, ay);
    const bool safe = (big > kHypotSafeLow) & (big < kHypotSafeHigh);
    // The scaled form is exact in the ratio, so it serves where the plain one
    // would underflow; big == 0 gives 0.
    const Real ratio = big > 0 ? small / big : Real(0);
    return safe ? std::sqrt(x * x + y * y) : big * std::sqrt(Real(1) + ratio * ratio);
  }

  static bool normal_power_of_two(int k) {
    return k >= std::numeric_limits<Real>::min_exponent - 1 && k < std::numeric_limits<Real>::max_exponent;
  }

  struct Pack {
    int n;
    Real* t;    // lower triangle, packed by rows: the matrix being reduced
    Real* z;    // n x n: the transformation, then the eigenvectors as rows
    Real* d;    // n: diagonal, then eigenvalues
    Real* e;    // n: sub-diagonal, e[n-1] = 0
    Real* tau;  // n: Householder scalars
    Real* p;    // n: scratch vector
    Real* sigma;  // scratch lane vector
    Real* rot_c;  // n: a chase's rotations
    Real* rot_s;  // n
    Real* v;      // n: a reflector, contiguous

    Real* T(int i, int j) const { return t + (int64_t(i) * (i + 1) / 2 + j) * W; }
    Real* Z(int i, int j) const { return z + (int64_t(i) * n + j) * W; }
    Real* D(int i) const { return d + int64_t(i) * W; }
    Real* E(int i) const { return e + int64_t(i) * W; }
    Real* Tau(int i) const { return tau + int64_t(i) * W; }
    Real* P(int i) const { return p + int64_t(i) * W; }
  };

  // Householder reduction to tridiagonal d, e. Reflector k, I - tau_k v v^T
  // with v_{k+1} = 1, acts on indices k+1..n-1 and is kept in column k of t.
  [[gnu::always_inline]] static void tridiagonalize(const Pack& s) {
    const int n = s.n;
    for (int k = 0; k + 2 < n; ++k) {
      Real* dk = s.D(k);
      const Real* tkk = s.T(k, k);
      FOR_LANES dk[q] = tkk[q];
      Real* sigma = s.sigma;
      FOR_LANES sigma[q] = 0;
      for (int j = k + 2; j < n; ++j) {
        const Real* x = s.T(j, k);
        FOR_LANES sigma[q] += x[q] * x[q];
      }
      Real* x0 = s.T(k + 1, k);
      Real* tau = s.Tau(k);
      Real* ek = s.E(k);
      Real inv[W];
      FOR_LANES {
        // sigma = 0: already tridiagonal in this column (or its square
        // underflowed, far under the unit-scaled matrix's rounding); tau = 0
        // then makes the reflection the identity.
        const bool reflect = sigma[q] > 0;
        const Real alpha = x0[q];
        const Real beta = -std::copysign(std::sqrt(alpha * alpha + sigma[q]), alpha);
        tau[q] = reflect ? (beta - alpha) / beta : Real(0);
        inv[q] = reflect ? Real(1) / (alpha - beta) : Real(0);
        ek[q] = reflect ? beta : alpha;
        x0[q] = Real(1);
      }
      for (int j = k + 2; j < n; ++j) {
        Real* x = s.T(j, k);
        FOR_LANES x[q] *= inv[q];
      }
      // B <- H B H on the trailing block B (its lower triangle):
      // p = tau B v, w = p - (tau/2)(p.v) v, B <- B - v w^T - w v^T, with v
      // gathered from column k into contiguous lane vectors first.
      Real* v = s.v;
      for (int i = k + 1; i < n; ++i) {
        const Real* src = s.T(i, k);
        Real* vi = v + int64_t(i) * W;
        Real* pi = s.P(i);
        FOR_LANES {
          vi[q] = src[q];
          pi[q] = 0;
        }
      }
      for (int i = k + 1; i < n; ++i) {
        const Real* vi = v + int64_t(i) * W;
        const Real* bi = s.T(i, 0);
        Real* pi = s.P(i);
        Real acc[W] = {};
        for (int j = k + 1; j < i; ++j) {
          const Real* bij = bi + int64_t(j) * W;
          const Real* vj = v + int64_t(j) * W;
          Real* pj = s.P(j);
          FOR_LANES {
            acc[q] += bij[q] * vj[q];
            pj[q] += bij[q] * vi[q];
          }
        }
        const Real* bii = bi + int64_t(i) * W;
        FOR_LANES pi[q] += acc[q] + bii[q] * vi[q];
      }
      Real pv[W] = {};
      for (int i = k + 1; i < n; ++i) {
        const Real* vi = v + int64_t(i) * W;
        Real* pi = s.P(i);
        FOR_LANES {
          pi[q] *= tau[q];
          pv[q] += pi[q] * vi[q];
        }
      }
      FOR_LANES pv[q] *= Real(0.5) * tau[q];
      for (int i = k + 1; i < n; ++i) {
        const Real* vi = v + int64_t(i) * W;
        Real* pi = s.P(i);
        FOR_LANES pi[q] -= pv[q] * vi[q];
      }
      for (int i = k + 1; i < n; ++i) {
        const Real* vi = v + int64_t(i) * W;
        const Real* wi = s.P(i);
        Real* bi = s.T(i, 0);
        for (int j = k + 1; j <= i; ++j) {
          Real* bij = bi + int64_t(j) * W;
          const Real* vj = v + int64_t(j) * W;
          const Real* wj = s.P(j);
          FOR_LANES bij[q] -= vi[q] * wj[q] + wi[q] * vj[q];
        }
      }
    }
    auto copy = [](Real* dst, const Real* src) { FOR_LANES dst[q] = src[q]; };
    if (n >= 2) {
      copy(s.D(n - 2), s.T(n - 2, n - 2));
      copy(s.E(n - 2), s.T(n - 1, n - 2));
    }
    copy(s.D(n - 1), s.T(n - 1, n - 1));
    Real* last = s.E(n - 1);
    FOR_LANES last[q] = 0;
  }

  // z = Q^T = H_{n-3} ... H_0, formed as ((I H_{n-3}) H_{n-4}) ... H_0: when
  // H_k is applied only rows and columns k+1.. differ from the identity.
  [[gnu::always_inline]] static void form_transformation(const Pack& s) {
    const int n = s.n;
    std::fill(s.z, s.z + int64_t(n) * n * W, Real(0));
    for (int i = 0; i < n; ++i) {
      Real* zii = s.Z(i, i);
      FOR_LANES zii[q] = Real(1);
    }
    for (int k = n - 3; k >= 0; --k) {
      const Real* tau = s.Tau(k);
      Real* v = s.v;
      for (int j = k + 1; j < n; ++j) {
        const Real* src = s.T(j, k);
        Real* vj = v + int64_t(j) * W;
        FOR_LANES vj[q] = src[q];
      }
      for (int r = k + 1; r < n; ++r) {
        Real* zr = s.Z(r, 0);
        Real dot[W] = {};
        for (int j = k + 1; j < n; ++j) {
          const Real* zrj = zr + int64_t(j) * W;
          const Real* vj = v + int64_t(j) * W;
          FOR_LANES dot[q] += zrj[q] * vj[q];
        }
        FOR_LANES dot[q] *= tau[q];
        for (int j = k + 1; j < n; ++j) {
          Real* zrj = zr + int64_t(j) * W;
          const Real* vj = v + int64_t(j) * W;
          FOR_LANES zrj[q] -= dot[q] * vj[q];
        }
      }
    }
  }

  // Applies the chase's rotations, i = hi - 1 down to lo, to rows lo..hi of
  // columns k0 .. k0 + Columns of z (z <- G^T z): the row between two
  // rotations carried in a register, so each rotation costs one load and one
  // store per element instead of two of each.
  template <int Columns>
  [[gnu::always_inline]] static void rotate_column_block(const Pack& s, int k0, int lo, int hi,
                                                         const Real* rot_c, const Real* rot_s) {
    const int64_t row = int64_t(s.n) * W;
    Real carry[Columns][W];
    const Real* top = s.Z(hi, k0);
    for (int c = 0; c < Columns; ++c) FOR_LANES carry[c][q] = top[c * W + q];
    for (int i = hi - 1; i >= lo; --i) {
      const Real* ci = rot_c + int64_t(i) * W;
      const Real* si = rot_s + int64_t(i) * W;
      Real* zi = s.Z(i, k0);
      for (int c = 0; c < Columns; ++c) {
        FOR_LANES {
          const Real x = zi[c * W + q];
          zi[row + c * W + q] = si[q] * x + ci[q] * carry[c][q];
          carry[c][q] = ci[q] * x - si[q] * carry[c][q];
        }
      }
    }
    Real* bottom = s.Z(lo, k0);
    for (int c = 0; c < Columns; ++c) FOR_LANES bottom[c * W + q] = carry[c][q];
  }

  // The rotations on every column of z, four columns at a time (which hides
  // the carried chain's latency), the last n mod 4 one by one.
  [[gnu::always_inline]] static void rotate_rows(const Pack& s, int lo, int hi, const Real* rot_c,
                                                 const Real* rot_s) {
    constexpr int kColumns = 4;
    int k0 = 0;
    for (; k0 + kColumns <= s.n; k0 += kColumns)
      rotate_column_block<kColumns>(s, k0, lo, hi, rot_c, rot_s);
    for (; k0 < s.n; ++k0) rotate_column_block<1>(s, k0, lo, hi, rot_c, rot_s);
  }

  // QL deflates from the top, so it keeps the small eigenvalues of a graded
  // matrix to high relative accuracy only when the small end is there; LAPACK's
  // dsteqr chooses QL or QR per block for this (QR where |d_last| < |d_first|).
  // Here each lane's whole matrix is reversed instead where its bottom
  // diagonal entry is the smaller (d, e and z's rows, a permutation P with
  // P T P still tridiagonal), and every lane then runs the same QL. Without
  // it, the error of float32 gradients of log on a spectrum graded 1e-4..1
  // was 2.6 times MKL ssyevd's (1.2 times with it; median over 200
  // rotations, n = 8).
  [[gnu::always_inline]] static void orient_small_end_up(const Pack& s) {
    const int n = s.n;
    Real flip[W];
    const Real* first = s.D(0);
    const Real* last = s.D(n - 1);
    FOR_LANES flip[q] = std::abs(last[q]) < std::abs(first[q]) ? Real(1) : Real(0);
    auto swap_where_flipped = [&flip](Real* x, Real* y) {
      FOR_LANES {
        const bool f = flip[q] != Real(0);
        const Real a = x[q], b = y[q];
        x[q] = f ? b : a;
        y[q] = f ? a : b;
      }
    };
    for (int i = 0, j = n - 1; i < j; ++i, --j) {
      swap_where_flipped(s.D(i), s.D(j));
      for (int k = 0; k < n; ++k) swap_where_flipped(s.Z(i, k), s.Z(j, k));
    }
    for (int i = 0, j = n - 2; i < j; ++i, --j) swap_where_flipped(s.E(i), s.E(j));
  }

  // Implicit QL with Wilkinson shifts on d, e. Each lane works through its
  // own eigenvalues: lane q sweeps from its own l_q (the first eigenvalue it
  // has not deflated) to its m_q, and the chase runs over the union of those
  // ranges, a lane applying identity rotations outside its own. (Holding all
  // lanes at the same l until the slowest deflates it costs 1.7 times the
  // rotations at n = 32.) Each rotation is applied to rows i, i+1 of z
  // (z <- G^T z). Returns the lanes that did not converge.
  [[gnu::always_inline]] static unsigned tridiagonal_ql(const Pack& s) {
    constexpr int kMaxSweeps = 30;
    const int n = s.n;
    unsigned failed = 0;
    int l_lane[W] = {}, m_lane[W], sweeps[W] = {};
    // ||T|| per lane for the absolute half of the deflation test.
    Real t_norm[W] = {};
    for (int i = 0; i < n; ++i) {
      const Real* di = s.D(i);
      const Real* ei = s.E(i);
      FOR_LANES t_norm[q] = std::max(t_norm[q], std::abs(di[q]) + std::abs(ei[q]));
    }
    Real absolute[W];
    FOR_LANES absolute[q] = kUnitRoundoff * t_norm[q];
    // negligible[i] (lane vectors, in p's space, free after the reduction):
    // 1 where e[i] passes the deflation test.
    Real* negligible = s.p;
    Real g[W], sn[W], cs[W], p[W], active[W], split[W], lo_limit[W], hi_limit[W];
    Real shift_dl[W] = {}, shift_el[W] = {}, shift_dl1[W] = {}, shift_dm[W] = {};
    for (;;) {
      // Deflate where e[m] is below the rounding of its neighbours (graded
      // matrices keep their small eigenvalues) or of ||T||: a cluster of
      // eigenvalues at the noise level of larger ones (a rank-deficient Gram
      // matrix) cannot meet the relative test, as the chase through the
      // large entries leaves e at eps ||T||. The test runs on all lanes at
      // once from the lowest unfinished l (a lane-by-lane scan was 17% of
      // the solver at n = 32); each lane then only reads its flags.
      const int l_min = *std::min_element(l_lane, l_lane + W);
      for (int i = l_min; i < n - 1; ++i) {
        const Real* ei = s.E(i);
        const Real* di = s.D(i);
        const Real* di1 = s.D(i + 1);
        Real* flag = negligible + int64_t(i) * W;
        FOR_LANES {
          const Real e = std::abs(ei[q]);
          const Real scale = std::abs(di[q]) + std::abs(di1[q]);
          flag[q] = (e <= kUnitRoundoff * scale) | (e <= absolute[q]) |
                            (e < std::numeric_limits<Real>::min())
                        ? Real(1)
                        : Real(0);
        }
      }
      int lo = n, hi = 0;
      for (int q = 0; q < W; ++q) {
        int& l = l_lane[q];
        int m = l;
        while (l < n) {
          for (m = l; m < n - 1; ++m)
            if (negligible[int64_t(m) * W + q] != Real(0)) break;
          if (m != l && sweeps[q] == kMaxSweeps) {
            failed |= 1u << q;
            s.E(l)[q] = 0;  // give up on this eigenvalue; the lane's output is flagged
            m = l;
          }
          if (m != l) break;
          ++l;
          sweeps[q] = 0;
        }
        m_lane[q] = m;
        active[q] = l < n ? Real(1) : Real(0);
        if (l < n) {
          ++sweeps[q];
          lo = std::min(lo, l);
          hi = std::max(hi, m);
          shift_dl[q] = s.D(l)[q];
          shift_el[q] = s.E(l)[q];
          shift_dl1[q] = s.D(l + 1)[q];
          shift_dm[q] = s.D(m)[q];
        }
        lo_limit[q] = l;
        hi_limit[q] = m;
      }
      if (lo == n) break;
      FOR_LANES {
        // The Wilkinson shift from the leading 2 x 2 block, as in LAPACK
        // (e[l] != 0 in an active lane; the others get g = 0).
        const bool on = active[q] != Real(0);
        const Real dl = shift_dl[q], el = on ? shift_el[q] : Real(1);
        const Real h = (shift_dl1[q] - dl) / (Real(2) * el);
        const Real r = fast_hypot(h, Real(1));
        g[q] = on ? shift_dm[q] - dl + el / (h + std::copysign(r, h)) : Real(0);
        sn[q] = 1;
        cs[q] = 1;
        p[q] = 0;
        split[q] = 0;
      }

      // The chase: the rotation coefficients of every lane, identity where
      // a lane is not taking part (rot_c = 1, rot_s = 0).
      Real* rot_c = s.rot_c;
      Real* rot_s = s.rot_s;
      for (int i = hi - 1; i >= lo; --i) {
        Real* ei = s.E(i);
        Real* ei1 = s.E(i + 1);
        Real* di = s.D(i);
        Real* di1 = s.D(i + 1);
        Real* ci = rot_c + int64_t(i) * W;
        Real* si = rot_s + int64_t(i) * W;
        FOR_LANES {
          const bool on =
              (active[q] != Real(0)) & (Real(i) < hi_limit[q]) & (Real(i) >= lo_limit[q]);
          const Real f = sn[q] * ei[q];
          const Real b = cs[q] * ei[q];
          // The rotation taking (g, f) to (r, 0) from one square root and
          // two quotients, on the chain every step waits on: fast_hypot
          // also computed a second root and a division there, for its rare
          // unsafe range, where f and g are now rescaled by a power of two
          // instead. Quotients rather than a reciprocal times f and g, so
          // that s and c round once each, as in LAPACK's dlartg.
          const Real big = std::max(std::abs(f), std::abs(g[q]));
          const bool tiny = big < kHypotSafeLow, huge = big > kHypotSafeHigh;
          const Real scale = tiny ? kHypotRescale : huge ? Real(1) / kHypotRescale : Real(1);
          const Real unscale = tiny ? Real(1) / kHypotRescale : huge ? kHypotRescale : Real(1);
          const Real fs = f * scale, gs = g[q] * scale;
          const Real r_scaled = std::sqrt(fs * fs + gs * gs);
          const Real r = r_scaled * unscale;
          // r = 0: the chase underflowed and the matrix has split at i + 1.
          const bool splits = on & (r_scaled == Real(0));
          const bool step = on & (r_scaled != Real(0));
          const Real safe_r = step ? r_scaled : Real(1);
          const Real s_new = fs / safe_r;
          const Real c_new = gs / safe_r;
          const Real g1 = di1[q] - p[q];
          const Real r1 = (di[q] - g1) * s_new + Real(2) * c_new * b;
          const Real p_new = s_new * r1;
          ei1[q] = on ? r : ei1[q];
          di1[q] = step ? g1 + p_new : (splits ? di1[q] - p[q] : di1[q]);
          g[q] = step ? c_new * r1 - b : g[q];
          p[q] = step ? p_new : p[q];
          sn[q] = step ? s_new : sn[q];
          cs[q] = step ? c_new : cs[q];
          ci[q] = step ? c_new : Real(1);
          si[q] = step ? s_new : Real(0);
          split[q] = splits ? Real(1) : split[q];
          active[q] = splits ? Real(0) : active[q];
        }
      }
      rotate_rows(s, lo, hi, rot_c, rot_s);
      // Lanes that finished their chase (not split) close the sweep; a split
      // lane's e[m] is zeroed only now, as its chase never reads it again.
      for (int q = 0; q < W; ++q) {
        if (split[q] != Real(0)) s.E(m_lane[q])[q] = 0;
        if (active[q] == Real(0)) continue;
        s.D(l_lane[q])[q] -= p[q];
        s.E(l_lane[q])[q] = g[q];
        s.E(m_lane[q])[q] = 0;
      }
    }
    return failed;
  }

  // Inlined into each target clone of sym_eig_ql: a call would run the
  // baseline (SSE2) build of everything it calls.
  [[gnu::always_inline]] static unsigned decompose(int n, int count, Real* const* a, Real* const* w,
                                                   Real* work) {
    if (n <= 0 || count <= 0) return 0;
    const int64_t tri = int64_t(n) * (n + 1) / 2;
    // Every array below is a whole number of lane vectors (W values, 64 or
    // 128 bytes), so aligning the first aligns them all.
    constexpr auto kAlign = uintptr_t(kSymEigQlAlignment);
    work = reinterpret_cast<Real*>((reinterpret_cast<uintptr_t>(work) + kAlign - 1) & ~(kAlign - 1));
    Pack s;
    s.n = n;
    s.t = work;
    s.z = s.t + tri * W;
    s.d = s.z + int64_t(n) * n * W;
    s.e = s.d + int64_t(n) * W;
    s.tau = s.e + int64_t(n) * W;
    s.p = s.tau + int64_t(n) * W;
    s.rot_c = s.p + int64_t(n) * W;
    s.rot_s = s.rot_c + int64_t(n) * W;
    s.v = s.rot_s + int64_t(n) * W;
    s.sigma = s.v + int64_t(n) * W;
    // Lanes beyond count hold zero matrices, which deflate at once.
    std::fill(s.t, s.t + tri * W, Real(0));
    std::fill(s.tau, s.tau + int64_t(n) * W, Real(0));
    int exponent[W] = {};
    for (int q = 0; q < count; ++q) {
      const Real* aq = a[q];
      Real amax = 0;
      for (int i = 0; i < n; ++i) {
        const Real* row = aq + int64_t(i) * n;
#pragma omp simd reduction(max : amax)
        for (int j = 0; j <= i; ++j) amax = std::max(amax, std::abs(row[j]));
      }
      exponent[q] = amax > 0 ? std::ilogb(amax) : 0;
      // One multiplication by 2^-exponent is std::ldexp's one rounding where
      // that factor is a normal number (a call per entry was 6% of the
      // solver at n = 32); ldexp itself only at the ends of the range.
      if (normal_power_of_two(-exponent[q])) {
        const Real factor = std::ldexp(Real(1), -exponent[q]);
        for (int i = 0; i < n; ++i)
          for (int j = 0; j <= i; ++j) s.T(i, j)[q] = aq[int64_t(i) * n + j] * factor;
      } else {
        for (int i = 0; i < n; ++i)
          for (int j = 0; j <= i; ++j) s.T(i, j)[q] = std::ldexp(aq[int64_t(i) * n + j], -exponent[q]);
      }
    }
    tridiagonalize(s);
    form_transformation(s);
    orient_small_end_up(s);
    const unsigned failed = tridiagonal_ql(s);
    // Ascending eigenvalues (ties in z's order); eigenvector rows follow.
    // rank (in p's space) is the output row of z's row r in lane q, so z is
    // then read in order, a lane vector at a time, instead of once per lane.
    Real* rank = s.p;
    std::vector<int> order(n);
    for (int q = 0; q < count; ++q) {
      Real* wq = w[q];
      const bool normal = normal_power_of_two(exponent[q]);
      const Real factor = normal ? std::ldexp(Real(1), exponent[q]) : Real(1);
      for (int j = 0; j < n; ++j) order[j] = j;
      std::sort(order.begin(), order.end(), [&](int i, int j) {
        const Real di = s.D(i)[q], dj = s.D(j)[q];
        return di < dj || (di == dj && i < j);
      });
      for (int j = 0; j < n; ++j) {
        const Real lambda = s.D(order[j])[q];
        wq[j] = normal ? lambda * factor : std::ldexp(lambda, exponent[q]);
        rank[int64_t(order[j]) * W + q] = Real(j);
      }
    }
    for (int r = 0; r < n; ++r) {
      Real* dst[W];
      for (int q = 0; q < count; ++q) dst[q] = a[q] + int64_t(rank[int64_t(r) * W + q]) * n;
      for (int k = 0; k < n; ++k) {
        const Real* zrk = s.Z(r, k);
        for (int q = 0; q < count; ++q) dst[q][k] = zrk[q];
      }
    }
    return failed;
  }
};

template <typename Real>
[[gnu::always_inline]] inline unsigned decompose(int n, int count, Real* const* a, Real* const* w,
                                                 Real* work) {
  constexpr int kNarrow = sym_eig_ql_lanes<Real>(1), kWide = sym_eig_ql_lanes<Real>(64);
  if (sym_eig_ql_lanes<Real>(n) == kNarrow)
    return QlSolver<Real, kNarrow>::decompose(n, count, a, w, work);
  return QlSolver<Real, kWide>::decompose(n, count, a, w, work);
}

}  // namespace

MATBP_SIMD_CLONES unsigned sym_eig_ql(int n, int count, double* const* a, double* const* w,
                                      double* work) {
  return decompose(n, count, a, w, work);
}

MATBP_SIMD_CLONES unsigned sym_eig_ql(int n, int count, float* const* a, float* const* w,
                                      float* work) {
  return decompose(n, count, a, w, work);
}

}  // namespace matbp::ops::cpu
