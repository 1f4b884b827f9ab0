"""Benchmark: ``matbp.projector`` against PyTorch's eigh + mask composition.

The op is the orthogonal projector Π_A = A A⁺ onto the numerical range of a
symmetric A (B, n, n): eigenvalues with |λ| ≤ rtol·max|λ| count as zero,
rtol = n·eps (matbp's default).  Two competitors run in the same process on
the same input, interleaved per repetition so machine noise hits both alike:

* ``matbp``: ``matbp.projector(A)`` (float64 inside), the paper's eq. (19)
  backward formed in A's eigenbasis.
* ``torch``: ``L, V = torch.linalg.eigh(A)``, mask = |L| > rtol·max|L|
  (a constant), ``Π = (V * mask) @ V.mT``; autograd (through ``eigh``) for
  the backward.

Two modes: forward only (under ``torch.no_grad()``) and forward+backward
(``Π.backward(G)`` with a fixed random upstream gradient G = randn(B, n, n), on
a fresh leaf each call).  Sizes: B = 256 at n = 8, 32, 64; float64.

Input: low-rank PSD A = X Xᵀ / r with X = randn(B, n, r), r = n/2, so Π has
rank n/2 and is non-trivial; the zero eigenvalues of A come out of eigh as
noise of size ~eps·||A||, far below the threshold, and the smallest non-zero
eigenvalue is far above it.  The warm-up call of each competitor doubles as the
correctness check: on fwd rows, matbp's Π against torch's (relative
Frobenius difference), the rank tr Π of both (expected n/2) and the
idempotency ||Π² − Π||_F / sqrt(n); on fwd+bwd rows, matbp's gradient against
torch's (eq. (19) holds for torch's composition here: the rank is locally
constant and no two eigenvalues are exactly equal), and whether each gradient
is finite.

Usage::

    python bench/bench_projector.py                # full run, writes bench/results/projector_cpu.{json,md}
    python bench/bench_projector.py --quick        # demo-sized (B = 32, ~0.3 s per case): projector_cpu_quick.*
    python bench/bench_projector.py --sizes 32 --modes fwd+bwd --repeats 9 --no-write

From another script (``bench/`` is not a package)::

    sys.path.insert(0, "bench"); import bench_projector
    rows = bench_projector.run([8, 32], batch=32, budget_s=0.3)
    bench_projector.print_rows(rows)

Exit status: 1 if a matbp correctness check fails (projector, rank,
idempotency or gradient out of tolerance, or a non-finite gradient); 0
otherwise.  There is no performance target yet, so ``--strict`` changes
nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import matbp  # noqa: E402

NAME = "projector"
TITLE = "matbp.projector vs torch eigh + mask + V Vᵀ (rank-n/2 PSD input)"

DTYPES = {"float64": torch.float64}
DEFAULT_DTYPES = ("float64",)
MODES = ("fwd", "fwd+bwd")
COMPETITORS = ("matbp", "torch")

DEFAULT_SIZES = (8, 32, 64)
DEFAULT_BATCH = 256
QUICK_BATCH = 32
QUICK_BUDGET_S = 0.3

# Adaptive repetition count: about BUDGET_S seconds per (n, mode).
BUDGET_S = 3.0
MIN_REPEATS = 3
MAX_REPEATS = 50

# Tolerances for matbp (float64): projector difference and idempotency
# TOL_FACTOR * n * eps; gradient: relative Frobenius difference from torch's.
TOL_FACTOR = 100.0
GRAD_TOL = 1e-9


# --------------------------------------------------------------------------
# Competitors
# --------------------------------------------------------------------------

def default_rtol(n: int, dtype: torch.dtype) -> float:
    """matbp's default relative threshold, n·eps."""
    return n * torch.finfo(dtype).eps


def matbp_projector(A: torch.Tensor) -> torch.Tensor:
    return matbp.projector(A)


