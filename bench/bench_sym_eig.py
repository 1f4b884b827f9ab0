"""Benchmark: batched ``matbp.sym_eig`` against ``torch.linalg.eigh``, per thread count.

Both competitors run in the same process on the same random symmetric batch
(fixed seed), interleaved per repetition so machine noise hits both alike.
Rows: ``sym_eig`` forward, the same with matbp held to LAPACK
(``MATBP_QL_MAX_N=0``: where the small-matrix solver's crossover comes from),
``sym_eig`` forward+backward (a sign-invariant loss
<wL, L> + <WV, V∘V>), and ``sym_fn log`` forward+backward against the eigh
composition (bench_sym_fn's input and reference, B = 100 at n = 256), each
at every thread count of ``--thread-counts`` (torch.set_num_threads; matbp
splits the batch over the same threads). The table reports median times
(ms), the ratio matbp/torch (with the interquartile range of the
per-repetition paired ratios), PASS/FAIL against the performance targets
below, and a correctness check from the same run: eigenvalues of both agree
and matbp's ``V diag(L) V^T`` reconstructs ``A`` with orthonormal ``V`` (fwd),
or matbp's gradient matches the float64 torch composition's (fwd+bwd).

Targets (float64, B = 256):
* all threads (the machine's count): sym_eig fwd <= 0.8 at n = 8, 32, 64, 256;
* one thread: sym_eig fwd <= 0.5 at n = 8, 16, 32 and <= 0.8 at n = 64;
  sym_fn log fwd+bwd <= 0.6 at n <= 32 and <= 0.85 at n = 64 and 256 (B = 100);
* one thread, float32 input: "sym_fn log fwd+bwd f32 mode" (matbp's float32
  compute mode against torch's float32 composition) <= 0.8 at n = 32, 64, 256.

Usage::

    python bench/bench_sym_eig.py                 # full run, writes bench/results/sym_eig_cpu.{json,md}
    python bench/bench_sym_eig.py --quick         # demo-sized run (sym_eig_cpu_quick.*)
    python bench/bench_sym_eig.py --sizes 8 64 --dtypes float64 --thread-counts 1 --no-write

From another script (``bench/`` is not a package)::

    sys.path.insert(0, "bench"); import bench_sym_eig
    rows = bench_sym_eig.run([8, 32, 64], batch=64, dtypes=["float64"], budget_s=0.5)
    bench_sym_eig.print_rows(rows)

Exit status: 1 if a correctness check fails (or, with ``--strict``, if a
performance target is missed); 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import bench_sym_fn  # noqa: E402

import matbp  # noqa: E402

NAME = "sym_eig"
TITLE = "matbp.sym_eig and sym_fn log vs torch.linalg.eigh (batched, per thread count)"

DEFAULT_SIZES = (8, 16, 32, 33, 64, 128, 256)
DEFAULT_BATCH = 256
SYM_FN_LARGE_N, SYM_FN_LARGE_BATCH = 256, 100  # sym_fn rows at n >= 256 run at B = 100
DEFAULT_DTYPES = ("float32", "float64")
CASES = ("sym_eig fwd", "sym_eig fwd lapack", "sym_eig fwd+bwd", "sym_fn log fwd+bwd",
         "sym_eig fwd f32 mode", "sym_fn log fwd+bwd f32 mode")
# "... f32 mode": matbp's float32 compute mode (compute_dtype=torch.float32)
# against torch's float32 composition, float32 input only.
F32_MODE_SUFFIX = " f32 mode"
# "sym_eig fwd lapack": matbp with MATBP_QL_MAX_N=0 (LAPACK at every n), the
# row beside "sym_eig fwd" that places the solver crossover
# (csrc/ops/cpu/sym_eig_solver.h).
QUICK_SIZES = (8, 32, 64)
QUICK_BATCH = 64
QUICK_BUDGET_S = 0.5  # --quick: adaptive repeats within ~0.5 s per case

# Performance targets, B = 256 (B = 100 for sym_fn at n = 256), float64
# (float32 for the f32 mode rows): (case, threads) -> {n: ratio}; threads
# None = the machine's thread count. Rows at other batch sizes (e.g.
# --quick) get no PASS/FAIL mark.
TARGET_BATCH = 256
TARGETS = {
    ("sym_eig fwd", None): {8: 0.8, 32: 0.8, 64: 0.8, 256: 0.8},
    ("sym_eig fwd", 1): {8: 0.5, 16: 0.5, 32: 0.5, 64: 0.8},
    ("sym_fn log fwd+bwd", 1): {8: 0.6, 16: 0.6, 32: 0.6, 33: 0.6, 64: 0.85, 256: 0.85},
    ("sym_fn log fwd+bwd f32 mode", 1): {32: 0.8, 64: 0.8, 256: 0.8},
}

# Adaptive repetition count: fill about BUDGET_S seconds per case.
BUDGET_S = 4.0
MIN_REPEATS = 3
MAX_REPEATS = 50

# sym_eig fwd+bwd rows: matbp's gradient against the float64 torch composition
# at the same input, to GRAD_TOL_FACTOR * n * eps(dtype) * kappa, kappa =
# max|λ| / min gap (max over the batch): the eigenvector term divides by the
# gaps, and the backward uses the outputs rounded to the input's dtype.
GRAD_TOL_FACTOR = 10.0

# Correctness tolerance: TOL_FACTOR * n * eps(dtype), relative to ||A||.
TOL_FACTOR = 10.0

DTYPES = {"float32": torch.float32, "float64": torch.float64}

COLUMNS = [
    *common.standard_columns("case"),
    common.Column("threads", "threads"),
    *common.standard_columns("dtype", "n", "batch", "repeats"),
    *common.timing_columns(("matbp", "torch"), ".3f"),
    common.Column("target", "target", lambda v: f"<= {v}"),
    *common.standard_columns("status"),
    *common.columns(".1e", eig_err="eig err", recon_err="recon err", orth_err="orth err",
                    grad_err="grad err"),
    *common.standard_columns("correct"),
]


def make_input(n: int, batch: int, dtype: torch.dtype, seed: int = 0,
               device: str = "cpu") -> torch.Tensor:
    """A batch of random symmetric matrices; same values for every dtype."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + n)
    x = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
    a = (x + x.mT) / 2
    return a.to(dtype=dtype, device=device)


