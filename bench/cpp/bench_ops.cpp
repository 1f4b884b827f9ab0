// Google Benchmark microbenchmarks of the matbp operators through the
// dispatcher, each paired with its ATen reference. Every benchmark checks
// its result against the reference once the timing loop ends and reports a
// throughput counter (matrices per second).
//
//   cmake -S . -B build/cmake -DMATBP_BUILD_BENCHMARKS=ON && cmake --build build/cmake
//   build/cmake/matbp_bench_bench_ops

#include <ATen/ATen.h>
#include <benchmark/benchmark.h>

#include "matbp.h"

#include <tuple>

namespace {

using Tensor = at::Tensor;

Tensor random_symmetric(int64_t batch, int64_t n) {
  at::manual_seed(0);
  auto B = at::randn({batch, n, n}, at::kDouble);
  return B + B.mT();
}

void check(benchmark::State& state, double err, double tol) {
  if (!(err <= tol)) state.SkipWithError("result differs from the ATen reference");
  state.counters["max_err"] = err;
}

void BM_SymEig_Matbp(benchmark::State& state) {
  const int64_t batch = state.range(0), n = state.range(1);
  const auto A = random_symmetric(batch, n);
  Tensor L;
  for (auto _ : state) {
    L = std::get<0>(matbp::sym_eig(A));
    benchmark::DoNotOptimize(L.data_ptr());
  }
  check(state, (L - at::linalg_eigvalsh(A)).abs().max().item<double>(), 1e-10 * n);
  state.counters["matrices/s"] =
      benchmark::Counter(double(batch) * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_SymEig_ATen(benchmark::State& state) {
  const int64_t batch = state.range(0), n = state.range(1);
  const auto A = random_symmetric(batch, n);
  Tensor L;
  for (auto _ : state) {
    L = std::get<0>(at::linalg_eigh(A));
    benchmark::DoNotOptimize(L.data_ptr());
  }
  check(state, (L - std::get<0>(matbp::sym_eig(A))).abs().max().item<double>(), 1e-10 * n);
  state.counters["matrices/s"] =
      benchmark::Counter(double(batch) * state.iterations(), benchmark::Counter::kIsRate);
}

Tensor o2p_reference(const Tensor& X, double eps) {
  const auto d = X.size(-1);
  auto [L, V] = at::linalg_eigh(at::matmul(X.mT(), X) + eps * at::eye(d, X.options()));
  return at::matmul(V * L.log().unsqueeze(-2), V.mT());
}

void BM_O2PLog_Matbp(benchmark::State& state) {
  at::manual_seed(0);
  const auto X = at::randn({state.range(0), state.range(1), state.range(2)}, at::kDouble) /
                 std::sqrt(double(state.range(1)));
  Tensor C;
  for (auto _ : state) {
    C = matbp::o2p_log(X, 1e-3);
    benchmark::DoNotOptimize(C.data_ptr());
  }
  check(state, (C - o2p_reference(X, 1e-3)).abs().max().item<double>(), 1e-9);
  state.counters["matrices/s"] =
      benchmark::Counter(double(state.range(0)) * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_O2PLog_ATen(benchmark::State& state) {
  at::manual_seed(0);
  const auto X = at::randn({state.range(0), state.range(1), state.range(2)}, at::kDouble) /
                 std::sqrt(double(state.range(1)));
  Tensor C;
  for (auto _ : state) {
    C = o2p_reference(X, 1e-3);
    benchmark::DoNotOptimize(C.data_ptr());
  }
  check(state, (C - matbp::o2p_log(X, 1e-3)).abs().max().item<double>(), 1e-9);
  state.counters["matrices/s"] =
      benchmark::Counter(double(state.range(0)) * state.iterations(), benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_SymEig_Matbp)->Args({256, 8})->Args({256, 32})->Args({64, 128})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SymEig_ATen)->Args({256, 8})->Args({256, 32})->Args({64, 128})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_O2PLog_Matbp)->Args({20, 169, 256})->Args({256, 64, 32})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_O2PLog_ATen)->Args({20, 169, 256})->Args({256, 64, 32})->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
