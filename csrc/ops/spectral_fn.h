#pragma once

// Parsing and validation of the spectral function argument of matbp.sym_fn,
// shared by the CPU and CUDA backends.

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <string>

#include "../math/divided_differences.h"

namespace matbp::ops {

inline math::SpectralFn parse_spectral_fn(c10::string_view name, const char* op) {
  if (name == "log") return math::SpectralFn::Log;
  if (name == "sqrt") return math::SpectralFn::Sqrt;
  if (name == "pow") return math::SpectralFn::Pow;
  if (name == "exp") return math::SpectralFn::Exp;
  TORCH_CHECK(false, op, ": argument 'fn' must be one of 'log', 'sqrt', 'pow', 'exp', got '",
              std::string(name), "'");
}

inline void check_spectral_exponent(math::SpectralFn fn, double p, const char* op) {
  if (fn == math::SpectralFn::Pow) {
    TORCH_CHECK(std::isfinite(p), op, ": argument 'p' must be a finite exponent, got ", p);
  }
}

// What the eigenvalues must satisfy, for error messages.
inline const char* spectral_domain(math::SpectralFn fn, double p) {
  switch (fn) {
    case math::SpectralFn::Log:
      return "log needs a positive definite matrix (all eigenvalues > 0)";
    case math::SpectralFn::Sqrt:
      return "sqrt needs a positive semi-definite matrix (all eigenvalues >= 0)";
    case math::SpectralFn::Pow:
      return p > 0 ? "pow with p > 0 needs a positive semi-definite matrix (eigenvalues >= 0)"
                   : "pow with p <= 0 needs a positive definite matrix (eigenvalues > 0)";
    case math::SpectralFn::Exp:
      return "exp is defined everywhere";
  }
  return "";
}

}  // namespace matbp::ops