def check(a: torch.Tensor, lm: torch.Tensor, vm: torch.Tensor, lt: torch.Tensor) -> dict:
    """Relative errors (max over the batch), computed in float64."""
    a64, lm64, vm64, lt64 = (t.detach().to(torch.float64) for t in (a, lm, vm, lt))
    n = a.shape[-1]
    scale = lt64.abs().amax(dim=-1).clamp_min(torch.finfo(torch.float64).tiny)  # ||A||_2
    eig_err = ((lm64 - lt64).abs().amax(dim=-1) / scale).max().item()
    recon = (vm64 * lm64.unsqueeze(-2)) @ vm64.mT
    a_fro = torch.linalg.matrix_norm(a64).clamp_min(torch.finfo(torch.float64).tiny)
    recon_err = (torch.linalg.matrix_norm(recon - a64) / a_fro).max().item()
    eye = torch.eye(n, dtype=torch.float64, device=a64.device)
    orth_err = (torch.linalg.matrix_norm(vm64.mT @ vm64 - eye) / n ** 0.5).max().item()
    tol = TOL_FACTOR * n * torch.finfo(a.dtype).eps
    return {
        "eig_err": eig_err,
        "recon_err": recon_err,
        "orth_err": orth_err,
        "tol": tol,
        "correct": bool(lm.shape == lt.shape and max(eig_err, recon_err, orth_err) <= tol),
    }


def _f32_mode(case: str) -> bool:
    return case.endswith(F32_MODE_SUFFIX)


def _target(case: str, n: int, batch: int, dtype: torch.dtype, threads: int) -> float | None:
    if dtype != (torch.float32 if _f32_mode(case) else torch.float64):
        return None
    expected_batch = SYM_FN_LARGE_BATCH if case.startswith("sym_fn") and n >= SYM_FN_LARGE_N else TARGET_BATCH
    if batch != expected_batch:
        return None
    for key in ((case, threads), (case, None) if threads == _machine_threads() else None):
        if key in TARGETS and n in TARGETS[key]:
            return TARGETS[key][n]
    return None


def _machine_threads() -> int:
    return _MACHINE_THREADS


_MACHINE_THREADS = torch.get_num_threads()


def _lapack_sym_eig(a: torch.Tensor):
    """matbp.sym_eig with the CPU solver held to LAPACK (read at every call)."""
    previous = os.environ.get("MATBP_QL_MAX_N")
    os.environ["MATBP_QL_MAX_N"] = "0"
    try:
        return matbp.sym_eig(a)
    finally:
        if previous is None:
            del os.environ["MATBP_QL_MAX_N"]
        else:
            os.environ["MATBP_QL_MAX_N"] = previous


def _eig_loss(out, wL: torch.Tensor, WV: torch.Tensor) -> torch.Tensor:
    # Sign-invariant in each eigenvector: V enters squared.
    L, V = out
    return (L * wL).sum() + (V * V * WV).sum()


