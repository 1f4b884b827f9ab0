"""Benchmark: batched ``matbp.svd`` against ``torch.linalg.svd(full_matrices=False)``.

The op is the thin SVD X = U diag(S) Vᵀ of X (B, m, n), k = min(m, n).  Two
competitors run in the same process on the same input, interleaved per
repetition so machine noise hits both alike:

* ``matbp``: ``U, S, V = matbp.svd(X)`` (float64 inside, returned in X's
  dtype), the K-matrix thin-SVD adjoint as its backward.
* ``torch``: ``U, S, Vh = torch.linalg.svd(X, full_matrices=False)``,
  ``V = Vh.mT``, in X's own dtype; autograd for the backward.

Two modes: forward only (the decomposition under ``torch.no_grad()``) and
forward+backward: the decomposition on a fresh leaf, then ``loss.backward()``
for the gauge-invariant loss (:func:`svd_loss`, the same torch code for both
competitors)::

    loss = Σ_i w_i S_i + Σ_i S_i u_iᵀ G1 v_i + Σ_i S_i ||u_iᵀ H||²
         = <w, S> + <G1, U diag(S) Vᵀ> + <H Hᵀ, U diag(S) Uᵀ>

with fixed random w (B, k), G1 (B, m, n), H (B, m, 4).  The second term is
<G1, X> (its gradient is G1 exactly), the third is a spectral function of
XXᵀ (the matrix absolute value (XXᵀ)^{1/2}), whose gradient goes through the
K-matrix coupling and, for m > n, the (I − UUᵀ) gU S⁻¹ Vᵀ term.  Shapes:
B = 256 at (m, n) = (32, 16), (64, 64), (256, 64); dtypes float64 and float32.

Input: X = P diag(σ) Qᵀ with P, Q the QR factors of Gaussian matrices and σ
log-spaced in (0.5, 2) with a random jitter per matrix (separated singular
values, consecutive σ differing by a factor of at least 4^(1/(2k))), drawn in
float64 with a fixed seed per shape (same values for both dtypes), then cast.
The warm-up call of each competitor doubles as the correctness check: on fwd
rows, matbp's S against torch's float64 S (max |ΔS| / σ_max), the
reconstruction ||U diag(S) Vᵀ − X||_F / ||X||_F and the orthonormality of U
and V; on fwd+bwd rows, matbp's gradient against the torch float64 gradient at
the same (rounded) input -- the competitor itself for float64 rows; for
float32 rows the table also shows torch's own float32 difference.

Usage::

    python bench/bench_svd.py                  # full run, writes bench/results/svd_cpu.{json,md}
    python bench/bench_svd.py --quick          # demo-sized run (B = 32, ~0.3 s per case): svd_cpu_quick.*
    python bench/bench_svd.py --shapes 64x64 --dtypes float64 --modes fwd+bwd --no-write

From another script (``bench/`` is not a package)::

    sys.path.insert(0, "bench"); import bench_svd
    rows = bench_svd.run([(32, 16)], batch=32, budget_s=0.3)
    bench_svd.print_rows(rows)

Exit status: 1 if a matbp correctness check fails (S, reconstruction,
orthonormality or gradient above tolerance, or a non-finite gradient); 0
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

NAME = "svd"
TITLE = "matbp.svd vs torch.linalg.svd(full_matrices=False) (batched thin SVD)"

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_DTYPES = ("float64", "float32")
MODES = ("fwd", "fwd+bwd")
COMPETITORS = ("matbp", "torch")

DEFAULT_SHAPES = ((32, 16), (64, 64), (256, 64))   # (m, n)
DEFAULT_BATCH = 256
QUICK_BATCH = 32
QUICK_BUDGET_S = 0.3

# Adaptive repetition count: about BUDGET_S seconds per (shape, dtype, mode).
BUDGET_S = 2.5
MIN_REPEATS = 3
MAX_REPEATS = 30

# Singular values of the input: log-spaced in (SIGMA_LO, SIGMA_HI).
SIGMA_LO, SIGMA_HI = 0.5, 2.0
H_RANK = 4

# Tolerances for matbp: factors (S, reconstruction, orthonormality) TOL_FACTOR *
# max(m, n) * eps(dtype); gradient: relative Frobenius vs the float64 reference.
TOL_FACTOR = 10.0
GRAD_TOL = {"float64": 1e-10, "float32": 1e-5}


# --------------------------------------------------------------------------
# Competitors and loss
# --------------------------------------------------------------------------

def matbp_svd(X: torch.Tensor):
    return matbp.svd(X)


def torch_svd(X: torch.Tensor):
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    return U, S, Vh.mT


FUNCS = {"matbp": matbp_svd, "torch": torch_svd}


def svd_loss(U, S, V, w, G1, H) -> torch.Tensor:
    """<w, S> + <G1, U diag(S) Vᵀ> + <H Hᵀ, U diag(S) Uᵀ>, invariant to the SVD's sign gauge."""
    uGv = ((G1 @ V) * U).sum(-2)                    # u_iᵀ G1 v_i, (B, k)
    uH2 = (U.mT @ H).square().sum(-1)               # ||u_iᵀ H||², (B, k)
    return (w * S).sum() + (S * uGv).sum() + (S * uH2).sum()


