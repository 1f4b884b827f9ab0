"""GPU benchmark: matbp's CUDA backend against PyTorch on the same GPU and
against the paper's CPU round trip, in one process.

Two tables; every competitor of a row is measured in the same process on the
same input, interleaved per repetition (order rotated), after untimed warm-up
calls that double as correctness checks; times are medians of wall-clock
samples bracketed by ``torch.cuda.synchronize`` (fast calls are repeated
inside a sample so that it lasts about 2 ms, and divided back).

1. ``o2p_log`` (C = log(XᵀX + eps·I), eps = 1e-3), forward and forward+backward,
   shapes (B, m, d) from ``bench_o2p_log.py``: AlexNet-like (100, 169, 256),
   VGG-like (32, 196, 512), square (100, 400, 256), small (1024, 64, 32); float32
   and float64. Competitors: ``matbp`` (``matbp.o2p_log`` on the GPU), ``torch``
   (``eigh`` of XᵀX + eps·I on the GPU in X's dtype, log, autograd) and
   ``paper`` (the paper's approach: X copied to the CPU, float64 full SVD,
   explicit K-matrix backward, result copied back; ``bench_o2p_log.paper_o2p_log``).
   Target (float32 fwd+bwd, AlexNet-like, full B): matbp >= 10x faster than the
   paper's round trip and >= 3x faster than torch on the GPU.
   Checks: matbp's C against the float64 SVD-based C (fwd rows), matbp's
   gradient against matbp's float64 CPU kernel (fwd+bwd rows), and whether each
   competitor's gradient is finite.

2. ``sym_eig`` against ``torch.linalg.eigh`` on the same GPU, forward and
   forward+backward (``backward((L, V), (gL, gV))``), n in 8, 16, 32, 33, 48, 64,
   128, 256, 512 with B = 1024 (B = 256 at n = 256, B = 64 at n = 512; B is in
   every row), float64 and float32. Targets: matbp's time at n = 33 <= 2x its
   time at n = 32 (no cliff past the small-matrix solver), and matbp <= torch
   at every n. Checks: eigenvalues against torch, V diag(L) Vᵀ = A, VᵀV = I (fwd
   rows); the gradient against torch's float64 one (fwd+bwd rows).

Usage::

    python bench/bench_gpu.py                    # full run (a few minutes on an H100): bench/results/bench_gpu.{json,md}
    python bench/bench_gpu.py --quick            # about a minute: bench_gpu_quick.{json,md}
    OUT=/tmp/r python bench/bench_gpu.py         # --out defaults to $OUT when it is set
    python bench/bench_gpu.py --skip-o2p --sizes 32 33 --dtypes float64 --no-write

Exit status: 2 without a CUDA device or with a matbp built without CUDA; 1 if
a correctness check of matbp fails or a matbp call raises (or, with
``--strict``, if a target is missed); 0 otherwise. Non-finite gradients or
errors of the other competitors are results, not failures.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback

import torch

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
import common  # noqa: E402
import bench_o2p_log as o2p  # noqa: E402
import bench_sym_eig as se  # noqa: E402

import matbp  # noqa: E402

NAME = "bench_gpu"
TITLE = "matbp on the GPU: o2p_log and sym_eig against PyTorch on the GPU and the paper's CPU round trip"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
MODES = ("fwd", "fwd+bwd")

# Timing: each sample repeats a fast call until it lasts about SAMPLE_S.
SAMPLE_S = 2e-3
MAX_INNER = 64
MIN_REPEATS = 3
# After TIME_LIMIT_S seconds the remaining rows run MIN_REPEATS repetitions only.
TIME_LIMIT_S = 330.0

# ---- o2p_log
O2P_SHAPES = o2p.SHAPES
O2P_DEFAULT_SHAPES = ("alexnet", "vgg", "square", "small")
O2P_QUICK_SHAPES = ("alexnet",)
O2P_QUICK_MODES = ("fwd+bwd",)
O2P_COMPETITORS = ("matbp", "torch", "paper")
O2P_BUDGET_S = 3.0
O2P_QUICK_BUDGET_S = 0.5
O2P_MAX_REPEATS = 30
O2P_TARGET = {"shape": "alexnet", "dtype": "float32", "mode": "fwd+bwd", "speedup": {"paper": 10.0, "torch": 3.0}}
O2P_FWD_TOL = o2p.FWD_TOL  # C vs the float64 SVD-based C
O2P_GRAD_TOL = {"float64": 1e-8, "float32": 1e-5}  # gradient vs matbp's float64 CPU kernel

# ---- sym_eig
EIG_SIZES = (8, 16, 32, 33, 48, 64, 128, 256, 512)
EIG_QUICK_SIZES = (8, 32, 33, 64)
EIG_QUICK_MODES = ("fwd",)
EIG_BUDGET_S = 1.5
EIG_QUICK_BUDGET_S = 0.4
EIG_MAX_REPEATS = 50
EIG_CLIFF_MAX = 2.0  # time(n = 33) <= 2 x time(n = 32)
EIG_GRAD_TOL = {"float64": 1e-6, "float32": 1e-4}


def eig_batch(n: int) -> int:
    return 1024 if n <= 128 else (256 if n <= 256 else 64)


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------

class Clock:
    """Shrinks the per-row budget to the minimum once the run is past its time limit."""

    def __init__(self, limit_s: float):
        self.start = time.perf_counter()
        self.limit_s = limit_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def budget(self, budget_s: float) -> float:
        return budget_s if self.elapsed() < self.limit_s else 0.0


def measure(fns: dict, device, *, budget_s: float, max_repeats: int, repeats: int | None = None) -> dict:
    """Interleaved timing of already warmed-up competitors.

    One probe call of each sizes its inner repetition count (so a sample lasts
    about SAMPLE_S); then :func:`common.time_interleaved_adaptive` runs the
    repetitions. Returns {name: samples in ms per call}, plus "_repeats" and
    "_inner" ({name: count})."""
    probe = common.time_interleaved(fns, repeats=1, warmup=0, device=device)
    inner = {k: int(min(MAX_INNER, max(1, math.ceil(SAMPLE_S / max(v["median"], 1e-9)))))
             for k, v in probe.items()}

    def repeated(f, k):
        def call():
            for _ in range(k):
                f()
        return call

    wrapped = {k: repeated(f, inner[k]) for k, f in fns.items()}
    timing = common.time_interleaved_adaptive(wrapped, budget_s=budget_s, min_repeats=MIN_REPEATS,
                                              max_repeats=max_repeats, repeats=repeats, device=device)
    out: dict = {"_repeats": timing.pop("_repeats"), "_inner": inner}
    for k, v in timing.items():
        out[k] = [s * 1e3 / inner[k] for s in v["samples"]]
    return out


def add_times(row: dict, fns: dict, device, *, budget_s: float, max_repeats: int,
              repeats: int | None) -> None:
    """:func:`measure` the competitors in ``fns`` (if any) into ``row``: repeats,
    inner, ``<name>_ms`` (median) and ``<name>_samples_ms``."""
    if not fns:
        return
    t = measure(fns, device, budget_s=budget_s, max_repeats=max_repeats, repeats=repeats)
    row["repeats"] = t["_repeats"]
    row["inner"] = t["_inner"]
    for name in fns:
        row[f"{name}_ms"] = common.median(t[name])
        row[f"{name}_samples_ms"] = t[name]


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:200]


def warm_up(fns: dict, device, errors: dict) -> tuple[dict, dict]:
    """Call each competitor once, untimed: returns (the competitors that ran,
    their results).  One that raises is a result: its error goes to ``errors``."""
    ran, results = {}, {}
    for name, fn in fns.items():
        try:
            results[name] = fn()
            common.synchronize(device)
            ran[name] = fn
        except Exception as exc:  # a competitor that fails is a result
            errors[name] = _short_error(exc)
    return ran, results


def _progress(case: str, times: str, row: dict, seconds: float) -> str:
    """A row's progress line: '  <case> reps=.. <times>  <status> [WRONG ][errors] [.. s]'."""
    return (f"  {case} reps={row.get('repeats', '-')!s:<3} {times}  {row.get('status') or ''} "
            f"{'' if row['correct'] else 'WRONG '}{row.get('errors', '')} [{seconds:.0f} s]")


