"""Benchmark: ``matbp.sym_fn`` (log, sqrt) against PyTorch's eigh composition.

The op is F = f(A) = V f(Λ) Vᵀ of a symmetric positive definite A (B, n, n),
fn in "log" and "sqrt".  Two competitors run in the same process on the same
input, interleaved per repetition so machine noise hits both alike:

* ``matbp``: ``matbp.sym_fn(A, fn)`` (float64 inside, returned in A's dtype),
  Daleckii–Krein backward.
* ``torch``: ``L, V = torch.linalg.eigh(A)``, ``F = (V * f(L).unsqueeze(-2)) @ V.mT``
  in A's own dtype; autograd (through ``eigh``) for the backward.

Two modes: forward only (under ``torch.no_grad()``) and forward+backward
(``F.backward(G)`` with a fixed random upstream gradient G = randn(B, n, n), on
a fresh leaf each call).  Shapes: B = 256 at n = 8, 32, 64 and B = 64 at
n = 256; dtypes float64 and float32.

Input (timing table): A = Q diag(λ) Qᵀ with Q the QR factor of a Gaussian
matrix and λ log-spaced in (0.1, 10) with a random jitter per matrix
(consecutive eigenvalues differ by a factor of at least 10^(1/n)), drawn in
float64 with a fixed seed per n (same values for both dtypes), then cast.  The
spectrum is separated, so torch's composition has a correct gradient there
and serves as the reference: the warm-up call of each competitor doubles as
the correctness check, comparing matbp's F (fwd rows) and gradient gA
(fwd+bwd rows) with the torch composition in float64 at the same (rounded)
input -- the competitor itself for float64 rows; for float32 rows the table
also shows torch's own float32 difference from that reference.

A second table (``ties``) has one row per (fn, dtype, n) on a matrix with an
exactly repeated eigenvalue, A = diag(λ) (B = 8 copies, a different G each)
with λ = linspace(0.5, 2, n) and λ₁ = λ₀: eigh returns the tie exactly, so the
eigh composition divides 0 by 0 and its gradient is NaN, while matbp's
gradient is finite and exact.  matbp's gradient is checked against the closed
form gA = F¹ ∘ sym(G) (V = I), with the first divided differences
F¹_ij = (f(λ_i) − f(λ_j)) / (λ_i − λ_j) and F¹_ii = f′(λ_i) evaluated in
float64 without cancellation.

Usage::

    python bench/bench_sym_fn.py                 # full run, writes bench/results/sym_fn_cpu.{json,md}
    python bench/bench_sym_fn.py --quick         # demo-sized run (B / 8, ~0.3 s per case): sym_fn_cpu_quick.*
    python bench/bench_sym_fn.py --fns log --sizes 32 64 --dtypes float64 --modes fwd+bwd --no-write

From another script (``bench/`` is not a package)::

    sys.path.insert(0, "bench"); import bench_sym_fn
    rows = bench_sym_fn.run(["log"], [8, 32], batch_scale=0.1, budget_s=0.3)
    ties = bench_sym_fn.run_ties(["log"], [8, 32])
    bench_sym_fn.print_rows(rows, ties)

Exit status: 1 if a matbp correctness check fails (forward or gradient
difference above tolerance, a non-finite matbp gradient, or a wrong gradient
at the repeated eigenvalue); 0 otherwise.  torch's NaN gradients at the tie
are results, not failures.  There is no performance target yet, so
``--strict`` changes nothing.
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

NAME = "sym_fn"
TITLE = "matbp.sym_fn vs torch eigh composition (F = V f(Λ) Vᵀ, SPD input)"
TIE_TITLE = "sym_fn gradient at an exactly repeated eigenvalue (A = diag(λ), λ₀ = λ₁)"

FNS = ("log", "sqrt")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_DTYPES = ("float64", "float32")
MODES = ("fwd", "fwd+bwd")
COMPETITORS = ("matbp", "torch")

DEFAULT_SIZES = (8, 32, 64, 256)
LARGE_N = 256          # n >= LARGE_N runs at LARGE_BATCH
DEFAULT_BATCH = 256
LARGE_BATCH = 64
QUICK_BATCH_SCALE = 0.125   # --quick: B = 32 (n <= 64), 8 (n = 256)
QUICK_BUDGET_S = 0.3

# Adaptive repetition count: about BUDGET_S seconds per (fn, n, dtype, mode).
BUDGET_S = 1.5
MIN_REPEATS = 3
MAX_REPEATS = 30

# Eigenvalues of the timing input: log-spaced in (10^LOG10_LO, 10^LOG10_HI).
LOG10_LO, LOG10_HI = -1.0, 1.0

# Tie table.
TIE_BATCH = 8
TIE_RANGE = (0.5, 2.0)

# matbp vs the float64 reference: relative Frobenius difference, max over the batch.
TOL = {"float64": 1e-10, "float32": 1e-5}
# The same for the float32 compute mode (issue bound on its gradient error).
TOL_F32_MODE = 1e-4


# --------------------------------------------------------------------------
# Competitors
# --------------------------------------------------------------------------

def _f(L: torch.Tensor, fn: str) -> torch.Tensor:
    if fn == "log":
        return L.log()
    if fn == "sqrt":
        return L.sqrt()
    raise ValueError(f"unknown fn {fn!r}")


def torch_sym_fn(A: torch.Tensor, fn: str) -> torch.Tensor:
    """PyTorch composition in A's own dtype; autograd differentiates it."""
    L, V = torch.linalg.eigh(A)
    return (V * _f(L, fn).unsqueeze(-2)) @ V.mT