# --------------------------------------------------------------------------
# Correctness of the factors
# --------------------------------------------------------------------------

def factor_errors(X: torch.Tensor, U, S, V, S_ref: torch.Tensor) -> dict:
    """S, reconstruction and orthonormality errors (max over the batch, float64)."""
    X64, U64, S64, V64 = (t.detach().to(torch.float64) for t in (X, U, S, V))
    k = S64.shape[-1]
    scale = S_ref.amax(dim=-1).clamp_min(torch.finfo(torch.float64).tiny)
    s_err = ((S64 - S_ref).abs().amax(dim=-1) / scale).max().item()
    recon_err = common.rel_fro((U64 * S64.unsqueeze(-2)) @ V64.mT, X64)
    eye = torch.eye(k, dtype=torch.float64, device=X64.device)
    orth_err = max(
        (torch.linalg.matrix_norm(U64.mT @ U64 - eye) / math.sqrt(k)).max().item(),
        (torch.linalg.matrix_norm(V64.mT @ V64 - eye) / math.sqrt(k)).max().item(),
    )
    return {"s_err": s_err, "recon_err": recon_err, "orth_err": orth_err}


# --------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------

COLUMNS = [
    *common.standard_columns("batch", "m", "n", "dtype", "mode", "repeats"),
    *common.timing_columns(COMPETITORS, ".2f"),
    *common.columns(common.fmt_err, s_err="S err", recon_err="recon err", orth_err="orth err",
                    grad_diff_matbp="gX diff matbp", grad_diff_torch="gX diff torch"),
    *common.standard_columns("correct"),
]


def make_input(m: int, n: int, batch: int, dtype: torch.dtype, seed: int = 0, device: str = "cpu"):
    """X = P diag(σ) Qᵀ (separated σ in (0.5, 2)) and the loss weights w, G1, H.

    Drawn in float64 (fixed seed per shape, same values for every dtype), then cast.
    """
    k = min(m, n)
    g = torch.Generator().manual_seed(seed * 1_000_003 + m * 1_000 + n)
    P, _ = torch.linalg.qr(torch.randn(batch, m, k, generator=g, dtype=torch.float64))
    Q, _ = torch.linalg.qr(torch.randn(batch, n, k, generator=g, dtype=torch.float64))
    jitter = torch.rand(batch, k, generator=g, dtype=torch.float64)
    pos = (torch.arange(k, dtype=torch.float64) + 0.25 + 0.5 * jitter) / k   # in (0, 1), increasing
    sigma = SIGMA_LO * (SIGMA_HI / SIGMA_LO) ** pos
    X = (P * sigma.unsqueeze(-2)) @ Q.mT
    w = torch.randn(batch, k, generator=g, dtype=torch.float64)
    G1 = torch.randn(batch, m, n, generator=g, dtype=torch.float64)
    H = torch.randn(batch, m, H_RANK, generator=g, dtype=torch.float64)
    return tuple(t.to(dtype=dtype, device=device) for t in (X, w, G1, H))