def guarded_row(make_row, fallback: dict) -> dict:
    """``make_row()``; if it raises, ``fallback`` marked not correct with the
    error, so that the other rows still run.  Frees cached GPU memory after."""
    try:
        row = make_row()
    except Exception as exc:  # keep going: the other rows still run
        traceback.print_exc()
        row = {**fallback, "correct": False, "errors": {"row": _short_error(exc)}}
    torch.cuda.empty_cache()
    return row


# --------------------------------------------------------------------------
# o2p_log
# --------------------------------------------------------------------------

O2P_FUNCS = {"matbp": o2p.matbp_o2p_log, "torch": o2p.torch_o2p_log, "paper": o2p.paper_o2p_log}


def _speedup_text(v) -> str:
    return f"{v:.1f}x" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


O2P_COLUMNS = [
    *common.standard_columns("shape", "batch", "m", "d", "dtype", "mode", "repeats"),
    *common.columns(".2f", matbp_ms="matbp ms", torch_ms="torch ms"),
    common.Column("paper_ms", "paper ms", ".1f"),
    *common.columns(_speedup_text, speedup_torch="torch/matbp", speedup_paper="paper/matbp"),
    *common.columns(align="left", target="target", status="status", finite_matbp="grad finite matbp",
                    finite_torch="grad finite torch", finite_paper="grad finite paper"),
    common.Column("err_matbp", "matbp err", ".1e"),
    *common.standard_columns("correct"),
]


