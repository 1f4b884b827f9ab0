#pragma once

// First divided differences f[a, b] = (f(a) - f(b)) / (a - b), f[a, a] = f'(a),
// of the spectral functions, evaluated without subtracting close numbers so
// that they stay exact when eigenvalues repeat or cluster (Daleckii–Krein).
//
// Every formula is written around lo = min(a, b) and the relative gap
// d = (hi - lo) / lo >= 0 (or the gap x = lo - hi <= 0 for exp), so that the
// log1p / expm1 arguments stay on the side where those functions are exact.

#include "host_device.h"

namespace matbp::math {

enum class SpectralFn : int { Log = 0, Sqrt = 1, Pow = 2, Exp = 3 };

// Below this |argument| the ratios use their Taylor series: the truncation
// error of the kept terms is O(1e-20), far below double rounding, and the
// series avoids 0/0 at exact ties.
constexpr double kSeriesThreshold = 1e-5;

// log1p(d) / d, equal to 1 at d = 0.
template <typename T>
MATBP_HOST_DEVICE inline T log1p_ratio(T d) {
  if (abs(d) < T(kSeriesThreshold)) {
    return T(1) + d * (T(-0.5) + d * (T(1) / T(3) + d * T(-0.25)));
  }
  return log1p(d) / d;
}

// expm1(x) / x, equal to 1 at x = 0.
template <typename T>
MATBP_HOST_DEVICE inline T expm1_ratio(T x) {
  if (abs(x) < T(kSeriesThreshold)) {
    return T(1) + x * (T(0.5) + x * (T(1) / T(6) + x * (T(1) / T(24))));
  }
  return expm1(x) / x;
}

// ((1 + d)^p - 1) / d, equal to p at d = 0.
template <typename T>
MATBP_HOST_DEVICE inline T powm1_ratio(T d, T p) {
  if (abs(d) < T(kSeriesThreshold)) {
    const T c1 = p * (p - T(1)) / T(2);
    const T c2 = c1 * (p - T(2)) / T(3);
    const T c3 = c2 * (p - T(3)) / T(4);
    return p + d * (c1 + d * (c2 + d * c3));
  }
  return expm1(p * log1p(d)) / d;
}

template <typename T>
MATBP_HOST_DEVICE inline T divided_difference_log(T a, T b) {
  const T lo = fmin(a, b);
  const T hi = fmax(a, b);
  const T d = (hi - lo) / lo;
  if (!isfinite(d)) {  // lo subnormal: the plain quotient is exact enough
    return (log(hi) - log(lo)) / (hi - lo);
  }
  return log1p_ratio(d) / lo;
}

// The same with log(a) and log(b) given (kernels compute them once per
// eigenvalue): when a and b are more than a factor 2 apart the plain quotient
// of the logs has no cancellation and costs no transcendental call.
template <typename T>
MATBP_HOST_DEVICE inline T divided_difference_log(T a, T b, T log_a, T log_b) {
  const T lo = fmin(a, b);
  const T hi = fmax(a, b);
  if (hi > T(2) * lo && lo > T(0)) {
    return (log_a - log_b) / (a - b);
  }
  return divided_difference_log(a, b);
}

template <typename T>
MATBP_HOST_DEVICE inline T divided_difference_sqrt(T a, T b) {
  return T(1) / (sqrt(a) + sqrt(b));
}

// lo^(p-1) computed as lo^p / lo where lo^p is a normal number: p - 1 is
// rounded when p is not a short binary fraction (0.3), and pow amplifies that
// rounding by |log lo|.
template <typename T>
MATBP_HOST_DEVICE inline T pow_minus_one(T lo, T p) {
  const T lo_p = pow(lo, p);
  if (isfinite(lo_p) && lo_p >= smallest_normal<T>()) {
    return lo_p / lo;
  }
  return pow(lo, p - T(1));
}

template <typename T>
MATBP_HOST_DEVICE inline T divided_difference_pow(T a, T b, T p) {
  const T lo = fmin(a, b);
  const T hi = fmax(a, b);
  if (lo == T(0)) {
    // p * 0^(p-1) at a double zero: 0 for p > 1, 1 for p = 1, inf for p < 1.
    return hi == T(0) ? (p == T(1) ? T(1) : p * pow(T(0), p - T(1)))
                      : pow(hi, p - T(1));
  }
  const T d = (hi - lo) / lo;
  // Far apart (hi^p / lo^p beyond e): the plain quotient has no cancellation,
  // while lo^(p-1) (1+d)^p would overflow or lose |p log1p(d)| ulps.
  if (!isfinite(d) || abs(p * log1p(d)) > T(1)) {
    return (pow(hi, p) - pow(lo, p)) / (hi - lo);
  }
  return pow_minus_one(lo, p) * powm1_ratio(d, p);
}

template <typename T>
MATBP_HOST_DEVICE inline T divided_difference_exp(T a, T b) {
  const T hi = fmax(a, b);
  const T x = fmin(a, b) - hi;  // <= 0: expm1 ratio in (0, 1]
  return exp(hi) * expm1_ratio(x);
}

// Second divided differences f[a, b, c] (the second-order Daleckii–Krein
// form, double backward). Each is written around the smallest point lo and
// the relative offsets of the others, as the first ones are, through the
// divided differences of the ratios phi(x) = log1p(x)/x, psi(x) = expm1(x)/x
// and rho(x) = ((1+x)^p - 1)/x: log[lo, lo(1+x), lo(1+y)] = phi[x, y] / lo^2.
//
// Below this the divided differences of the ratios are summed as power
// series: the terms fall like 0.05^k, so 18 of them reach double precision.
constexpr double kPhiSeriesThreshold = 0.05;
constexpr int kPhiSeriesTerms = 18;

// phi[x, y] = (phi(x) - phi(y)) / (x - y) for x, y >= 0; phi[x, x] = phi'(x).
template <typename T>
MATBP_HOST_DEVICE inline T log1p_ratio_divided_difference(T x, T y) {
  const T hi = fmax(x, y);
  const T lo = fmin(x, y);
  if (hi < T(kPhiSeriesThreshold)) {
    // phi(x) = sum_k (-1)^k x^k / (k + 1), so
    // phi[x, y] = sum_{k>=1} (-1)^k / (k + 1) * h_{k-1}(x, y), with the complete
    // homogeneous polynomials h_j = sum_i x^i y^(j-i), h_j = y h_{j-1} + x^j.
    T h = T(1), x_pow = T(1), sum = T(0), sign = T(-1);
    for (int k = 1; k <= kPhiSeriesTerms; ++k) {
      sum += sign * h / T(k + 1);
      x_pow *= x;
      h = y * h + x_pow;
      sign = -sign;
    }
    return sum;
  }
  if (hi - lo > T(0.5) * hi) {
    // Far apart: phi(lo) / phi(hi) is bounded away from 1, no cancellation.
    return (log1p_ratio(hi) - log1p_ratio(lo)) / (hi - lo);
  }
  // Close, both >= kPhiSeriesThreshold / 2:
  //   phi[lo, hi] = (log1p[lo, hi] - phi(hi)) / lo,
  // with log1p[lo, hi] = log1p(g) / g / (1 + lo), g = (hi - lo) / (1 + lo),
  // which never subtracts close numbers; the remaining subtraction loses at
  // most a factor ~2 / hi <= 40 in relative accuracy. (No lo * hi: it
  // overflows for x ~ s / eps beyond 1e154.)
  const T g = (hi - lo) / (T(1) + lo);
  const T log1p_dd = log1p_ratio(g) / (T(1) + lo);
  return (log1p_dd - log1p_ratio(hi)) / lo;
}

// psi[x, y] = (psi(x) - psi(y)) / (x - y) for x, y <= 0, psi(x) = expm1(x)/x.
template <typename T>
MATBP_HOST_DEVICE inline T expm1_ratio_divided_difference(T x, T y) {
  const T lo = fmin(x, y);
  const T hi = fmax(x, y);
  if (-lo < T(kPhiSeriesThreshold)) {
    // psi(x) = sum_k x^k / (k + 1)!, psi[x, y] = sum_{k>=1} h_{k-1}(x, y) / (k + 1)!.
    T h = T(1), x_pow = T(1), sum = T(0), factorial = T(1);
    for (int k = 1; k <= kPhiSeriesTerms; ++k) {
      factorial *= T(k + 1);
      sum += h / factorial;
      x_pow *= x;
      h = y * h + x_pow;
    }
    return sum;
  }
  // psi[lo, hi] = (exp[lo, hi] - psi(hi)) / lo, exp[lo, hi] = e^hi psi(lo - hi):
  // both terms lie in (e^lo, 1], and |lo| >= 0.05 bounds the loss to ~2 digits.
  return (exp(hi) * expm1_ratio(lo - hi) - expm1_ratio(hi)) / lo;
}

// rho[x, y] = (rho(x) - rho(y)) / (x - y) for x, y >= 0, rho(x) = ((1+x)^p - 1)/x.
template <typename T>
MATBP_HOST_DEVICE inline T powm1_ratio_divided_difference(T x, T y, T p) {
  const T lo = fmin(x, y);
  const T hi = fmax(x, y);
  if (hi < T(kPhiSeriesThreshold)) {
    // (1+x)^p = sum_k C(p, k) x^k, rho[x, y] = sum_{k>=2} C(p, k) h_{k-2}(x, y).
    // The binomials of a large |p| shrink slowly: sum until the terms do.
    T h = T(1), x_pow = T(1), sum = T(0), binomial = p * (p - T(1)) / T(2);
    for (int k = 2; k <= 200; ++k) {
      const T term = binomial * h;
      sum += term;
      if (abs(term) <= T(1e-18) * abs(sum) && k > 4) break;
      binomial *= (p - T(k)) / T(k + 1);
      x_pow *= x;
      h = y * h + x_pow;
    }
    return sum;
  }
  // rho[lo, hi] = (P[lo, hi] - rho(lo)) / hi with the divided difference of
  // (1+x)^p, P[lo, hi] = (1+lo)^(p-1) rho((hi - lo)/(1+lo)), which subtracts
  // nothing; hi >= 0.05 bounds the loss to ~2 digits (more as p nears 1,
  // where rho[lo, hi] ~ p (p - 1) / 2 itself vanishes).
  const T p_dd = pow(T(1) + lo, p - T(1)) * powm1_ratio((hi - lo) / (T(1) + lo), p);
  return (p_dd - powm1_ratio(lo, p)) / hi;
}

template <typename T>
MATBP_HOST_DEVICE inline T spectral_value(SpectralFn fn, T lambda, T p) {
  switch (fn) {
    case SpectralFn::Log:
      return log(lambda);
    case SpectralFn::Sqrt:
      return sqrt(lambda);
    case SpectralFn::Pow:
      return pow(lambda, p);
    case SpectralFn::Exp:
      return exp(lambda);
  }
  return T(0);
}

template <typename T>
MATBP_HOST_DEVICE inline T divided_difference(SpectralFn fn, T a, T b, T p) {
  switch (fn) {
    case SpectralFn::Log:
      return divided_difference_log(a, b);
    case SpectralFn::Sqrt:
      return divided_difference_sqrt(a, b);
    case SpectralFn::Pow:
      return divided_difference_pow(a, b, p);
    case SpectralFn::Exp:
      return divided_difference_exp(a, b);
  }
  return T(0);
}

// The same with f(a) and f(b) given (computed once per eigenvalue, so that a
// pair costs no transcendental call where it can be avoided): where f(a) and
// f(b) differ by at least a quarter of the larger magnitude, the plain
// quotient (f(a) - f(b)) / (a - b) loses nothing to cancellation (its error
// is below 10 eps); elsewhere the formulas above.
template <typename T>
MATBP_HOST_DEVICE inline T divided_difference(SpectralFn fn, T a, T b, T fa, T fb, T p) {
  if (fn == SpectralFn::Sqrt) return T(1) / (fa + fb);  // divided_difference_sqrt
  const T diff = fa - fb;
  if (a != b && isfinite(diff) && abs(diff) >= T(0.25) * fmax(abs(fa), abs(fb))) {
    return diff / (a - b);
  }
  return divided_difference(fn, a, b, p);
}

// Eigenvalues a symmetric solver returns for a positive semi-definite matrix
// can come out slightly negative (|lambda| ~ n eps ||A||). Functions defined
// at zero (sqrt, pow with p > 0) see those as the zero they stand for.
template <typename T>
MATBP_HOST_DEVICE inline T clamp_to_domain(SpectralFn fn, T lambda, T p, T tie_tol) {
  const bool zero_allowed = fn == SpectralFn::Sqrt || (fn == SpectralFn::Pow && p > T(0));
  if (zero_allowed && lambda < T(0) && lambda >= -tie_tol) {
    return T(0);
  }
  return lambda;
}

// True when f is defined (and real) at lambda, after clamp_to_domain.
template <typename T>
MATBP_HOST_DEVICE inline bool in_domain(SpectralFn fn, T lambda, T p) {
  switch (fn) {
    case SpectralFn::Log:
      return lambda > T(0);
    case SpectralFn::Sqrt:
      return lambda >= T(0);
    case SpectralFn::Pow:
      return p > T(0) ? lambda >= T(0) : lambda > T(0);
    case SpectralFn::Exp:
      return true;
  }
  return false;
}

// Second divided difference f[a, b, c] (symmetric in its arguments; f''(a)/2
// at a triple tie), exact where points repeat, cluster or vanish. dd_lo_mid
// and dd_mid_hi are the first divided differences f[lo, mid] and f[mid, hi]
// of the sorted points, which the kernels have already: where hi and lo are
// apart by more than kSecondRecursionGap (relative; absolute for exp) the
// plain recursion (f[mid, hi] - f[lo, mid]) / (hi - lo) costs no
// transcendental call and cancels at most a factor ~2 / gap (32, 5 bits;
// more only for pow as p nears 1, where p (p - 1) itself vanishes).
// Whether sorted points lo <= hi are far enough apart for the recursion:
// a factor 2 (positive points), 1 apart for exp, or lo at or below zero with
// hi above it (pow and sqrt at zero eigenvalues).
constexpr double kSecondRecursionGap = 1.0 / 16;

template <typename T>
MATBP_HOST_DEVICE inline bool second_divided_difference_by_recursion(SpectralFn fn, T lo, T hi) {
  if (fn == SpectralFn::Exp) return hi - lo > T(kSecondRecursionGap);
  return lo > T(0) ? hi - lo > T(kSecondRecursionGap) * lo : hi > T(0);
}

template <typename T>
MATBP_HOST_DEVICE inline T second_divided_difference(SpectralFn fn, T lo, T mid, T hi, T p,
                                                     T dd_lo_mid, T dd_mid_hi) {
  const T recursion = (dd_mid_hi - dd_lo_mid) / (hi - lo);
  if (second_divided_difference_by_recursion(fn, lo, hi)) return recursion;
  switch (fn) {
    case SpectralFn::Log:
    case SpectralFn::Pow: {
      if (lo > T(0)) {
        if (hi == lo) {  // a triple tie: f''(lo) / 2
          return fn == SpectralFn::Log ? T(-0.5) / lo / lo
                                       : p * (p - T(1)) / T(2) * pow_minus_one(lo, p) / lo;
        }
        const T x = (mid - lo) / lo, y = (hi - lo) / lo;
        return fn == SpectralFn::Log
                   ? log1p_ratio_divided_difference(x, y) / lo / lo
                   : pow_minus_one(lo, p) / lo * powm1_ratio_divided_difference(x, y, p);
      }
      // Zero eigenvalues (pow, p > 0) with hi > 0 took the recursion above:
      // f[0, mid, hi] = (f[mid, hi] - f[0, mid]) / hi, f[0, 0] = p 0^(p-1).
      if (fn == SpectralFn::Log || lo < T(0)) return recursion;  // outside the domain
      // f''(0) / 2 = p (p - 1) / 2 0^(p-2).
      return p == T(1) ? T(0) : p * (p - T(1)) / T(2) * pow(T(0), p - T(2));
    }
    case SpectralFn::Sqrt: {
      // -1 / ((sqrt(a) + sqrt(b)) (sqrt(b) + sqrt(c)) (sqrt(a) + sqrt(c))): no cancellation.
      const T ra = sqrt(lo), rb = sqrt(mid), rc = sqrt(hi);
      return T(-1) / ((ra + rb) * (rb + rc) * (ra + rc));
    }
    case SpectralFn::Exp:
      return hi == lo ? exp(lo) / T(2) : exp(hi) * expm1_ratio_divided_difference(lo - hi, mid - hi);
  }
  return T(0);
}

}  // namespace matbp::math
