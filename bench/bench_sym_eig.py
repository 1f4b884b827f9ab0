"""Benchmark: batched ``matbp.sym_eig`` against ``torch.linalg.eigh``.

Both competitors run in the same process on the same random symmetric batch
(fixed seed), interleaved per repetition so machine noise hits both alike.
The table reports median times (ms), the ratio matbp/torch (with the
interquartile range of the per-repetition paired ratios), a PASS/FAIL mark
against the performance target (ratio <= 0.8 in float64 at n = 8, 32, 64,
256), and a correctness check from the same run: eigenvalues of both agree,
and matbp's ``V diag(L) V^T`` reconstructs ``A`` with orthonormal ``V``.

Usage::

    python bench/bench_sym_eig.py                 # full run, writes bench/results/sym_eig_cpu.{json,md}
    python bench/bench_sym_eig.py --quick         # demo-sized run (sym_eig_cpu_quick.*)
    python bench/bench_sym_eig.py --sizes 8 64 --dtypes float64 --repeats 9 --no-write

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

import matbp  # noqa: E402

NAME = "sym_eig"
TITLE = "matbp.sym_eig vs torch.linalg.eigh (batched, forward only)"

DEFAULT_SIZES = (8, 32, 33, 64, 128, 256)
DEFAULT_BATCH = 256
DEFAULT_DTYPES = ("float32", "float64")
QUICK_SIZES = (8, 32, 64)
QUICK_BATCH = 64
QUICK_BUDGET_S = 0.5  # --quick: adaptive repeats within ~0.5 s per case

# Performance target: matbp/torch <= 0.8 in float64 at these sizes, B = 256.
# Rows at other batch sizes (e.g. --quick) get no PASS/FAIL mark.
TARGET_RATIO = 0.8
TARGET_BATCH = 256
TARGET_DTYPE = torch.float64
TARGET_SIZES = frozenset({8, 32, 64, 256})

# Adaptive repetition count: fill about BUDGET_S seconds per (dtype, n).
BUDGET_S = 10.0
MIN_REPEATS = 3
MAX_REPEATS = 50

# Correctness tolerance: TOL_FACTOR * n * eps(dtype), relative to ||A||.
TOL_FACTOR = 10.0

DTYPES = {"float32": torch.float32, "float64": torch.float64}

COLUMNS = [
    *common.standard_columns("dtype", "n", "batch", "repeats"),
    *common.timing_columns(("matbp", "torch"), ".3f"),
    common.Column("target", "target", lambda v: f"<= {v}"),
    *common.standard_columns("status"),
    *common.columns(".1e", eig_err="eig err", recon_err="recon err", orth_err="orth err"),
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


def bench_one(n: int, batch: int, dtype: torch.dtype, *, repeats: int | None = None,
              seed: int = 0, device: str = "cpu", budget_s: float = BUDGET_S) -> dict:
    a = make_input(n, batch, dtype, seed, device)
    fns = {
        "matbp": lambda: matbp.sym_eig(a),
        "torch": lambda: torch.linalg.eigh(a),
    }
    with torch.no_grad():
        # Warm-up and correctness in one go (these calls are not timed).
        lm, vm = fns["matbp"]()
        lt, _ = fns["torch"]()
        result = check(a, lm, vm, lt)
        del lm, vm, lt
        if repeats is None:
            # One timed probe of each (also a second warm-up) sizes the run.
            probe = common.time_interleaved(fns, repeats=1, warmup=0, device=device)
            per_rep = sum(p["median"] for p in probe.values())
            repeats = common.adaptive_repeats(per_rep, budget_s=budget_s,
                                              min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS)
        timing = common.time_interleaved(fns, repeats=repeats, warmup=0, device=device)

    ms = {k: [s * 1e3 for s in v["samples"]] for k, v in timing.items()}
    ratio, ratio_iqr = common.paired_ratio(ms["matbp"], ms["torch"])
    targeted = dtype == TARGET_DTYPE and n in TARGET_SIZES and batch == TARGET_BATCH
    row = {
        "dtype": common.dtype_name(dtype),
        "n": n,
        "batch": batch,
        "repeats": repeats,
        "matbp_ms": common.median(ms["matbp"]),
        "torch_ms": common.median(ms["torch"]),
        "ratio": ratio,
        "ratio_iqr": ratio_iqr,
        "target": TARGET_RATIO if targeted else None,
        "status": ("PASS" if ratio <= TARGET_RATIO else "FAIL") if targeted else None,
        **result,
        "matbp_samples_ms": ms["matbp"],
        "torch_samples_ms": ms["torch"],
    }
    return row


def _progress(row: dict, seconds: float) -> str:
    return (f"  {row['dtype']:>7} n={row['n']:<4} reps={row['repeats']:<3} "
            f"matbp {row['matbp_ms']:9.3f} ms  torch {row['torch_ms']:9.3f} ms  "
            f"ratio {row['ratio']:.3f}  {row['status'] or ''}")


def run(sizes=DEFAULT_SIZES, batch: int = DEFAULT_BATCH, dtypes=DEFAULT_DTYPES,
        repeats: int | None = None, *, seed: int = 0, device: str = "cpu",
        budget_s: float = BUDGET_S, verbose: bool = False) -> list[dict]:
    """Run the benchmark and return one row (dict) per (dtype, n).

    ``dtypes`` are names ("float32", "float64") or torch dtypes; ``repeats``
    None picks an adaptive count (>= 3, more for small n).
    """
    cases = [(int(n), common.as_dtype(d)) for d in dtypes for n in sizes]
    return common.collect(cases, lambda n, dtype: bench_one(n, int(batch), dtype, repeats=repeats, seed=seed,
                                                            device=device, budget_s=budget_s),
                          _progress if verbose else None)


def notes_for(rows: list[dict]) -> list[str]:
    notes = [
        f"Times are medians over interleaved repetitions; ratio = median(matbp) / median(torch); "
        f"ratio IQR = quartiles of per-repetition paired ratios. Target: ratio <= {TARGET_RATIO} "
        f"in float64 at n in {sorted(TARGET_SIZES)}, B = {TARGET_BATCH} (no mark at other B).",
        f"Errors are relative, max over the batch: eig err = max|L_matbp - L_torch| / ||A||_2, "
        f"recon err = ||V diag(L) V^T - A||_F / ||A||_F, orth err = ||V^T V - I||_F / sqrt(n); "
        f"tolerance {TOL_FACTOR:g} * n * eps(dtype).",
    ]
    common.add_note(notes, "CORRECTNESS FAILURES: ",
                    [f"{r['dtype']} n={r['n']}" for r in rows if not r["correct"]])
    return common.add_note(notes, "Targets missed: ", [f"{r['dtype']} n={r['n']} ({r['ratio']:.3f})"
                                                       for r in rows if r["status"] == "FAIL"])


def print_rows(rows: list[dict], env: dict | None = None) -> None:
    common.print_table(rows, COLUMNS, title=TITLE, env=env, notes=notes_for(rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help=f"matrix sizes n (default {' '.join(map(str, DEFAULT_SIZES))})")
    p.add_argument("--batch", type=int, default=None, help=f"batch size B (default {DEFAULT_BATCH})")
    common.add_case_arguments(p, dtypes=DTYPES, default_dtypes=DEFAULT_DTYPES, min_repeats=MIN_REPEATS,
                              max_repeats=MAX_REPEATS, budget_s=BUDGET_S, quick=common.quick_help(
                                  f"n in {QUICK_SIZES}, B={QUICK_BATCH}", QUICK_BUDGET_S, NAME))
    common.add_standard_arguments(p, device="cpu")
    args = common.parse_standard_arguments(p, argv, sizes=(QUICK_SIZES, DEFAULT_SIZES),
                                           batch=(QUICK_BATCH, DEFAULT_BATCH), budget=(QUICK_BUDGET_S, BUDGET_S))
    config = common.timing_config(args, MIN_REPEATS, MAX_REPEATS,
                                  {"sizes": list(args.sizes), "batch": args.batch, "dtypes": args.dtypes})
    return common.run_table(args, NAME, TITLE, COLUMNS, lambda: run(
        args.sizes, args.batch, args.dtypes, args.repeats, seed=args.seed, device=args.device,
        budget_s=args.budget, verbose=True), notes_for, config=config, elapsed=False)


if __name__ == "__main__":
    sys.exit(main())