def o2p_row(shape: str, batch: int, dtype: torch.dtype, mode: str, device, *, budget_s: float,
            repeats: int | None, seed: int, full_batch: bool) -> dict:
    _, m, d = O2P_SHAPES[shape]
    X_cpu, G_cpu = o2p.make_input(shape, batch, dtype, seed)
    X, G = X_cpu.to(device), G_cpu.to(device)
    dname = common.dtype_name(dtype)
    row: dict = {"shape": shape, "batch": batch, "m": m, "d": d, "dtype": dname, "mode": mode,
                 "errors": {}}
    # Warm-up, and the results for the checks.
    fns, results = warm_up(common.timed_calls(O2P_FUNCS, X, mode, grad=G), device, row["errors"])

    correct = "matbp" in results
    if mode == "fwd":
        if "matbp" in results:
            ref, _, _ = o2p._paper_forward64(X_cpu.to(torch.float64), o2p.EPS)
            row["err_matbp"] = common.rel_fro(results["matbp"].cpu(), ref)
            correct = row["err_matbp"] <= O2P_FWD_TOL[dname]
            row["check"] = "C vs float64 SVD-based C"
    else:
        for name, g in results.items():
            row[f"finite_{name}"], row[f"nonfinite_{name}"] = o2p.finite_text(g)
        if "matbp" in results:
            X64 = X_cpu.to(torch.float64).requires_grad_()
            o2p.matbp_o2p_log(X64).backward(G_cpu.to(torch.float64))
            row["err_matbp"] = common.rel_fro(results["matbp"].cpu(), X64.grad)
            correct = row["finite_matbp"] == "yes" and row["err_matbp"] <= O2P_GRAD_TOL[dname]
            row["check"] = "gradient vs matbp float64 CPU"
    row["correct"] = bool(correct)
    del results

    add_times(row, fns, device, budget_s=budget_s, max_repeats=O2P_MAX_REPEATS, repeats=repeats)
    if "matbp_ms" in row:
        for other in ("torch", "paper"):
            if f"{other}_ms" in row:
                row[f"speedup_{other}"] = row[f"{other}_ms"] / row["matbp_ms"]

    tgt = O2P_TARGET
    if full_batch and (shape, dname, mode) == (tgt["shape"], tgt["dtype"], tgt["mode"]):
        row["target"] = ", ".join(f"{k}/matbp >= {v:g}x" for k, v in tgt["speedup"].items())
        row["status"] = "PASS" if all((row.get(f"speedup_{k}") or 0.0) >= v
                                      for k, v in tgt["speedup"].items()) else "FAIL"
    if not row["errors"]:
        del row["errors"]
    return row