def matbp_sym_fn(A: torch.Tensor, fn: str) -> torch.Tensor:
    return matbp.sym_fn(A, fn)


def matbp_sym_fn_f32(A: torch.Tensor, fn: str) -> torch.Tensor:
    """matbp's float32 compute mode."""
    return matbp.sym_fn(A, fn, compute_dtype=torch.float32)


FUNCS = {"matbp": matbp_sym_fn, "torch": torch_sym_fn}
# The "matbp" competitor per compute dtype (None: float64, the default).
MATBP_FUNCS = {None: matbp_sym_fn, torch.float32: matbp_sym_fn_f32}


# --------------------------------------------------------------------------
# Timing table
# --------------------------------------------------------------------------

COLUMNS = [
    *common.standard_columns("fn", "batch", "n", "dtype", "mode", "repeats"),
    *common.timing_columns(COMPETITORS, ".2f"),
    *common.columns(common.fmt_err, fwd_diff_matbp="F diff matbp", fwd_diff_torch="F diff torch",
                    grad_diff_matbp="gA diff matbp", grad_diff_torch="gA diff torch"),
    *common.standard_columns("correct"),
]


def batch_for(n: int, scale: float = 1.0, batch: int | None = None) -> int:
    """B = 256 for n < 256, 64 for n >= 256 (times ``scale``), unless ``batch`` is given."""
    if batch is not None:
        return int(batch)
    base = LARGE_BATCH if n >= LARGE_N else DEFAULT_BATCH
    return max(1, int(round(base * scale)))