def torch_projector(A: torch.Tensor) -> torch.Tensor:
    """eigh, mask of the eigenvalues above rtol·max|λ| (constant), V diag(mask) Vᵀ; autograd."""
    L, V = torch.linalg.eigh(A)
    with torch.no_grad():
        tol = default_rtol(A.shape[-1], A.dtype) * L.abs().amax(dim=-1, keepdim=True)
        mask = (L.abs() > tol).to(A.dtype)
    return (V * mask.unsqueeze(-2)) @ V.mT


FUNCS = {"matbp": matbp_projector, "torch": torch_projector}


def _ranks(P: torch.Tensor) -> list[int]:
    """Distinct values of round(tr Π) over the batch."""
    tr = torch.diagonal(P.detach().to(torch.float64), dim1=-2, dim2=-1).sum(-1)
    return sorted({int(x) for x in tr.round().tolist()})


# --------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------

COLUMNS = [
    *common.standard_columns("batch", "n", "rank", "dtype", "mode", "repeats"),
    *common.timing_columns(COMPETITORS, ".2f"),
    common.Column("ranks", "tr Π matbp/torch", align="left"),
    *common.columns(common.fmt_err, p_diff="Π diff", idem_err="||Π²-Π||", grad_diff="gA diff"),
    *common.columns(align="left", finite_matbp="grad matbp", finite_torch="grad torch"),
    *common.standard_columns("correct"),
]


