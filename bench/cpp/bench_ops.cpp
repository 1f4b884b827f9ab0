// Google Benchmark microbenchmarks of the matbp operators through the
// dispatcher (csrc/matbp.h), each paired with its ATen composition in the
// same process: the same inputs, timed the same way, validated against each
// other after the timing loop (a mismatch fails the benchmark). Counters:
// items/s (matrices, or images for ncut, per second) and GFLOP/s of one flop
// model per operator, charged alike to both competitors (so the ATen
// composition, which does more work, shows the lower figure).
//
//   make bench-cpp    (builds, runs and writes bench/results/cpp_ops_cpu.{json,md})
//   build/cmake/matbp_bench_bench_ops --benchmark_filter=o2p_log
//
// Backward rows time the backward alone: matbp's _backward operator from the
// saved decomposition, against ATen autograd's backward through a retained
// graph of the composition.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "matbp.h"

namespace {

using at::Tensor;
using Outputs = std::vector<Tensor>;
const auto kF64 = at::TensorOptions().dtype(at::kDouble);

// One benchmarked operation: two competitors on shared inputs, and what is
// compared between them after timing (gauge-invariant: eigenvectors enter
// only through products that do not depend on their signs).
struct Case {
  std::string name;                           // "<op>_<fwd|bwd>/<shape>"
  double items = 1;                           // matrices (or images) per call
  double flops = 0;                           // the flop model, per call
  double tol = 1e-9;                          // relative Frobenius difference allowed
  std::function<Outputs()> matbp, aten;       // the timed calls
  std::function<Tensor(const Outputs&)> compared = [](const Outputs& o) { return o.at(0); };
  // Where the ATen composition is known to give NaN/Inf (its eigh backward at
  // repeated eigenvalues), its row is timed and its non-finite entries
  // counted, and matbp's result is checked by matbp_error instead.
  std::function<double(const Outputs&)> matbp_error = nullptr;
};

double relative_difference(const Tensor& a, const Tensor& b) {
  const double scale = b.norm().item<double>();
  return (a - b).norm().item<double>() / (scale > 0 ? scale : 1.0);
}

Tensor sym(const Tensor& g) { return 0.5 * (g + g.mT()); }

void run(benchmark::State& state, const Case& c, bool use_matbp) {
  const auto& timed = use_matbp ? c.matbp : c.aten;
  Outputs out;
  for (auto _ : state) {
    out = timed();
    benchmark::DoNotOptimize(out.front().data_ptr());
  }
  state.counters["items/s"] = benchmark::Counter(c.items * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(c.flops * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["nonfinite"] = double((~at::isfinite(c.compared(out))).sum().item<int64_t>());
  double diff;
  if (c.matbp_error && !use_matbp) {
    return;  // the reference is NaN/Inf: nothing to compare it with
  } else if (c.matbp_error) {
    diff = c.matbp_error(out);
  } else {
    diff = relative_difference(c.compared(out), c.compared((use_matbp ? c.aten : c.matbp)()));
  }
  state.counters["rel_diff"] = diff;
  if (!(diff <= c.tol))
    state.SkipWithError(("differs from the other competitor by " + std::to_string(diff)).c_str());
}

std::string shape(int64_t batch, std::initializer_list<std::pair<const char*, int64_t>> dims) {
  std::string s = "B=" + std::to_string(batch);
  for (const auto& [k, v] : dims) s += std::string("/") + k + "=" + std::to_string(v);
  return s;
}

// A = Q diag(λ) Qᵀ with λ log-spaced in (0.1, 10): separated and positive,
// so log and the projector's rank are well defined for both competitors.
Tensor spd(int64_t batch, int64_t n) {
  auto Q = std::get<0>(at::linalg_qr(at::randn({batch, n, n}, kF64)));
  auto lam = at::logspace(-1, 1, n, 10.0, kF64) * (1 + 0.01 * at::rand({batch, n}, kF64));
  return sym(at::matmul(Q * lam.unsqueeze(-2), Q.mT()));
}

// The ATen side of a backward row: grad of outputs (w.r.t. input) through a
// graph built once and retained.
Outputs aten_grad(const Outputs& outputs, const Tensor& input, const Outputs& grads) {
  return {torch::autograd::grad(outputs, {input}, grads, /*retain_graph=*/true)[0]};
}

// ------------------------------------------------------------------ sym_eig
// Flop model: symmetric QR with vectors 9n³; backward V (K ∘ VᵀgV) Vᵀ 6n³.

void add_sym_eig(std::vector<Case>& cases, int64_t batch, int64_t n) {
  const double n3 = double(n) * n * n;
  const auto A = spd(batch, n);
  auto reconstruct = [](const Outputs& o) { return at::matmul(o[1] * o[0].unsqueeze(-2), o[1].mT()); };
  cases.push_back({"sym_eig_fwd/" + shape(batch, {{"n", n}}), double(batch), 9 * n3 * batch, 1e-10,
                   [A] { auto [L, V] = matbp::sym_eig(A); return Outputs{L, V}; },
                   [A] { auto [L, V] = at::linalg_eigh(A); return Outputs{L, V}; }, reconstruct});

  // gL and gV = 2 G V: the gradient of <gL, L> + tr(Vᵀ G V), sign-invariant.
  const auto gL = at::randn({batch, n}, kF64), G = sym(at::randn({batch, n, n}, kF64));
  auto [L, V] = matbp::sym_eig(A);
  const auto Ag = A.clone().requires_grad_();
  auto [La, Va] = at::linalg_eigh(Ag);
  cases.push_back({"sym_eig_bwd/" + shape(batch, {{"n", n}}), double(batch), 6 * n3 * batch, 1e-8,
                   [=] { return Outputs{matbp::sym_eig_backward(gL, 2 * at::matmul(G, V), L, V)}; },
                   [=] { return aten_grad({La, Va}, Ag, {gL, 2 * at::matmul(G, Va.detach())}); },
                   [](const Outputs& o) { return sym(o[0]); }});
}

// ------------------------------------------------------------------- sym_fn
// Flop model: eigendecomposition 9n³ + V f(L) Vᵀ 2n³; backward 8n³.

Tensor aten_log(const Tensor& A) {
  auto [L, V] = at::linalg_eigh(A);
  return at::matmul(V * L.log().unsqueeze(-2), V.mT());
}

void add_sym_fn(std::vector<Case>& cases, int64_t batch, int64_t n) {
  const double n3 = double(n) * n * n;
  const auto A = spd(batch, n);
  cases.push_back({"sym_fn_log_fwd/" + shape(batch, {{"n", n}}), double(batch), 11 * n3 * batch, 1e-10,
                   [A] { return Outputs{matbp::sym_fn(A, "log")}; },
                   [A] { return Outputs{aten_log(A)}; }});

  const auto gF = at::randn({batch, n, n}, kF64);
  auto [F, L, V] = matbp::sym_fn_with_eig(A, "log");
  const auto Ag = A.clone().requires_grad_();
  const auto Fa = aten_log(Ag);
  cases.push_back({"sym_fn_log_bwd/" + shape(batch, {{"n", n}}), double(batch), 8 * n3 * batch, 1e-8,
                   [=] { return Outputs{matbp::sym_fn_backward(gF, L, V, "log")}; },
                   [=] { return aten_grad({Fa}, Ag, {gF}); },
                   [](const Outputs& o) { return sym(o[0]); }});
}

// ---------------------------------------------------------------- projector
// A = F Fᵀ of rank r < n: P = A A⁺ is the projector onto range(F).
// Flop model as sym_fn.

Tensor aten_projector(const Tensor& A, int64_t rank) {
  auto [L, V] = at::linalg_eigh(A);
  const auto Vr = V.narrow(-1, V.size(-1) - rank, rank);  // the largest eigenvalues
  return at::matmul(Vr, Vr.mT());
}

void add_projector(std::vector<Case>& cases, int64_t batch, int64_t n, int64_t rank) {
  const double n3 = double(n) * n * n;
  const auto F = at::randn({batch, n, rank}, kF64);
  const auto A = sym(at::matmul(F, F.mT()));
  const auto name = shape(batch, {{"n", n}, {"rank", rank}});
  cases.push_back({"projector_fwd/" + name, double(batch), 11 * n3 * batch, 1e-9,
                   [A] { return Outputs{matbp::projector(A)}; },
                   [A, rank] { return Outputs{aten_projector(A, rank)}; }});

  const auto gP = at::randn({batch, n, n}, kF64);
  auto [P, L, V] = matbp::projector_with_eig(A);
  const auto Ag = A.clone().requires_grad_();
  const auto Pa = aten_projector(Ag, rank);
  cases.push_back({"projector_bwd/" + name, double(batch), 8 * n3 * batch, 1e-6,
                   [=] { return Outputs{matbp::projector_backward(gP, L, V, std::nullopt)}; },
                   [=] { return aten_grad({Pa}, Ag, {gP}); },
                   [](const Outputs& o) { return sym(o[0]); }});
}

// ------------------------------------------------------------------ o2p_log
// log(XᵀX + eps I), X (B, m, d). Flop model: cols path (m >= d) Gram 2md²,
// eigendecomposition 9d³, U log(S) Uᵀ 2d³; backward 8d³ + X gA 2md².
// Rows path (m < d): Gram 2m²d, eigendecomposition 9m³, Y = UᵀX 2m²d,
// C = Yᵀ h(S) Y 2md²; backward 2md² + 6m²d.

constexpr double kEps = 1e-3;

Tensor aten_o2p_log(const Tensor& X) {
  const auto d = X.size(-1);
  return aten_log(at::matmul(X.mT(), X) + kEps * at::eye(d, kF64));
}

void add_o2p_log(std::vector<Case>& cases, int64_t batch, int64_t m, int64_t d) {
  const double md2 = double(m) * d * d, m2d = double(m) * m * d;
  const bool rows = m < d;
  const double fwd = rows ? 4 * m2d + 9 * double(m) * m * m + 2 * md2 : 2 * md2 + 11 * double(d) * d * d;
  const double bwd = rows ? 2 * md2 + 6 * m2d : 8 * double(d) * d * d + 2 * md2;
  const auto X = at::randn({batch, m, d}, kF64) / std::sqrt(double(m));
  const auto name = std::string(rows ? "rows" : "cols") + "/" + shape(batch, {{"m", m}, {"d", d}});
  cases.push_back({"o2p_log_fwd/" + name, double(batch), fwd * batch, 1e-9,
                   [X] { return Outputs{matbp::o2p_log(X, kEps)}; },
                   [X] { return Outputs{aten_o2p_log(X)}; }});

  const auto gC = at::randn({batch, d, d}, kF64);
  auto [C, S, U, Y] = matbp::o2p_log_with_eig(X, kEps);
  const auto Xg = X.clone().requires_grad_();
  const auto Ca = aten_o2p_log(Xg);
  Case bwd_case{"o2p_log_bwd/" + name, double(batch), bwd * batch, 1e-6,
                [=] { return Outputs{matbp::o2p_log_backward(gC, X, S, U, Y, kEps)}; },
                [=] { return aten_grad({Ca}, Xg, {gC}); }};
  if (rows) {
    // XᵀX + eps I has d - m eigenvalues equal to eps, where eigh's backward
    // divides by zero: the ATen gradient is NaN. matbp's is checked as a
    // directional derivative, <gX, E> against <gC, dC> by central differences.
    bwd_case.matbp_error = [=](const Outputs& o) {
      const auto E = at::randn(X.sizes(), kF64);
      const double h = 1e-6;
      const auto dC = (matbp::o2p_log(X + h * E, kEps) - matbp::o2p_log(X - h * E, kEps)) / (2 * h);
      const double numeric = (gC * dC).sum().item<double>();
      return std::abs((o[0] * E).sum().item<double>() - numeric) / std::abs(numeric);
    };
  }
  cases.push_back(std::move(bwd_case));
}

// ----------------------------------------------------------------- ncut J2
// J2 = ½‖Π_{Y Yᵀ} − Π_E‖²_F of one image, m pixels, d features, k segments.
// matbp never forms an m×m matrix; the ATen composition does (eigh of
// Y Yᵀ). Flop model (matbp's): Gram and basis 4md², eigendecomposition 9d³;
// backward 4md².

Tensor aten_j2(const Tensor& Y, const Tensor& labels, int64_t k) {
  const auto m = Y.size(-2), d = Y.size(-1);
  auto [L, V] = at::linalg_eigh(at::matmul(Y, Y.mT()));
  const double rtol = double(std::max(m, d)) * std::numeric_limits<double>::epsilon();
  const auto keep = (L > rtol * L.amax(-1, true)).to(at::kDouble);
  const auto Pw = at::matmul(V * keep.unsqueeze(-2), V.mT());
  const auto E = at::one_hot(labels, k).to(at::kDouble);
  const auto Pe = at::matmul(E / E.sum(-2, true), E.mT());
  return 0.5 * (Pw - Pe).square().sum({-2, -1});
}

void add_ncut_j2(std::vector<Case>& cases, int64_t m, int64_t d, int64_t k) {
  const double md2 = double(m) * d * d;
  const auto Y = at::rand({1, m, d}, kF64);
  const auto labels = at::randint(0, k, {1, m}, at::kLong);
  const auto w = at::ones({1, m}, kF64);
  const auto name = shape(1, {{"m", m}, {"d", d}, {"k", k}});
  cases.push_back({"ncut_j2_fwd/" + name, 1, 4 * md2 + 9 * double(d) * d * d, 1e-9,
                   [=] { return Outputs{matbp::ncut_projector_distance(Y, w, labels)}; },
                   [=] { return Outputs{aten_j2(Y, labels, k)}; }});

  const auto gJ = at::ones({1}, kF64);
  const auto basis = matbp::ncut_projector_distance_with_basis(Y, w, labels);
  const auto Yg = Y.clone().requires_grad_();
  const auto Ja = aten_j2(Yg, labels, k);
  cases.push_back({"ncut_j2_bwd/" + name, 1, 4 * md2, 1e-6,
                   [=] { return Outputs{std::get<0>(matbp::ncut_projector_distance_backward(gJ, w, std::nullopt, basis))}; },
                   [=] { return aten_grad({Ja}, Yg, {gJ}); }});
}

std::vector<Case> all_cases() {
  at::manual_seed(0);
  std::vector<Case> cases;
  for (int64_t n : {8, 32, 64}) add_sym_eig(cases, 256, n);
  add_sym_eig(cases, 32, 256);
  for (int64_t n : {32, 64}) add_sym_fn(cases, 256, n);
  add_sym_fn(cases, 32, 256);
  add_projector(cases, 256, 32, 8);
  add_o2p_log(cases, 20, 169, 256);   // AlexNet conv5: the rows path
  add_o2p_log(cases, 256, 64, 32);    // the cols path
  add_ncut_j2(cases, 1024, 64, 8);
  return cases;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch", TORCH_VERSION);
  benchmark::AddCustomContext("torch_threads", std::to_string(at::get_num_threads()));
  static const auto cases = all_cases();  // outlives the registered benchmarks
  for (const auto& c : cases)
    for (bool use_matbp : {true, false})
      benchmark::RegisterBenchmark((c.name + (use_matbp ? "/matbp" : "/aten")).c_str(),
                                   [&c, use_matbp](benchmark::State& s) { run(s, c, use_matbp); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