def make_input(n: int, batch: int, dtype: torch.dtype, seed: int = 0,
               device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """SPD A = Q diag(λ) Qᵀ with separated λ in (0.1, 10), and G = randn(B, n, n).

    Drawn in float64 (fixed seed per n, same values for every dtype), then cast.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + n)
    Q, _ = torch.linalg.qr(torch.randn(batch, n, n, generator=g, dtype=torch.float64))
    jitter = torch.rand(batch, n, generator=g, dtype=torch.float64)
    pos = (torch.arange(n, dtype=torch.float64) + 0.25 + 0.5 * jitter) / n     # in (0, 1), increasing
    lam = 10.0 ** (LOG10_LO + (LOG10_HI - LOG10_LO) * pos)
    A = (Q * lam.unsqueeze(-2)) @ Q.mT
    A = (A + A.mT) / 2
    G = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
    return A.to(dtype=dtype, device=device), G.to(dtype=dtype, device=device)


def reference(A: torch.Tensor, G: torch.Tensor, fn: str) -> tuple[torch.Tensor, torch.Tensor]:
    """F and gA of the torch composition in float64 at A (as given in its dtype)."""
    A64 = A.detach().to(torch.float64).requires_grad_()
    F = torch_sym_fn(A64, fn)
    F.backward(G.to(torch.float64))
    return F.detach(), A64.grad


def bench_one(fn: str, n: int, batch: int, dtype: torch.dtype, mode: str, *,
              repeats: int | None = None, seed: int = 0, device: str = "cpu",
              budget_s: float = BUDGET_S, inputs: tuple | None = None,
              ref: tuple | None = None, compute_dtype: torch.dtype | None = None) -> dict:
    """One timing row; ``inputs`` = (A, G) and ``ref`` = :func:`reference` may
    be passed in; ``compute_dtype`` is matbp's (torch.float32: its float32
    compute mode)."""
    A, G = inputs if inputs is not None else make_input(n, batch, dtype, seed, device)
    fns = common.timed_calls({**FUNCS, "matbp": MATBP_FUNCS[compute_dtype]}, A, mode, grad=G, args=(fn,))

    dt = common.dtype_name(dtype)
    row: dict = {"fn": fn, "batch": batch, "n": n, "dtype": dt, "mode": mode}

    # Warm-up (untimed) doubles as the correctness check against the float64 composition.
    F_ref, g_ref = ref if ref is not None else reference(A, G, fn)
    out = {name: fns[name]() for name in COMPETITORS}
    key = "fwd_diff" if mode == "fwd" else "grad_diff"
    target = F_ref if mode == "fwd" else g_ref
    row[f"{key}_matbp"] = common.rel_fro(out["matbp"], target)
    # For float64 the reference IS the torch competitor: no separate torch column.
    row[f"{key}_torch"] = None if dtype == torch.float64 else common.rel_fro(out["torch"], target)
    if mode == "fwd+bwd":
        row["finite_matbp"] = common.finite_text(out["matbp"])
        row["finite_torch"] = common.finite_text(out["torch"])
    row["tol"] = TOL_F32_MODE if compute_dtype == torch.float32 else TOL[dt]
    err = row[f"{key}_matbp"]
    row["correct"] = bool(err <= row["tol"])  # False for NaN
    del out

    row.update(common.time_pair(fns, budget_s=budget_s, min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS,
                                repeats=repeats, device=device))
    return row


def _progress(row: dict, seconds: float) -> str:
    diff = row.get("fwd_diff_matbp", row.get("grad_diff_matbp"))
    return common.pair_progress(f"{row['fn']:>4} B={row['batch']:<4} n={row['n']:<4}", row,
                                f"diff {common.fmt_err(diff)}", seconds)


def run(fns=FNS, sizes=DEFAULT_SIZES, dtypes=DEFAULT_DTYPES, modes=MODES,
        repeats: int | None = None, *, batch_scale: float = 1.0, batch: int | None = None,
        seed: int = 0, device: str = "cpu", budget_s: float = BUDGET_S,
        verbose: bool = False) -> list[dict]:
    """Run the timing table; one row (dict) per (fn, n, dtype, mode).

    B is 256 (n < 256) or 64 (n >= 256), times ``batch_scale``, unless
    ``batch`` is given; ``repeats`` None picks an adaptive count (>= 3) from
    ``budget_s`` seconds per case.
    """
    rows = []
    for fn in fns:
        for n in sizes:
            B = batch_for(int(n), batch_scale, batch)
            for d in dtypes:
                dtype = common.as_dtype(d)
                rows += common.collect_modes(
                    modes, lambda: make_input(int(n), B, dtype, seed, device),
                    lambda *inputs: reference(*inputs, fn),
                    lambda mode, inputs, ref: bench_one(fn, int(n), B, dtype, mode, repeats=repeats, seed=seed,
                                                        device=device, budget_s=budget_s, inputs=inputs, ref=ref),
                    _progress if verbose else None)
    return rows


def notes_for(rows: list[dict]) -> list[str]:
    notes = [
        common.PAIRED_TIMES_NOTE + " fwd = under no_grad; fwd+bwd = F.backward(G) "
        "with a fixed G = randn(B, n, n) on a fresh leaf per call.",
        "torch = eigh + V f(L) Vᵀ in A's dtype with autograd; matbp computes in float64 and returns A's "
        "dtype. A = Q diag(λ) Qᵀ, λ log-spaced in (0.1, 10) with jitter (separated spectrum), float64 "
        "draw then cast.",
        "F diff / gA diff: max over the batch of ||X - X_ref||_F / ||X_ref||_F, X_ref = the torch "
        "composition in float64 at the same input (for float64 rows that is the torch competitor "
        "itself, so its column is '-'); F on fwd rows, gA on fwd+bwd rows. Tolerance for matbp: "
        + ", ".join(f"{k} {v:g}" for k, v in TOL.items()) + ".",
    ]
    return common.add_note(notes, "CORRECTNESS FAILURES: ",
                           [f"{r['fn']} {r['dtype']} n={r['n']} {r['mode']}" for r in rows if not r["correct"]])


# --------------------------------------------------------------------------
# Tie table
# --------------------------------------------------------------------------

TIE_COLUMNS = [
    *common.standard_columns("fn", "dtype", "n", "batch"),
    common.Column("lam", "repeated λ", ".4g"),
    *common.columns(align="left", torch_grad="torch grad", matbp_grad="matbp grad"),
    common.Column("matbp_err", "matbp gA err", common.fmt_err),
    *common.standard_columns("correct"),
]


def tie_input(n: int, batch: int, dtype: torch.dtype, seed: int = 0,
              device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A = diag(λ) (B copies), λ = linspace(0.5, 2, n) with λ₁ = λ₀, in dtype; G = randn(B, n, n).

    Returns (A, G, λ as float64 of the dtype-rounded values).
    """
    lam = torch.linspace(TIE_RANGE[0], TIE_RANGE[1], n, dtype=torch.float64)
    lam[1] = lam[0]
    lam = lam.to(dtype)
    A = torch.diag_embed(lam).expand(batch, n, n).contiguous()
    g = torch.Generator().manual_seed(seed * 1_000_003 + 7 * n + 1)
    G = torch.randn(batch, n, n, generator=g, dtype=torch.float64).to(dtype)
    return A.to(device), G.to(device), lam.to(torch.float64)