def reference(X, w, G1, H):
    """torch's float64 S and loss gradient at X (as given in its dtype)."""
    X64 = X.detach().to(torch.float64).requires_grad_()
    U, S, V = torch_svd(X64)
    svd_loss(U, S, V, *(t.to(torch.float64) for t in (w, G1, H))).backward()
    return S.detach(), X64.grad


def bench_one(m: int, n: int, batch: int, dtype: torch.dtype, mode: str, *,
              repeats: int | None = None, seed: int = 0, device: str = "cpu",
              budget_s: float = BUDGET_S, inputs: tuple | None = None,
              ref: tuple | None = None) -> dict:
    """One timing row; ``inputs`` (:func:`make_input`) and ``ref`` (:func:`reference`) may be passed in."""
    X, w, G1, H = inputs if inputs is not None else make_input(m, n, batch, dtype, seed, device)
    fns = common.timed_calls(FUNCS, X, mode, backward=lambda USV: svd_loss(*USV, w, G1, H).backward())

    dt = common.dtype_name(dtype)
    row: dict = {"batch": batch, "m": m, "n": n, "dtype": dt, "mode": mode}

    # Warm-up (untimed) doubles as the correctness check.
    S_ref, g_ref = ref if ref is not None else reference(X, w, G1, H)
    out = {name: fns[name]() for name in COMPETITORS}
    if mode == "fwd":
        row.update(factor_errors(X, *out["matbp"], S_ref))
        tol = TOL_FACTOR * max(m, n) * torch.finfo(dtype).eps
        errs = (row["s_err"], row["recon_err"], row["orth_err"])
        row["tol"] = tol
        row["correct"] = bool(out["matbp"][1].shape == S_ref.shape and all(e <= tol for e in errs))
    else:
        row["grad_diff_matbp"] = common.rel_fro(out["matbp"], g_ref)
        # For float64 the reference IS the torch competitor: no separate torch column.
        row["grad_diff_torch"] = None if dtype == torch.float64 else common.rel_fro(out["torch"], g_ref)
        row["tol"] = GRAD_TOL[dt]
        row["correct"] = bool(row["grad_diff_matbp"] <= GRAD_TOL[dt])  # False for NaN
    del out

    row.update(common.time_pair(fns, budget_s=budget_s, min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS,
                                repeats=repeats, device=device))
    return row


def _progress(row: dict, seconds: float) -> str:
    check = (f"gX diff {common.fmt_err(row['grad_diff_matbp'])}" if row["mode"] == "fwd+bwd" else
             f"S err {common.fmt_err(row['s_err'])} recon {common.fmt_err(row['recon_err'])}")
    return common.pair_progress(f"B={row['batch']:<4} {row['m']:>3}x{row['n']:<3}", row, check, seconds)


def run(shapes=DEFAULT_SHAPES, batch: int = DEFAULT_BATCH, dtypes=DEFAULT_DTYPES, modes=MODES,
        repeats: int | None = None, *, seed: int = 0, device: str = "cpu",
        budget_s: float = BUDGET_S, verbose: bool = False) -> list[dict]:
    """One row (dict) per ((m, n), dtype, mode); ``repeats`` None: adaptive (>= 3, ``budget_s`` s per case)."""
    rows = []
    for (m, n) in shapes:
        for d in dtypes:
            dtype = common.as_dtype(d)
            rows += common.collect_modes(
                modes, lambda: make_input(int(m), int(n), int(batch), dtype, seed, device), reference,
                lambda mode, inputs, ref: bench_one(int(m), int(n), int(batch), dtype, mode, repeats=repeats,
                                                    seed=seed, device=device, budget_s=budget_s,
                                                    inputs=inputs, ref=ref), _progress if verbose else None)
    return rows