def bench_one(n: int, batch: int, dtype: torch.dtype, *, repeats: int | None = None,
              seed: int = 0, device: str = "cpu", budget_s: float = BUDGET_S,
              case: str = "sym_eig fwd") -> dict:
    """One row of ``case`` (one of CASES) at the current thread count."""
    threads = torch.get_num_threads()
    compute_dtype = torch.float32 if _f32_mode(case) else None
    if case.startswith("sym_fn log fwd+bwd"):
        if n >= SYM_FN_LARGE_N and batch == DEFAULT_BATCH:
            batch = SYM_FN_LARGE_BATCH
        row = bench_sym_fn.bench_one("log", n, batch, dtype, "fwd+bwd", repeats=repeats, seed=seed,
                                     device=device, budget_s=budget_s, compute_dtype=compute_dtype)
        row = {"case": case, "threads": threads, "dtype": row["dtype"], "n": n, "batch": batch,
               **{k: row[k] for k in ("repeats", "matbp_ms", "torch_ms", "ratio", "ratio_iqr",
                                      "matbp_samples_ms", "torch_samples_ms", "correct")},
               "grad_err": row["grad_diff_matbp"]}
    else:
        a = make_input(n, batch, dtype, seed, device)
        mode = case.split()[1]
        sym_eig = (_lapack_sym_eig if case.endswith("lapack") else
                   (lambda a: matbp.sym_eig(a, compute_dtype=compute_dtype)))
        if mode == "fwd":
            with torch.no_grad():
                # Warm-up and correctness in one go (these calls are not timed).
                lm, vm = sym_eig(a)
                lt, _ = torch.linalg.eigh(a)
                result = check(a, lm, vm, lt)
                del lm, vm, lt
        g = torch.Generator().manual_seed(seed + 17 * n)
        wL = torch.randn(batch, n, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
        WV = torch.randn(batch, n, n, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
        fns = common.timed_calls({"matbp": sym_eig, "torch": torch.linalg.eigh}, a, mode,
                                 backward=lambda out: _eig_loss(out, wL, WV).backward())
        if mode == "fwd+bwd":
            a64 = a.detach().to(torch.float64).requires_grad_()
            L64, V64 = torch.linalg.eigh(a64)
            _eig_loss((L64, V64), wL.double(), WV.double()).backward()
            grad = fns["matbp"]()
            fns["torch"]()  # warm-up
            err = common.rel_fro(grad, a64.grad)
            L64 = L64.detach()
            kappa = (L64.abs().amax(-1) / (L64[..., 1:] - L64[..., :-1]).amin(-1)).max().item()
            tol = GRAD_TOL_FACTOR * n * torch.finfo(dtype).eps * kappa
            result = {"grad_err": err, "grad_tol": tol, "correct": bool(err <= tol)}
        row = {"case": case, "threads": threads, "dtype": common.dtype_name(dtype), "n": n, "batch": batch,
               **common.time_pair(fns, budget_s=budget_s, min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS,
                                  repeats=repeats, device=device),
               **result}
    target = _target(case, n, batch, dtype, threads)
    row["target"] = target
    row["status"] = None if target is None else ("PASS" if row["ratio"] <= target else "FAIL")
    return row


def _progress(row: dict, seconds: float) -> str:
    return (f"  {row['case']:<18} t={row['threads']} {row['dtype']:>7} n={row['n']:<4} B={row['batch']:<4} "
            f"reps={row['repeats']:<3} matbp {row['matbp_ms']:9.3f} ms  torch {row['torch_ms']:9.3f} ms  "
            f"ratio {row['ratio']:.3f}  {row['status'] or ''} [{seconds:.0f} s]")


def run(sizes=DEFAULT_SIZES, batch: int = DEFAULT_BATCH, dtypes=DEFAULT_DTYPES,
        repeats: int | None = None, *, seed: int = 0, device: str = "cpu",
        budget_s: float = BUDGET_S, verbose: bool = False, cases=("sym_eig fwd",),
        thread_counts=(None,)) -> list[dict]:
    """Run the benchmark and return one row (dict) per (threads, case, dtype, n).

    ``dtypes`` are names ("float32", "float64") or torch dtypes; ``repeats``
    None picks an adaptive count (>= 3, more for small n); ``thread_counts``
    None keeps the current one. The thread count is restored afterwards.
    """
    previous = torch.get_num_threads()
    rows = []
    try:
        for threads in thread_counts:
            if threads is not None:
                torch.set_num_threads(int(threads))
            todo = [(case, int(n), common.as_dtype(d)) for case in cases for d in dtypes for n in sizes
                    if not (_f32_mode(case) and common.as_dtype(d) != torch.float32)]
            rows += common.collect(todo, lambda case, n, dtype: bench_one(
                n, int(batch), dtype, repeats=repeats, seed=seed, device=device, budget_s=budget_s, case=case),
                _progress if verbose else None)
    finally:
        torch.set_num_threads(previous)
    return rows


def notes_for(rows: list[dict]) -> list[str]:
    notes = [
        "Times are medians over interleaved repetitions; ratio = median(matbp) / median(torch); "
        "ratio IQR = quartiles of per-repetition paired ratios. threads = torch.set_num_threads for the "
        f"row (this machine's default: {_machine_threads()}).",
        "Cases: sym_eig fwd (no grad); sym_eig fwd lapack: the same with matbp's CPU solver held to "
        "LAPACK dsyevd (MATBP_QL_MAX_N=0), beside sym_eig fwd where the batched QL solver runs for n <= 64; "
        "sym_eig fwd+bwd: loss <wL, L> + <WV, V∘V> (sign-invariant), "
        "backward on a fresh leaf; sym_fn log fwd+bwd: matbp.sym_fn(A, 'log') against eigh + V log(L) Vᵀ "
        "with autograd on bench_sym_fn's SPD input (eigenvalues in (0.1, 10)), F.backward(G). "
        "'f32 mode' rows: matbp's float32 compute mode (compute_dtype=torch.float32) on float32 input, "
        "against torch's float32 composition (the other float32 rows: matbp computes in float64).",
        "Targets (float64, f32 mode rows float32; B = 256, B = 100 for sym_fn at n = 256): "
        + "; ".join(f"{case} at {'the machine' if threads is None else threads} thread(s): "
                    + ", ".join(f"n={n} <= {r}" for n, r in sizes.items())
                    for (case, threads), sizes in TARGETS.items()) + ".",
        f"Errors are relative, max over the batch: eig err = max|L_matbp - L_torch| / ||A||_2, "
        f"recon err = ||V diag(L) V^T - A||_F / ||A||_F, orth err = ||V^T V - I||_F / sqrt(n) "
        f"(tolerance {TOL_FACTOR:g} * n * eps(dtype)); grad err = ||gA_matbp - gA_ref||_F / ||gA_ref||_F "
        f"against the torch composition in float64 at the same input (sym_eig: tolerance "
        f"{GRAD_TOL_FACTOR:g} * n * eps(dtype) * max|λ| / min gap, the backward using the outputs in the "
        f"input's dtype; sym_fn: bench_sym_fn's tolerances).",
    ]
    common.add_note(notes, "CORRECTNESS FAILURES: ",
                    [f"{r['case']} t={r['threads']} {r['dtype']} n={r['n']}" for r in rows if not r["correct"]])
    return common.add_note(notes, "Targets missed: ",
                           [f"{r['case']} t={r['threads']} {r['dtype']} n={r['n']} ({r['ratio']:.3f})"
                            for r in rows if r["status"] == "FAIL"])


def print_rows(rows: list[dict], env: dict | None = None) -> None:
    common.print_table(rows, COLUMNS, title=TITLE, env=env, notes=notes_for(rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help=f"matrix sizes n (default {' '.join(map(str, DEFAULT_SIZES))})")
    p.add_argument("--batch", type=int, default=None, help=f"batch size B (default {DEFAULT_BATCH})")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="cases (default all)")
    p.add_argument("--thread-counts", type=int, nargs="+", default=None,
                   help=f"run every case at each thread count (default 1 and {_machine_threads()}; "
                        "--quick: the current one)")
    common.add_case_arguments(p, dtypes=DTYPES, default_dtypes=DEFAULT_DTYPES, min_repeats=MIN_REPEATS,
                              max_repeats=MAX_REPEATS, budget_s=BUDGET_S, quick=common.quick_help(
                                  f"n in {QUICK_SIZES}, B={QUICK_BATCH}", QUICK_BUDGET_S, NAME))
    common.add_standard_arguments(p, device="cpu")
    args = common.parse_standard_arguments(p, argv, sizes=(QUICK_SIZES, DEFAULT_SIZES),
                                           batch=(QUICK_BATCH, DEFAULT_BATCH), budget=(QUICK_BUDGET_S, BUDGET_S),
                                           thread_counts=([torch.get_num_threads()],
                                                          sorted({1, torch.get_num_threads()})))
    config = common.timing_config(args, MIN_REPEATS, MAX_REPEATS,
                                  {"sizes": list(args.sizes), "batch": args.batch, "dtypes": args.dtypes,
                                   "cases": args.cases, "thread_counts": args.thread_counts})
    return common.run_table(args, NAME, TITLE, COLUMNS, lambda: run(
        args.sizes, args.batch, args.dtypes, args.repeats, seed=args.seed, device=args.device,
        budget_s=args.budget, verbose=True, cases=args.cases, thread_counts=args.thread_counts),
        notes_for, config=config, elapsed=False)


if __name__ == "__main__":
    sys.exit(main())
