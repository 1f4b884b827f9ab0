// Calls matbp from C++ through the installed package: matbp::sym_eig and
// matbp::o2p_log on tensors, checked against ATen, and the backward of
// o2p_log through the dispatcher, checked against a central difference.
// Exits 1 (and says what) when a check fails.

#include <ATen/ATen.h>
#include <matbp.h>

#include <cmath>
#include <cstdio>
#include <tuple>

namespace {

int failures = 0;

void check(bool ok, const char* what, double value, double tolerance) {
  std::printf("%-58s %.2e (tolerance %.0e) %s\n", what, value, tolerance, ok ? "ok" : "FAILED");
  if (!ok) ++failures;
}

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

}  // namespace

int main() {
  at::manual_seed(0);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);

  // sym_eig: a batch of symmetric matrices, against ATen's eigh.
  auto B = at::randn({4, 8, 8}, f64);
  const auto A = B + B.mT();
  auto [L, V] = matbp::sym_eig(A);
  const double recon = max_abs(at::matmul(V * L.unsqueeze(-2), V.mT()) - A) / max_abs(A);
  check(recon < 1e-13, "sym_eig: |V diag(L) V^T - A| / |A|", recon, 1e-13);
  const double values = max_abs(L - at::linalg_eigvalsh(A)) / max_abs(A);
  check(values < 1e-13, "sym_eig: eigenvalues against at::linalg_eigvalsh", values, 1e-13);

  // o2p_log: log(X^T X + eps I), against eigh + log in ATen.
  const double eps = 1e-3;
  const auto X = at::randn({3, 20, 6}, f64);
  const auto C = matbp::o2p_log(X, eps);
  auto [s, U] = at::linalg_eigh(at::matmul(X.mT(), X) + eps * at::eye(6, f64));
  const auto C_ref = at::matmul(U * s.log().unsqueeze(-2), U.mT());
  const double c_err = max_abs(C - C_ref) / max_abs(C_ref);
  check(c_err < 1e-12, "o2p_log: against eigh + log", c_err, 1e-12);

  // The backward, called through the dispatcher as autograd would:
  // <gX, E> must equal <gC, dC/dt> along a direction E.
  auto [C2, S, Ug, Y] = matbp::o2p_log_with_eig(X, eps);
  const auto gC = at::randn({3, 6, 6}, f64);
  const auto gX = matbp::o2p_log_backward(gC, X, S, Ug, Y, eps);
  const auto E = at::randn(X.sizes(), f64);
  const double h = 1e-6;
  const auto dC = (matbp::o2p_log(X + h * E, eps) - matbp::o2p_log(X - h * E, eps)) / (2 * h);
  const double analytic = (gX * E).sum().item<double>();
  const double numeric = (gC * dC).sum().item<double>();
  const double g_err = std::abs(analytic - numeric) / std::abs(numeric);
  check(g_err < 1e-7, "o2p_log_backward: against a central difference", g_err, 1e-7);

  std::printf("%s\n", failures == 0 ? "matbp example: all checks passed" : "matbp example: FAILED");
  return failures == 0 ? 0 : 1;
}