def divided_differences(lam: torch.Tensor, fn: str) -> torch.Tensor:
    """F¹_ij = (f(λ_i) - f(λ_j)) / (λ_i - λ_j), F¹_ii = f'(λ_i), in float64 without cancellation."""
    a, b = lam.unsqueeze(-1), lam.unsqueeze(-2)
    diff = a - b
    same = diff == 0
    safe = torch.where(same, torch.ones_like(diff), diff)
    if fn == "log":
        dd = torch.log1p(safe / b) / safe               # log(a/b) / (a - b)
        deriv = 1.0 / a.expand_as(diff)
    elif fn == "sqrt":
        dd = 1.0 / (a.sqrt() + b.sqrt())                # (√a - √b) / (a - b)
        deriv = 0.5 / a.sqrt().expand_as(diff)
    else:
        raise ValueError(f"unknown fn {fn!r}")
    return torch.where(same, deriv, dd)


def tie_one(fn: str, n: int, dtype: torch.dtype, *, batch: int = TIE_BATCH, seed: int = 0,
            device: str = "cpu") -> dict:
    A, G, lam = tie_input(n, batch, dtype, seed, device)
    grads = {}
    for name in COMPETITORS:
        Al = A.detach().requires_grad_()
        FUNCS[name](Al, fn).backward(G)
        grads[name] = Al.grad
    G64 = G.to(torch.float64)
    ref = divided_differences(lam.to(device), fn) * ((G64 + G64.mT) / 2)   # V = I
    dt = common.dtype_name(dtype)
    err = common.rel_fro(grads["matbp"], ref)
    return {
        "fn": fn, "dtype": dt, "n": n, "batch": batch, "lam": lam[0].item(),
        "torch_grad": common.finite_text(grads["torch"]),
        "matbp_grad": common.finite_text(grads["matbp"]),
        "torch_err": common.rel_fro(grads["torch"], ref),
        "matbp_err": err,
        "tol": TOL[dt],
        "correct": bool(err <= TOL[dt]),
    }


def _tie_progress(row: dict, seconds: float) -> str:
    return (f"  tie {row['fn']:>4} {row['dtype']:>7} n={row['n']:<4} torch {row['torch_grad']:<12} "
            f"matbp {row['matbp_grad']:<8} err {common.fmt_err(row['matbp_err'])} "
            f"{'ok' if row['correct'] else 'WRONG'}")