def notes_for(rows: list[dict]) -> list[str]:
    notes = [
        common.PAIRED_TIMES_NOTE + " fwd = the decomposition under no_grad; "
        "fwd+bwd = decomposition on a fresh leaf + loss.backward(), loss = <w, S> + <G1, U diag(S) Vᵀ> "
        f"+ <H Hᵀ, U diag(S) Uᵀ> (fixed random w, G1, H with {H_RANK} columns; same torch code for both).",
        "torch = torch.linalg.svd(X, full_matrices=False) in X's dtype with autograd; matbp computes in "
        "float64 and returns X's dtype. X = P diag(σ) Qᵀ, σ log-spaced in (0.5, 2) with jitter "
        "(separated singular values), float64 draw then cast.",
        "fwd rows: S err = max|S - S_ref| / σ_max (S_ref = torch's float64 S), recon err = "
        "||U diag(S) Vᵀ - X||_F / ||X||_F, orth err = max(||UᵀU - I||_F, ||VᵀV - I||_F) / sqrt(k), "
        f"tolerance {TOL_FACTOR:g} * max(m, n) * eps(dtype). fwd+bwd rows: gX diff = max over the batch of "
        "||gX - gX_ref||_F / ||gX_ref||_F, gX_ref = torch's float64 gradient at the same input (for "
        "float64 rows the competitor itself, so its column is '-'); tolerance for matbp "
        + ", ".join(f"{k} {v:g}" for k, v in GRAD_TOL.items()) + ".",
    ]
    return common.add_note(notes, "CORRECTNESS FAILURES: ",
                           [f"{r['m']}x{r['n']} {r['dtype']} {r['mode']}" for r in rows if not r["correct"]])


def print_rows(rows: list[dict], env: dict | None = None) -> None:
    common.print_table(rows, COLUMNS, title=TITLE, env=env, notes=notes_for(rows))


def _parse_shape(text: str) -> tuple[int, int]:
    try:
        m, n = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be MxN (e.g. 64x64), got {text!r}") from None
    if m < 1 or n < 1:
        raise argparse.ArgumentTypeError(f"shape must be positive, got {text!r}")
    return m, n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=_parse_shape, nargs="+", default=DEFAULT_SHAPES,
                   help="shapes MxN (default " + " ".join(f"{m}x{n}" for m, n in DEFAULT_SHAPES) + ")")
    p.add_argument("--batch", type=int, default=None,
                   help=f"batch size B (default {DEFAULT_BATCH}; --quick: {QUICK_BATCH})")
    common.add_case_arguments(p, dtypes=DTYPES, default_dtypes=DEFAULT_DTYPES, modes=MODES,
                              min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS, budget_s=BUDGET_S,
                              quick=common.quick_help(f"B={QUICK_BATCH}", QUICK_BUDGET_S, NAME))
    common.add_standard_arguments(p, device="cpu")
    args = common.parse_standard_arguments(p, argv, batch=(QUICK_BATCH, DEFAULT_BATCH),
                                           budget=(QUICK_BUDGET_S, BUDGET_S))
    config = common.timing_config(args, MIN_REPEATS, MAX_REPEATS, {
        "shapes": [f"{m}x{n}" for m, n in args.shapes], "batch": args.batch, "dtypes": args.dtypes,
        "modes": args.modes,
        "input": "P diag(σ) Qᵀ, σ log-spaced in (0.5, 2) with jitter, float64 draw then cast",
        "loss": "<w, S> + <G1, U diag(S) Vᵀ> + <H Hᵀ, U diag(S) Uᵀ>"})
    return common.run_table(args, NAME, TITLE, COLUMNS, lambda: run(
        args.shapes, args.batch, args.dtypes, args.modes, args.repeats, seed=args.seed, device=args.device,
        budget_s=args.budget, verbose=True), notes_for, config=config)


if __name__ == "__main__":
    sys.exit(main())