def _o2p_progress(row: dict, seconds: float) -> str:
    ms = {k: row.get(f"{k}_ms", float("nan")) for k in O2P_COMPETITORS}
    return _progress(f"o2p_log {row['shape']:>7} B={row['batch']:<4} {row['dtype']:>7} {row['mode']:<7}",
                     f"matbp {ms['matbp']:8.2f}  torch {ms['torch']:8.2f}  paper {ms['paper']:8.1f} ms  "
                     f"torch/matbp {_speedup_text(row.get('speedup_torch'))}  "
                     f"paper/matbp {_speedup_text(row.get('speedup_paper'))}", row, seconds)


def run_o2p(shapes, dtypes, modes, device, clock: Clock, *, budget_s: float, repeats: int | None,
            seed: int) -> list[dict]:
    def one(shape, dt, mode):
        B, m, d = O2P_SHAPES[shape]
        return guarded_row(lambda: o2p_row(shape, B, DTYPES[dt], mode, device, budget_s=clock.budget(budget_s),
                                           repeats=repeats, seed=seed, full_batch=True),
                           {"shape": shape, "batch": B, "m": m, "d": d, "dtype": dt, "mode": mode})

    return common.collect([(shape, dt, mode) for shape in shapes for dt in dtypes for mode in modes], one,
                          _o2p_progress)


def o2p_notes(rows: list[dict]) -> list[str]:
    notes = [
        "Times: medians (ms per call) over interleaved repetitions; torch/matbp and paper/matbp are "
        "speed-ups of matbp (> 1: matbp faster). X = randn(B, m, d) / sqrt(m) (float64 draw, then cast), "
        "eps = 1e-3; fwd+bwd = C.backward(G) with a fixed G = randn(B, d, d) on a fresh leaf per call.",
        "torch = eigh(XᵀX + eps·I) + V diag(log L) Vᵀ on the GPU in X's dtype with autograd; paper = the "
        "paper's approach: X copied to the CPU, float64 full SVD (eqs. 15/16), K-matrix backward (eq. 11 "
        "structure, no tie guard), result copied back to the GPU in X's dtype.",
        f"Target (float32 fwd+bwd, AlexNet-like, full B): paper/matbp >= {O2P_TARGET['speedup']['paper']:g}x "
        f"and torch/matbp >= {O2P_TARGET['speedup']['torch']:g}x.",
        "matbp err: fwd rows, max over the batch of ||C - C_ref||_F / ||C_ref||_F with C_ref the float64 "
        f"SVD-based C (tolerance {O2P_FWD_TOL}); fwd+bwd rows, the same for the gradient against matbp's "
        f"float64 CPU kernel (tolerance {O2P_GRAD_TOL}). grad finite: 'NaN in k/B' = k matrices of the "
        "batch have a non-finite gradient entry.",
    ]
    errs = [f"{r['shape']} {r['dtype']} {r['mode']}: {r['errors']}" for r in rows if r.get("errors")]
    if errs:
        notes.append("Errors: " + "; ".join(errs))
    return notes


# --------------------------------------------------------------------------
# sym_eig
# --------------------------------------------------------------------------

EIG_COLUMNS = [
    *common.standard_columns("dtype", "mode", "n", "batch", "repeats"),
    *common.columns(".3f", matbp_ms="matbp ms", torch_ms="torch ms"),
    *common.standard_columns("ratio"),
    common.Column("status", "<= torch", align="left"),
    common.Column("cliff", "t(33)/t(32)", ".2f"),
    common.Column("cliff_status", "cliff", align="left"),
    *common.columns(".1e", eig_err="eig err", recon_err="recon err", orth_err="orth err", grad_err="grad err"),
    *common.standard_columns("correct"),
]


