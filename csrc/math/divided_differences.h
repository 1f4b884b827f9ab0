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

}  // namespace matbp::math