def run_ties(fns=FNS, sizes=DEFAULT_SIZES, dtypes=DEFAULT_DTYPES, *, batch: int = TIE_BATCH,
             seed: int = 0, device: str = "cpu", verbose: bool = False) -> list[dict]:
    """One row per (fn, dtype, n) at an exactly repeated eigenvalue."""
    cases = [(fn, int(n), common.as_dtype(d)) for fn in fns for d in dtypes for n in sizes]
    return common.collect(cases, lambda fn, n, dtype: tie_one(fn, n, dtype, batch=batch, seed=seed, device=device),
                          _tie_progress if verbose else None)


def tie_notes(rows: list[dict]) -> list[str]:
    notes = [
        f"A = diag(λ), λ = linspace({TIE_RANGE[0]:g}, {TIE_RANGE[1]:g}, n) with λ₁ = λ₀ (an exactly "
        f"repeated eigenvalue; eigh returns it exactly), B = {TIE_BATCH} copies with different "
        "G = randn(n, n); gradient of <G, f(A)>. 'NaN in k/B' = k matrices of the batch have a NaN "
        "entry ('inf' when none is NaN).",
        "matbp gA err: max over the batch of ||gA - gA_ref||_F / ||gA_ref||_F with the closed form "
        "gA_ref = F¹ ∘ sym(G) (F¹ the first divided differences of f, F¹_ii = f'(λ_i), float64). "
        "Tolerance: " + ", ".join(f"{k} {v:g}" for k, v in TOL.items()) + ".",
    ]
    return common.add_note(notes, "CORRECTNESS FAILURES: ",
                           [f"{r['fn']} {r['dtype']} n={r['n']}" for r in rows if not r["correct"]])


# --------------------------------------------------------------------------
# Accuracy table: adversarial spectra against a 50-digit reference
# --------------------------------------------------------------------------

ACC_TITLE = "sym_fn gradient error on adversarial spectra vs a 50-digit mpmath reference (float32 input)"
ACC_N = 8
ACC_FNS = (("log", None), ("sqrt", None), ("pow", -0.5), ("exp", None))