def make_input(n: int, batch: int, dtype: torch.dtype, seed: int = 0,
               device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A = X Xᵀ / r, X = randn(B, n, r), r = n/2 (float64, fixed seed per n); G = randn(B, n, n)."""
    r = max(1, n // 2)
    g = torch.Generator().manual_seed(seed * 1_000_003 + n)
    X = torch.randn(batch, n, r, generator=g, dtype=torch.float64)
    A = X @ X.mT / r
    A = (A + A.mT) / 2
    G = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
    return A.to(dtype=dtype, device=device), G.to(dtype=dtype, device=device)


def bench_one(n: int, batch: int, dtype: torch.dtype, mode: str, *,
              repeats: int | None = None, seed: int = 0, device: str = "cpu",
              budget_s: float = BUDGET_S) -> dict:
    A, G = make_input(n, batch, dtype, seed, device)
    fns = common.timed_calls(FUNCS, A, mode, grad=G)

    rank = max(1, n // 2)
    row: dict = {"batch": batch, "n": n, "rank": rank, "dtype": common.dtype_name(dtype), "mode": mode}

    # Warm-up (untimed) doubles as the correctness check.
    out = {name: fns[name]() for name in COMPETITORS}
    tol = TOL_FACTOR * n * torch.finfo(dtype).eps
    if mode == "fwd":
        Pm, Pt = out["matbp"], out["torch"]
        rm, rt = _ranks(Pm), _ranks(Pt)
        row["ranks"] = f"{'/'.join(map(str, rm))} / {'/'.join(map(str, rt))}"
        row["p_diff"] = common.rel_fro(Pm, Pt)
        P64 = Pm.detach().to(torch.float64)
        row["idem_err"] = (torch.linalg.matrix_norm(P64 @ P64 - P64) / math.sqrt(n)).max().item()
        row["tol"] = tol
        row["correct"] = bool(rm == [rank] and row["p_diff"] <= tol and row["idem_err"] <= tol)
    else:
        row["grad_diff"] = common.rel_fro(out["matbp"], out["torch"])
        row["finite_matbp"] = common.finite_text(out["matbp"])
        row["finite_torch"] = common.finite_text(out["torch"])
        row["tol"] = GRAD_TOL
        row["correct"] = bool(row["finite_matbp"] == "finite"
                              and (row["finite_torch"] != "finite" or row["grad_diff"] <= GRAD_TOL))
    del out

    row.update(common.time_pair(fns, budget_s=budget_s, min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS,
                                repeats=repeats, device=device))
    return row


def _progress(row: dict, seconds: float) -> str:
    check = (f"gA diff {common.fmt_err(row['grad_diff'])} torch {row['finite_torch']}"
             if row["mode"] == "fwd+bwd" else
             f"Π diff {common.fmt_err(row['p_diff'])} tr Π {row['ranks']}")
    return common.pair_progress(f"B={row['batch']:<4} n={row['n']:<4}", row, check, seconds)


def run(sizes=DEFAULT_SIZES, batch: int = DEFAULT_BATCH, dtypes=DEFAULT_DTYPES, modes=MODES,
        repeats: int | None = None, *, seed: int = 0, device: str = "cpu",
        budget_s: float = BUDGET_S, verbose: bool = False) -> list[dict]:
    """One row (dict) per (n, dtype, mode); ``repeats`` None: adaptive (>= 3, ``budget_s`` s per case)."""
    cases = [(int(n), common.as_dtype(d), mode) for d in dtypes for n in sizes for mode in modes]
    return common.collect(cases, lambda n, dtype, mode: bench_one(
        n, int(batch), dtype, mode, repeats=repeats, seed=seed, device=device, budget_s=budget_s),
        _progress if verbose else None)


def notes_for(rows: list[dict]) -> list[str]:
    notes = [
        common.PAIRED_TIMES_NOTE + " fwd = under no_grad; fwd+bwd = Π.backward(G) "
        "with a fixed G = randn(B, n, n) on a fresh leaf per call.",
        "torch = eigh + mask |λ| > n·eps·max|λ| (constant) + V diag(mask) Vᵀ with autograd; matbp uses "
        "the same default threshold. A = X Xᵀ / r, X = randn(B, n, r), r = n/2 (rank column).",
        "fwd rows: tr Π = distinct round(trace) over the batch (matbp / torch); Π diff = max over the "
        "batch of ||Π_matbp - Π_torch||_F / ||Π_torch||_F; ||Π²-Π|| = max ||Π² - Π||_F / sqrt(n) for "
        f"matbp; tolerance {TOL_FACTOR:g} * n * eps. fwd+bwd rows: gA diff = the same relative difference "
        f"of the gradients (tolerance {GRAD_TOL:g}); grad = 'finite' or 'NaN in k/B' from the warm-up call.",
    ]
    return common.add_note(notes, "CORRECTNESS FAILURES: ",
                           [f"{r['dtype']} n={r['n']} {r['mode']}" for r in rows if not r["correct"]])


def print_rows(rows: list[dict], env: dict | None = None) -> None:
    common.print_table(rows, COLUMNS, title=TITLE, env=env, notes=notes_for(rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                   help=f"matrix sizes n (default {' '.join(map(str, DEFAULT_SIZES))}); rank n/2")
    p.add_argument("--batch", type=int, default=None,
                   help=f"batch size B (default {DEFAULT_BATCH}; --quick: {QUICK_BATCH})")
    common.add_case_arguments(p, modes=MODES, min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS,
                              budget_s=BUDGET_S,
                              quick=common.quick_help(f"B={QUICK_BATCH}", QUICK_BUDGET_S, NAME))
    common.add_standard_arguments(p, device="cpu")
    args = common.parse_standard_arguments(p, argv, batch=(QUICK_BATCH, DEFAULT_BATCH),
                                           budget=(QUICK_BUDGET_S, BUDGET_S))
    config = common.timing_config(args, MIN_REPEATS, MAX_REPEATS, {
        "sizes": args.sizes, "batch": args.batch, "dtypes": list(DEFAULT_DTYPES), "modes": args.modes,
        "input": "X Xᵀ / r, X = randn(B, n, r), r = n/2, float64", "rtol": "n * eps (default)"})
    return common.run_table(args, NAME, TITLE, COLUMNS, lambda: run(
        args.sizes, args.batch, DEFAULT_DTYPES, args.modes, args.repeats, seed=args.seed, device=args.device,
        budget_s=args.budget, verbose=True), notes_for, config=config)


if __name__ == "__main__":
    sys.exit(main())