def _eig_grad(f, A: torch.Tensor, gL: torch.Tensor, G: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Gradient of a sign-invariant functional: <gL, L> (+ <G, V diag(w) Vᵀ> when w is given)."""
    Al = A.detach().requires_grad_()
    L, V = f(Al)
    loss = (L * gL.to(L.dtype)).sum()
    if w is not None:
        loss = loss + (((V * w.to(V.dtype)) @ V.mT) * G.to(V.dtype)).sum()
    return torch.autograd.grad(loss, Al)[0]


def eig_row(n: int, batch: int, dtype: torch.dtype, mode: str, device, *, budget_s: float,
            repeats: int | None, seed: int) -> dict:
    A = se.make_input(n, batch, dtype, seed, device=device)
    dname = common.dtype_name(dtype)
    row: dict = {"dtype": dname, "mode": mode, "n": n, "batch": batch, "errors": {}}
    g = torch.Generator().manual_seed(seed + 17 * n)
    gL = torch.randn(batch, n, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    gV = torch.randn(batch, n, n, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    funcs = {"matbp": matbp.sym_eig, "torch": torch.linalg.eigh}

    def backward(LV):
        L, V = LV
        torch.autograd.backward((L, V), (gL, gV))

    fns, results = warm_up(common.timed_calls(funcs, A, mode, backward=backward), device, row["errors"])

    correct = "matbp" in results
    if "matbp" in results:
        if mode == "fwd":
            lm, vm = results["matbp"]
            lt = results["torch"][0] if "torch" in results else torch.linalg.eigvalsh(A.double()).to(dtype)
            check = se.check(A, lm, vm, lt)
            row.update({k: check[k] for k in ("eig_err", "recon_err", "orth_err")})
            correct = check["correct"]
        else:
            # float64: eigenvalue and eigenvector terms; float32: eigenvalues
            # only (a float32 gV carries rounding that 1/gap amplifies).
            G = torch.randn(batch, n, n, generator=g, dtype=torch.float64).to(device)
            w = torch.linspace(-1.0, 1.0, n, dtype=torch.float64, device=device) if dtype == torch.float64 else None
            gm = _eig_grad(matbp.sym_eig, A, gL, G, w)
            gt = _eig_grad(torch.linalg.eigh, A.double(), gL, G, w)
            row["grad_err"] = common.rel_fro(gm, gt)
            correct = bool(torch.isfinite(gm).all()) and row["grad_err"] <= EIG_GRAD_TOL[dname]
            del gm, gt, G
    row["correct"] = bool(correct)
    del results

    add_times(row, fns, device, budget_s=budget_s, max_repeats=EIG_MAX_REPEATS, repeats=repeats)
    if "matbp_ms" in row and "torch_ms" in row:
        row["ratio"] = row["matbp_ms"] / row["torch_ms"]
        row["status"] = "PASS" if row["ratio"] <= 1.0 else "FAIL"
    elif "matbp_ms" in row:
        row["status"] = "PASS"  # torch failed: matbp is not slower than a failure
    if not row["errors"]:
        del row["errors"]
    return row


def add_cliff(rows: list[dict]) -> None:
    """t(n = 33) / t(n = 32) of matbp on each n = 33 row (same dtype, mode and B)."""
    by_key = {(r["dtype"], r["mode"], r["n"], r["batch"]): r for r in rows}
    for r in rows:
        if r["n"] != 33:
            continue
        r32 = by_key.get((r["dtype"], r["mode"], 32, r["batch"]))
        if r32 and r.get("matbp_ms") and r32.get("matbp_ms"):
            r["cliff"] = r["matbp_ms"] / r32["matbp_ms"]
            r["cliff_status"] = "PASS" if r["cliff"] <= EIG_CLIFF_MAX else "FAIL"


def _eig_progress(row: dict, seconds: float) -> str:
    nan = float("nan")
    return _progress(f"sym_eig {row['dtype']:>7} {row['mode']:<7} n={row['n']:<4} B={row['batch']:<5}",
                     f"matbp {row.get('matbp_ms', nan):9.3f}  torch {row.get('torch_ms', nan):9.3f} ms  "
                     f"ratio {row.get('ratio', nan):.3f}", row, seconds)


def run_eig(sizes, dtypes, modes, device, clock: Clock, *, budget_s: float, repeats: int | None,
            seed: int) -> list[dict]:
    def one(dt, mode, n):
        B = eig_batch(n)
        return guarded_row(lambda: eig_row(n, B, DTYPES[dt], mode, device, budget_s=clock.budget(budget_s),
                                           repeats=repeats, seed=seed),
                           {"dtype": dt, "mode": mode, "n": n, "batch": B})

    rows = common.collect([(dt, mode, n) for dt in dtypes for mode in modes for n in sizes], one, _eig_progress)
    add_cliff(rows)
    return rows


def eig_notes(rows: list[dict]) -> list[str]:
    notes = [
        "Times: medians (ms per call) over interleaved repetitions; ratio = matbp/torch (< 1: matbp faster). "
        "A = (X + Xᵀ)/2, X = randn(B, n, n) (float64 draw, then cast); fwd+bwd = backward((L, V), (gL, gV)) "
        "with fixed random gL, gV on a fresh leaf per call. torch = torch.linalg.eigh on the same GPU.",
        f"Targets: matbp/torch <= 1 at every n ('<= torch'); matbp's t(33)/t(32) <= {EIG_CLIFF_MAX:g} "
        "(same dtype, mode and B).",
        "Errors (fwd rows, max over the batch, float64): eig err = max|L_matbp - L_torch| / ||A||_2, "
        "recon err = ||V diag(L) Vᵀ - A||_F / ||A||_F, orth err = ||VᵀV - I||_F / sqrt(n), tolerance "
        f"{se.TOL_FACTOR:g}·n·eps(dtype). grad err (fwd+bwd rows): the gradient of <gL, L> + <G, V diag(w) Vᵀ> "
        f"(float32: <gL, L> only) against torch's float64 one, tolerance {EIG_GRAD_TOL}.",
    ]
    errs = [f"{r['dtype']} {r['mode']} n={r['n']}: {r['errors']}" for r in rows if r.get("errors")]
    if errs:
        notes.append("Errors: " + "; ".join(errs))
    return notes


# --------------------------------------------------------------------------
# Targets and CLI
# --------------------------------------------------------------------------

def target_lines(o2p_rows: list[dict], eig_rows: list[dict]) -> tuple[list[str], bool]:
    """'TARGET ...' lines (printed and written to the notes), and whether all passed."""
    lines, ok = [], True
    for r in o2p_rows:
        if r.get("status"):
            ok &= r["status"] == "PASS"
            lines.append(f"TARGET o2p_log {r['shape']} (B={r['batch']}, m={r['m']}, d={r['d']}) {r['dtype']} "
                         f"{r['mode']}: paper/matbp = {_speedup_text(r.get('speedup_paper'))} "
                         f"(>= {O2P_TARGET['speedup']['paper']:g}x), torch/matbp = "
                         f"{_speedup_text(r.get('speedup_torch'))} (>= {O2P_TARGET['speedup']['torch']:g}x): "
                         f"{r['status']}")
    for r in eig_rows:
        if r.get("cliff_status"):
            ok &= r["cliff_status"] == "PASS"
            lines.append(f"TARGET sym_eig {r['dtype']} {r['mode']} B={r['batch']}: t(n=33)/t(n=32) = "
                         f"{r['cliff']:.2f} (<= {EIG_CLIFF_MAX:g}): {r['cliff_status']}")
    groups: dict = {}
    for r in eig_rows:
        groups.setdefault((r["dtype"], r["mode"]), []).append(r)
    for (dt, mode), rs in groups.items():
        slower = [f"n={r['n']} ({r['ratio']:.2f})" for r in rs if r.get("status") == "FAIL"]
        missing = [f"n={r['n']}" for r in rs if not r.get("status")]
        status = "PASS" if not slower and not missing else "FAIL"
        ok &= status == "PASS"
        detail = ""
        if slower:
            detail += " slower at " + ", ".join(slower)
        if missing:
            detail += " not measured: " + ", ".join(missing)
        lines.append(f"TARGET sym_eig {dt} {mode}: matbp <= torch at every n "
                     f"({', '.join(str(r['n']) for r in rs)}): {status}{detail}")
    return lines, ok


def gpu_environment(device) -> dict:
    env = common.environment(device)
    dev = torch.device(device)
    props = torch.cuda.get_device_properties(dev)
    env["gpu_capability"] = f"{props.major}.{props.minor}"
    env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    env["gpu_count"] = torch.cuda.device_count()
    env["cuda_runtime"] = torch.version.cuda
    env["matbp_built_with_cuda"] = matbp.built_with_cuda() if hasattr(matbp, "built_with_cuda") else "unknown"
    try:
        env["torch_linalg_library"] = str(torch.backends.cuda.preferred_linalg_library())
    except Exception:  # pragma: no cover - older torch
        pass
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"short run: o2p_log {' '.join(O2P_QUICK_SHAPES)} fwd+bwd, sym_eig n in "
                        f"{' '.join(map(str, EIG_QUICK_SIZES))} fwd, small budgets; writes {NAME}_quick.*")
    p.add_argument("--skip-o2p", action="store_true", help="skip the o2p_log table")
    p.add_argument("--skip-sym-eig", action="store_true", help="skip the sym_eig table")
    p.add_argument("--o2p-shapes", nargs="+", choices=sorted(O2P_SHAPES), default=None,
                   help=f"o2p_log shapes (default {' '.join(O2P_DEFAULT_SHAPES)})")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help=f"sym_eig sizes n (default {' '.join(map(str, EIG_SIZES))})")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=None,
                   help="dtypes (default float32 float64)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=None,
                   help="modes for both tables (default fwd fwd+bwd; --quick: fwd+bwd for o2p_log, fwd for sym_eig)")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed repetitions per row (default adaptive, >= {MIN_REPEATS})")
    p.add_argument("--budget-scale", type=float, default=1.0,
                   help=f"scale the per-row time budgets ({O2P_BUDGET_S:g} s o2p_log, {EIG_BUDGET_S:g} s sym_eig)")
    p.add_argument("--time-limit", type=float, default=TIME_LIMIT_S,
                   help=f"seconds after which the remaining rows use {MIN_REPEATS} repetitions (default {TIME_LIMIT_S:g})")
    p.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    common.add_standard_arguments(p)
    p.set_defaults(out=None)
    p.epilog = "--out defaults to $OUT when that is set, else bench/results."
    args = common.parse_standard_arguments(p, argv)
    out_dir = args.out or os.environ.get("OUT") or common.DEFAULT_RESULTS_DIR

    if not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device (torch.cuda.is_available() is False); run it on a machine "
              f"with a GPU (torch {torch.__version__}, CUDA {torch.version.cuda})", file=sys.stderr)
        return 2
    if not torch._C._dispatch_has_kernel_for_dispatch_key("matbp::sym_eig", "CUDA"):
        print("bench_gpu.py: this matbp has no CUDA kernels (built without CUDA); rebuild with "
              "MATBP_CUDA=1 pip install --no-build-isolation --no-deps .", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type != "cuda":
        print(f"bench_gpu.py: --device must be a CUDA device, got {args.device}", file=sys.stderr)
        return 2
    if device.index is not None:
        torch.cuda.set_device(device)

    dtypes = args.dtypes or ("float32", "float64")
    o2p_shapes = args.o2p_shapes or (O2P_QUICK_SHAPES if args.quick else O2P_DEFAULT_SHAPES)
    o2p_modes = args.modes or (O2P_QUICK_MODES if args.quick else MODES)
    sizes = tuple(args.sizes or (EIG_QUICK_SIZES if args.quick else EIG_SIZES))
    eig_modes = args.modes or (EIG_QUICK_MODES if args.quick else MODES)
    o2p_budget = (O2P_QUICK_BUDGET_S if args.quick else O2P_BUDGET_S) * args.budget_scale
    eig_budget = (EIG_QUICK_BUDGET_S if args.quick else EIG_BUDGET_S) * args.budget_scale
    torch.manual_seed(args.seed)

    env = gpu_environment(device)
    print(f"{TITLE}\n{common.format_env(env)}", flush=True)
    clock = Clock(args.time_limit)

    o2p_rows: list[dict] = []
    eig_rows: list[dict] = []
    if not args.skip_o2p:
        print("\no2p_log:", flush=True)
        o2p_rows = run_o2p(o2p_shapes, dtypes, o2p_modes, device, clock, budget_s=o2p_budget,
                           repeats=args.repeats, seed=args.seed)
    if not args.skip_sym_eig:
        print("\nsym_eig:", flush=True)
        eig_rows = run_eig(sizes, dtypes, eig_modes, device, clock, budget_s=eig_budget,
                           repeats=args.repeats, seed=args.seed)

    tables = []
    if o2p_rows:
        tables.append({"key": "o2p_log", "title": "o2p_log: matbp (GPU) vs torch (GPU) vs the paper's CPU round trip",
                       "rows": o2p_rows, "columns": O2P_COLUMNS, "notes": o2p_notes(o2p_rows)})
    if eig_rows:
        tables.append({"key": "sym_eig", "title": "sym_eig: matbp vs torch.linalg.eigh on the same GPU",
                       "rows": eig_rows, "columns": EIG_COLUMNS, "notes": eig_notes(eig_rows)})
    for t in tables:
        print()
        common.print_table(t["rows"], t["columns"], title=t["title"], notes=t["notes"])

    lines, targets_ok = target_lines(o2p_rows, eig_rows)
    wrong = [r for r in o2p_rows + eig_rows if not r.get("correct")]
    matbp_errors = [r for r in o2p_rows + eig_rows if "matbp" in r.get("errors", {}) or "row" in r.get("errors", {})]
    summary = list(lines)
    if wrong:
        summary.append("CORRECTNESS FAILURES (matbp): " + "; ".join(
            " ".join(str(r.get(k)) for k in ("shape", "n", "dtype", "mode") if r.get(k) is not None)
            + (f" {r['errors']}" if r.get("errors") else "") for r in wrong))
    print()
    for line in summary:
        print(line)
    print(f"[bench_gpu: {clock.elapsed():.0f} s]", flush=True)

    if not args.no_write and tables:
        name = NAME + ("_quick" if args.quick else "")
        config = {"o2p_shapes": {s: list(O2P_SHAPES[s]) for s in o2p_shapes} if o2p_rows else None,
                  "sym_eig_sizes": {n: eig_batch(n) for n in sizes} if eig_rows else None,
                  "dtypes": list(dtypes), "o2p_modes": list(o2p_modes), "sym_eig_modes": list(eig_modes),
                  "repeats": args.repeats if args.repeats is not None else
                  f"adaptive ({o2p_budget:g} s per o2p_log row, {eig_budget:g} s per sym_eig row, >= {MIN_REPEATS})",
                  "sample_s": SAMPLE_S, "seed": args.seed, "interleaved": True,
                  "elapsed_s": round(clock.elapsed(), 1)}
        common.print_written(common.write_tables(name, tables, env=env, out_dir=out_dir, title=TITLE,
                                                 config=config, notes=["- " + line for line in summary],
                                                 extra={"targets_passed": targets_ok, "summary": summary}))

    if wrong or matbp_errors:
        return 1
    if args.strict and not targets_ok:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