def acc_families(n: int = ACC_N) -> dict[str, torch.Tensor]:
    """The spectra of the accuracy table (float64; A = Q diag(λ) Qᵀ, then rounded to float32)."""
    i = torch.arange(n, dtype=torch.float64)
    return {
        "random": 0.5 + 1.5 * (i + 0.3 * torch.sin(7 * i)) / n,
        "repeated": 1.0 + torch.div(i, 3, rounding_mode="floor"),
        "clustered 1e-12": torch.where(i % 2 == 1, 1.0 + i * 1e-12, i + 2.0),
        "graded 1e-4..1": 10.0 ** (-4.0 * (n - 1 - i) / (n - 1)),
        "graded 1e-12..1": 10.0 ** (-12.0 * (n - 1 - i) / (n - 1)),
        "half zero": torch.where(i < n // 2, torch.zeros(n, dtype=torch.float64), 1.0 + i),
    }


def _acc_competitors(fn: str, p: float | None) -> dict:
    def composition(dtype):
        def f(A):
            L, V = torch.linalg.eigh(A.to(dtype))
            fL = {"log": L.log, "sqrt": L.sqrt, "exp": L.exp, "pow": lambda: L.pow(p)}[fn]()
            return (V * fL.unsqueeze(-2)) @ V.mT
        return f
    return {
        "matbp_f32": lambda A: matbp.sym_fn(A, fn, p, compute_dtype=torch.float32),
        "matbp_f64": lambda A: matbp.sym_fn(A, fn, p),
        "torch_f32": composition(torch.float32),
        "torch_f64": composition(torch.float64),
    }


ACC_COMPETITORS = ("matbp_f32", "matbp_f64", "torch_f32", "torch_f64")
ACC_COLUMNS = [
    *common.standard_columns("fn", "n"),
    *common.columns(align="left", family="spectrum"),
    *common.columns(common.fmt_err, matbp_f32="matbp f32 mode", matbp_f64="matbp (float64)",
                    torch_f32="torch float32", torch_f64="torch float64"),
    *common.standard_columns("correct"),
]


def acc_one(fn: str, p: float | None, family: str, *, n: int = ACC_N, seed: int = 0) -> dict:
    """||gA - gA_ref||_F / ||gA_ref||_F of <W, f(A)> per competitor, at the
    float32-rounded A (what float32 input determines); text where the
    competitor raises or the reference does not exist (float32 rounding made
    A leave f's domain)."""
    tests_dir = os.path.join(common.REPO_ROOT, "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from hvp_reference import sym_fn_gradient_reference  # noqa: E402

    g = torch.Generator().manual_seed(seed * 1_000_003 + 11 * n)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = acc_families(n)[family]
    A32 = ((Q * lam) @ Q.mT).to(torch.float32)
    A32 = torch.tril(A32) + torch.tril(A32, -1).mT  # exactly symmetric after rounding
    W = torch.randn(n, n, generator=g, dtype=torch.float64)
    row = {"fn": fn if p is None else f"{fn} p={p:g}", "n": n, "family": family}
    try:
        ref = sym_fn_gradient_reference(A32.double(), W, fn, p)
    except TypeError:  # mpmath returned a complex value: outside f's domain
        ref = None
    for name, f in _acc_competitors(fn, p).items():
        A = A32.clone().requires_grad_()
        try:
            (f(A) * W.to(torch.float32 if name != "torch_f64" else torch.float64)).sum().backward()
        except RuntimeError as e:
            message = str(e)
            row[name] = "raises: " + ("not in domain" if "is not defined" in message else
                                      "gradient unbounded" if "overflows" in message else message[:40])
            continue
        grad = A.grad.double()
        grad = (grad + grad.mT) / 2
        if not torch.isfinite(grad).all():
            row[name] = "NaN" if torch.isnan(grad).any() else "inf"
        elif ref is None:
            row[name] = "finite (no ref)"
        else:
            row[name] = common.rel_fro(grad, ref)
    # matbp's float32 mode: never NaN; where the reference exists, within
    # 1e-4 or float32's bound for a backward-stable solver, 10 n eps32 kappa
    # (kappa = max|λ| / min|λ|: graded spectra cost float32 digits whatever
    # computes them).
    lam_abs = lam.abs()
    kappa = (lam_abs.max() / lam_abs.min()).item() if lam_abs.min() > 0 else math.inf
    row["tol"] = max(TOL_F32_MODE, 10 * n * torch.finfo(torch.float32).eps * kappa)
    v = row["matbp_f32"]
    row["correct"] = (isinstance(v, float) and v <= row["tol"]) or (
        isinstance(v, str) and v != "NaN" and (v.startswith("raises") or ref is None or v == "inf"))
    return row


def run_accuracy(fns=ACC_FNS, *, n: int = ACC_N, seed: int = 0, verbose: bool = False) -> list[dict]:
    cases = [(fn, p, family) for fn, p in fns for family in acc_families(n)]
    return common.collect(cases, lambda fn, p, family: acc_one(fn, p, family, n=n, seed=seed),
                          (lambda r, t: f"  acc {r['fn']:>10} {r['family']:<16} "
                           + " ".join(f"{k} {common.fmt_err(r[k])}" for k in ACC_COMPETITORS))
                          if verbose else None)


def acc_notes(rows: list[dict]) -> list[str]:
    notes = [
        f"A = Q diag(λ) Qᵀ (n = {ACC_N}, Q random orthogonal) rounded to float32, W = randn(n, n); "
        "gradient of <W, f(A)>; error = ||gA - gA_ref||_F / ||gA_ref||_F with gA_ref the first-order "
        "Daleckii–Krein gradient in a 50-digit mpmath eigendecomposition at the float32-rounded A "
        "(tests/hvp_reference.py), so input rounding is not counted. 'matbp f32 mode' = "
        "compute_dtype=torch.float32; 'torch float32/float64' = eigh + V f(L) Vᵀ with autograd in that "
        "dtype. 'raises: not in domain': float32's rounding left an eigenvalue outside f's domain "
        "(graded to 1e-12 is singular at float32's precision); 'inf': sqrt's gradient at a zero "
        "eigenvalue is unbounded; 'no ref': the rounded matrix has no real f(A).",
        f"correct: matbp's float32 mode is never NaN and, where the reference exists, within "
        f"max({TOL_F32_MODE:g}, 10 n eps32 κ) of it, κ = max|λ| / min|λ| (float32's bound for a "
        "backward-stable eigensolver: the graded spectra lose digits to float32 whatever computes them, "
        "torch's float32 composition as much).",
    ]
    return common.add_note(notes, "CORRECTNESS FAILURES: ",
                           [f"{r['fn']} {r['family']}" for r in rows if not r["correct"]])


def print_rows(rows: list[dict], ties: list[dict] | None = None, env: dict | None = None,
               accuracy: list[dict] | None = None) -> None:
    if rows:
        common.print_table(rows, COLUMNS, title=TITLE, env=env, notes=notes_for(rows))
    if ties:
        if rows:
            print()
        common.print_table(ties, TIE_COLUMNS, title=TIE_TITLE, notes=tie_notes(ties))
    if accuracy:
        print()
        common.print_table(accuracy, ACC_COLUMNS, title=ACC_TITLE, notes=acc_notes(accuracy))


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fns", nargs="+", choices=FNS, default=list(FNS), help="functions (default log sqrt)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                   help=f"matrix sizes n (default {' '.join(map(str, DEFAULT_SIZES))})")
    p.add_argument("--batch", type=int, default=None,
                   help=f"batch size B for every n (default {DEFAULT_BATCH}; "
                        f"{LARGE_BATCH} at n >= {LARGE_N})")
    common.add_case_arguments(p, dtypes=DTYPES, default_dtypes=DEFAULT_DTYPES, modes=MODES,
                              min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS, budget_s=BUDGET_S,
                              quick=common.quick_help(f"B x {QUICK_BATCH_SCALE:g}", QUICK_BUDGET_S, NAME))
    p.add_argument("--skip-ties", action="store_true", help="skip the repeated-eigenvalue table")
    p.add_argument("--skip-timing", action="store_true", help="skip the timing table")
    p.add_argument("--skip-accuracy", action="store_true",
                   help="skip the adversarial-spectrum accuracy table (50-digit mpmath reference)")
    common.add_standard_arguments(p, device="cpu")
    args = common.parse_standard_arguments(p, argv, budget=(QUICK_BUDGET_S, BUDGET_S))
    scale = QUICK_BATCH_SCALE if args.quick else 1.0

    def run_both():
        rows = [] if args.skip_timing else run(
            args.fns, args.sizes, args.dtypes, args.modes, args.repeats, batch_scale=scale, batch=args.batch,
            seed=args.seed, device=args.device, budget_s=args.budget, verbose=True)
        ties = [] if args.skip_ties else run_ties(args.fns, args.sizes, args.dtypes, seed=args.seed,
                                                  device=args.device, verbose=True)
        accuracy = [] if args.skip_accuracy or args.device != "cpu" else run_accuracy(
            seed=args.seed, verbose=True)
        return rows, ties, accuracy

    env, (rows, ties, accuracy) = common.run_and_print(
        TITLE, args.device, run_both, lambda all3: print_rows(all3[0], all3[1], accuracy=all3[2]))
    if not args.no_write:
        config = {"fns": args.fns, "sizes": args.sizes,
                  "batch": {int(n): batch_for(int(n), scale, args.batch) for n in args.sizes},
                  "dtypes": args.dtypes, "modes": args.modes,
                  "input": "Q diag(λ) Qᵀ, λ log-spaced in (0.1, 10) with jitter, float64 draw then cast",
                  "repeats": common.repeats_config(args.repeats, args.budget, MIN_REPEATS, MAX_REPEATS),
                  "tie_batch": TIE_BATCH, "seed": args.seed, "interleaved": True}
        tables = []
        if rows:
            tables.append({"key": "timing", "title": TITLE, "rows": rows, "columns": COLUMNS,
                           "notes": notes_for(rows)})
        if ties:
            tables.append({"key": "ties", "title": TIE_TITLE, "rows": ties, "columns": TIE_COLUMNS,
                           "notes": tie_notes(ties)})
        if accuracy:
            tables.append({"key": "accuracy", "title": ACC_TITLE, "rows": accuracy, "columns": ACC_COLUMNS,
                           "notes": acc_notes(accuracy)})
        common.print_written(common.write_tables(common.result_name(NAME, args.device, args.quick), tables,
                                                 env=env, out_dir=args.out, title=TITLE, config=config))
    return common.exit_status(rows + ties + accuracy)


if __name__ == "__main__":
    sys.exit(main())
