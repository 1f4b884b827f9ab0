"""Benchmark: ``matbp.o2p_log`` against PyTorch's composition and the paper's approach.

The op is C = log(XᵀX + eps·I) for X of shape (B, m, d) (O2P pooling, docs/design.md
section 4), eps = 1e-3.  Three competitors run in the same process on the same
input, interleaved per repetition so machine noise hits all of them alike:

* ``matbp``: ``matbp.o2p_log(X)`` (float64 inside, returned in X's dtype).
* ``torch``: ``L, V = torch.linalg.eigh(X.mT @ X + eps*I)``,
  ``C = (V * L.log().unsqueeze(-2)) @ V.mT`` in X's own dtype; autograd for
  the backward.
* ``paper``: the approach of Ionescu, Vantzos & Sminchisescu (ICCV 2015),
  :class:`PaperO2PLog` -- X moved to the CPU in float64, full SVD, the
  eigendecomposition of XᵀX read off it (eqs. 15, 16), an explicit K-matrix
  backward (eq. 11 structure) with no tie guard, result moved back.

Two modes: forward only (under ``torch.no_grad()``) and forward+backward
(``C.backward(G)`` with a fixed random upstream gradient G of shape (B, d, d),
on a fresh leaf each call).  Shapes (B, m, d): AlexNet-like (100, 169, 256),
VGG-like (32, 196, 512), square (100, 400, 256), small (1024, 64, 32); dtypes
float32 and float64.  Input: ``X = randn(B, m, d) / sqrt(m)`` in float64 with a
fixed seed per shape (the same values for both dtypes), then cast.

The timing table reports median ms per competitor, the ratios matbp/torch and
matbp/paper, PASS/FAIL against the targets (float64 fwd+bwd: AlexNet-like
matbp/torch <= 0.33 and matbp/paper <= 0.33; square matbp/torch <= 0.5), for
fwd+bwd rows whether each competitor's gradient is finite in every matrix of
the batch (gradients from the untimed warm-up call), and for forward rows the
forward error of matbp and torch against the float64 SVD-based C.

A second table (``o2p_log_accuracy``) measures gradient accuracy on small
problems (B = 1; m, d = 6, 10 and 12, 8) whose XᵀX spectrum has a cluster of
three eigenvalues 1, 1 + g, 1 + 2g with g from 1e-1 down to 0 (exact tie),
plus, for m < d, the d - m eigenvalues that are exactly 0 (eps in XᵀX + eps·I).
Each competitor's <gX, E> is compared with the directional derivative
d/dt <G, C(X + tE)> at t = 0 from an 80-digit mpmath central difference
(``tests/o2p_reference.py``), in float64 and with float32 input (reference at
the float32-rounded X).

Usage::

    python bench/bench_o2p_log.py                  # full run: bench/results/o2p_log_cpu.* and o2p_log_accuracy.*
    python bench/bench_o2p_log.py --quick          # demo-sized (AlexNet-like and small, B / 10): *_quick.*
    python bench/bench_o2p_log.py --shapes alexnet --dtypes float64 --modes fwd+bwd --no-write
    python bench/bench_o2p_log.py --skip-accuracy
    python bench/bench_o2p_log.py --hvp --skip-timing --skip-accuracy   # HVP rows only (double backward)

From another script (``bench/`` is not a package)::

    sys.path.insert(0, "bench"); import bench_o2p_log
    rows = bench_o2p_log.run(["small"], batch_scale=0.1, budget_s=0.5)
    bench_o2p_log.print_rows(rows)
    acc = bench_o2p_log.run_accuracy(gaps=[1e-3, 0.0])
    bench_o2p_log.print_accuracy_rows(acc)

Exit status: 1 if matbp's gradient is not finite or its forward error is out
of tolerance (or, with ``--strict``, if a performance target is missed); 0
otherwise.  Non-finite gradients of the other competitors are results, not
failures.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
import common  # noqa: E402

import matbp  # noqa: E402

NAME = "o2p_log"
ACC_NAME = "o2p_log_accuracy"
TITLE = "matbp.o2p_log vs torch eigh composition vs the paper's CPU float64 SVD (C = log(XᵀX + eps·I))"
ACC_TITLE = "o2p_log first and second derivative accuracy vs high-precision mpmath references"

EPS = 1e-3
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_DTYPES = ("float64", "float32")
MODES = ("fwd", "fwd+bwd")
COMPETITORS = ("matbp", "torch", "paper")

# name -> (B, m, d)
SHAPES = {
    "alexnet": (100, 169, 256),
    "vgg": (32, 196, 512),
    "square": (100, 400, 256),
    "small": (1024, 64, 32),
}
DEFAULT_SHAPES = ("alexnet", "vgg", "square", "small")
QUICK_SHAPES = ("alexnet", "small")
QUICK_BATCH_SCALE = 0.1   # --quick: B = 10 (AlexNet-like), 102 (small)
QUICK_BUDGET_S = 0.5

# Adaptive repetition count: fill about BUDGET_S seconds per (shape, dtype, mode).
BUDGET_S = 12.0
MIN_REPEATS = 3
MAX_REPEATS = 30

# Performance targets, float64 fwd+bwd at full batch: shape -> {competitor: max ratio}.
TARGET_DTYPE = "float64"
TARGET_MODE = "fwd+bwd"
TARGETS = {
    "alexnet": {"torch": 0.33, "paper": 0.33},
    "square": {"torch": 0.5},
}

# Forward-error tolerance for matbp (relative Frobenius, vs the float64 SVD C).
FWD_TOL = {"float64": 1e-10, "float32": 1e-5}

# Accuracy table: problem shapes (m, d), gaps of the cluster 1, 1+g, 1+2g in σ².
ACC_SHAPES = ((6, 10), (12, 8))
ACC_GAPS = (1e-1, 1e-3, 1e-6, 1e-9, 1e-12, 0.0)
ACC_OTHER_EIGS = (0.3, 2.0, 0.05, 4.0, 0.7, 9.0, 0.01)


# --------------------------------------------------------------------------
# Competitors
# --------------------------------------------------------------------------

def matbp_o2p_log(X: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    return matbp.o2p_log(X, eps)


def torch_o2p_log(X: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """PyTorch composition in X's own dtype; autograd differentiates it."""
    d = X.shape[-1]
    eye = torch.eye(d, dtype=X.dtype, device=X.device)
    L, V = torch.linalg.eigh(X.mT @ X + eps * eye)
    return (V * L.log().unsqueeze(-2)) @ V.mT


def _paper_forward64(X64: torch.Tensor, eps: float):
    """CPU float64 core of the paper's forward: (C, V, λ) from the full SVD of X."""
    # The full V (d x d) is needed; when m >= d the thin SVD already has it,
    # and only for m < d does the paper need full_matrices (which also builds
    # an unused m x m U).
    _, S, Vh = torch.linalg.svd(X64, full_matrices=X64.shape[-2] < X64.shape[-1])
    d = X64.shape[-1]
    lam = X64.new_zeros(X64.shape[:-2] + (d,))
    lam[..., : S.shape[-1]] = S * S          # λ = σ², padded with zeros to length d
    V = Vh.mT
    C = (V * torch.log(lam + eps).unsqueeze(-2)) @ V.mT
    return C, V, lam


class PaperO2PLog(torch.autograd.Function):
    """The paper's structure (Ionescu et al. 2015, eqs. 15, 16 and 11).

    Forward: move X to the CPU in float64, full SVD ``X = U Σ Vᵀ``
    (``full_matrices=True``), so XᵀX = V diag(λ) Vᵀ with λ = σ² padded with
    zeros to length d; C = V diag(log(λ + eps)) Vᵀ, moved back to X's device
    and dtype.

    Backward (CPU float64, explicit matrix formulas): Gs = (G + Gᵀ)/2; for the
    EIG of Y = XᵀX and f = log(· + eps),
    gλ_i = (Vᵀ Gs V)_ii / (λ_i + eps), gV = 2 Gs V diag(log(λ + eps)),
    M = Vᵀ gV, gY = V (diag(gλ) + K ∘ ½(M − Mᵀ)) Vᵀ with
    K_ij = 1/(λ_j − λ_i) (i ≠ j), K_ii = 0, and gX = 2 X gY.

    The printed eqs. (12)/(14) overstate the eigenvector term by a factor 2
    (with sym(M) = ½(M + Mᵀ)); that slip is corrected here (the ½ in
    ½(M − Mᵀ)).  There is deliberately NO tie guard on K: at equal
    eigenvalues (including the d − m exact zeros of λ when m < d) K is ±inf
    and the gradient becomes inf/NaN -- that is what the benchmark's
    "finite gradient" column shows.
    """

    @staticmethod
    def forward(ctx, X, eps):
        X64 = X.detach().to(device="cpu", dtype=torch.float64)
        C, V, lam = _paper_forward64(X64, eps)
        ctx.save_for_backward(X64, V, lam)
        ctx.eps = eps
        ctx.x_device, ctx.x_dtype = X.device, X.dtype
        return C.to(device=X.device, dtype=X.dtype)

    @staticmethod
    def backward(ctx, G):
        X64, V, lam = ctx.saved_tensors
        eps = ctx.eps
        G64 = G.to(device="cpu", dtype=torch.float64)
        Gs = (G64 + G64.mT) / 2
        lam_eps = lam + eps
        log_l = torch.log(lam_eps)
        Vt = V.mT
        g_lam = torch.diagonal(Vt @ Gs @ V, dim1=-2, dim2=-1) / lam_eps
        gV = 2 * (Gs @ V) * log_l.unsqueeze(-2)
        M = Vt @ gV
        with torch.no_grad():
            K = 1.0 / (lam.unsqueeze(-2) - lam.unsqueeze(-1))   # K_ij = 1/(λ_j − λ_i)
            K.diagonal(dim1=-2, dim2=-1).zero_()
        inner = torch.diag_embed(g_lam) + K * (0.5 * (M - M.mT))
        gY = V @ inner @ Vt
        gX = 2 * X64 @ gY
        return gX.to(device=ctx.x_device, dtype=ctx.x_dtype), None


def paper_o2p_log(X: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    return PaperO2PLog.apply(X, eps)


FUNCS = {"matbp": matbp_o2p_log, "torch": torch_o2p_log, "paper": paper_o2p_log}


# --------------------------------------------------------------------------
# Timing table
# --------------------------------------------------------------------------

def _target_text(t: dict) -> str:
    return ", ".join(f"/{k} <= {v:g}" for k, v in t.items())


COLUMNS = [
    *common.standard_columns("shape", "batch", "m", "d", "dtype", "mode", "repeats"),
    *common.columns(".1f", matbp_ms="matbp ms", torch_ms="torch ms", paper_ms="paper ms"),
    *common.columns(".3f", ratio_torch="matbp/torch", ratio_paper="matbp/paper"),
    common.Column("target", "target", _target_text, align="left"),
    *common.standard_columns("status"),
    *common.columns(align="left", finite_matbp="grad finite matbp", finite_torch="grad finite torch",
                    finite_paper="grad finite paper"),
    *common.columns(".1e", fwd_err_matbp="C err matbp", fwd_err_torch="C err torch"),
]


def make_input(shape: str, batch: int, dtype: torch.dtype, seed: int = 0):
    """X = randn(B, m, d) / sqrt(m) (float64 draw, then cast) and G = randn(B, d, d)."""
    _, m, d = SHAPES[shape]
    g = torch.Generator().manual_seed(seed * 1_000_003 + m * 1_000 + d)
    X = torch.randn(batch, m, d, generator=g, dtype=torch.float64) / math.sqrt(m)
    G = torch.randn(batch, d, d, generator=g, dtype=torch.float64)
    return X.to(dtype), G.to(dtype)


def finite_text(grad: torch.Tensor) -> tuple[str, int]:
    """('yes', 0) if every entry is finite, else ('NaN in k/B', k) ('Inf in k/B' if no NaN)."""
    return common.finite_text(grad, finite="yes", inf="Inf"), common.nonfinite_count(grad)


def bench_one(shape: str, batch: int, dtype: torch.dtype, mode: str, *,
              repeats: int | None = None, seed: int = 0, budget_s: float = BUDGET_S,
              full_batch: bool = True) -> dict:
    _, m, d = SHAPES[shape]
    X, G = make_input(shape, batch, dtype, seed)
    fns = common.timed_calls(FUNCS, X, mode, grad=G)

    row: dict = {"shape": shape, "batch": batch, "m": m, "d": d, "dtype": common.dtype_name(dtype),
                 "mode": mode}

    # Warm-up (untimed) doubles as the correctness / finiteness check.
    if mode == "fwd":
        ref, _, _ = _paper_forward64(X.to(torch.float64), EPS)
        for name in ("matbp", "torch"):
            row[f"fwd_err_{name}"] = common.rel_fro(fns[name](), ref)
        fns["paper"]()
        del ref
    else:
        for name in COMPETITORS:
            text, k = finite_text(fns[name]())
            row[f"finite_{name}"] = text
            row[f"nonfinite_{name}"] = k

    row["repeats"], ms = common.time_ms(fns, budget_s=budget_s, min_repeats=MIN_REPEATS,
                                        max_repeats=MAX_REPEATS, repeats=repeats)
    for name in COMPETITORS:
        row[f"{name}_ms"] = common.median(ms[name])
    for other in ("torch", "paper"):
        row[f"ratio_{other}"], row[f"ratio_{other}_iqr"] = common.paired_ratio(ms["matbp"], ms[other])

    tgt = TARGETS.get(shape) if (full_batch and row["dtype"] == TARGET_DTYPE
                                  and mode == TARGET_MODE) else None
    row["target"] = tgt
    row["status"] = (("PASS" if all(row[f"ratio_{k}"] <= v for k, v in tgt.items()) else "FAIL")
                     if tgt else None)
    for name in COMPETITORS:
        row[f"{name}_samples_ms"] = ms[name]
    return row


def _progress(row: dict, seconds: float) -> str:
    fin = " ".join(f"{n}:{row.get('finite_' + n)}" for n in COMPETITORS) if row["mode"] == "fwd+bwd" else ""
    return (f"  {row['shape']:>7} B={row['batch']:<4} {row['dtype']:>7} {row['mode']:<7} "
            f"reps={row['repeats']:<2} matbp {row['matbp_ms']:8.1f}  torch {row['torch_ms']:8.1f}  "
            f"paper {row['paper_ms']:8.1f} ms  m/t {row['ratio_torch']:.3f}  "
            f"m/p {row['ratio_paper']:.3f}  {row['status'] or ''} {fin} [{seconds:.0f} s]")


def run(shapes=DEFAULT_SHAPES, dtypes=DEFAULT_DTYPES, modes=MODES, repeats: int | None = None, *,
        batch_scale: float = 1.0, seed: int = 0, budget_s: float = BUDGET_S,
        verbose: bool = False) -> list[dict]:
    """Run the timing benchmark; one row (dict) per (shape, dtype, mode).

    ``shapes`` are names from :data:`SHAPES`; ``batch_scale`` scales each
    shape's B (targets are only marked at ``batch_scale == 1``); ``repeats``
    None picks an adaptive count (>= 3) from ``budget_s`` seconds per case.
    """
    cases = [(shape, max(1, int(round(SHAPES[shape][0] * batch_scale))), common.as_dtype(dt), mode)
             for shape in shapes for dt in dtypes for mode in modes]
    return common.collect(cases, lambda *case: bench_one(*case, repeats=repeats, seed=seed, budget_s=budget_s,
                                                         full_batch=batch_scale == 1.0),
                          _progress if verbose else None)


def notes_for(rows: list[dict]) -> list[str]:
    notes = [
        "Times: medians (ms) over interleaved repetitions (order rotated each repetition), after one "
        "untimed warm-up call of each competitor; ratios = median(matbp) / median(competitor). "
        f"eps = {EPS:g}; X = randn(B, m, d) / sqrt(m) (fixed seed, same values in both dtypes); "
        "fwd+bwd = C.backward(G) with a fixed G = randn(B, d, d) on a fresh leaf per call.",
        "torch = eigh(XᵀX + eps·I) + V diag(log L) Vᵀ in X's dtype with autograd; paper = CPU float64 "
        "full SVD (eqs. 15/16) and the K-matrix backward (eq. 11 structure, factor-2 slip of eqs. 12/14 "
        "corrected, no tie guard), result cast back to X's dtype.",
        "Targets (float64 fwd+bwd, full B): AlexNet-like matbp/torch <= 0.33 and matbp/paper <= 0.33; "
        "square matbp/torch <= 0.5.",
        "grad finite: from the warm-up call; 'NaN in k/B' = k matrices of the batch have a non-finite "
        "gradient entry (NaN, or 'Inf' when no entry is NaN). C err (fwd rows): max over the batch of "
        "||C - C_ref||_F / ||C_ref||_F, C_ref = the float64 SVD-based C at X (as given in its dtype).",
    ]
    common.add_note(notes, "Targets missed: ", [
        f"{r['shape']} {r['dtype']} {r['mode']} (m/t {r['ratio_torch']:.3f}, m/p {r['ratio_paper']:.3f})"
        for r in rows if r["status"] == "FAIL"], sep="; ")
    return common.add_note(notes, "MATBP FAILURES: ", matbp_failures(rows), sep="; ")


def matbp_failures(rows: list[dict]) -> list[str]:
    bad = []
    for r in rows:
        tag = f"{r['shape']} {r['dtype']} {r['mode']}"
        if r.get("finite_matbp") not in (None, "yes"):
            bad.append(f"{tag}: gradient {r['finite_matbp']}")
        err = r.get("fwd_err_matbp")
        if err is not None and not (err <= FWD_TOL[r["dtype"]]):
            bad.append(f"{tag}: forward error {err:.2e}")
    return bad


def print_rows(rows: list[dict], env: dict | None = None) -> None:
    common.print_table(rows, columns_for(rows), title=TITLE, env=env, notes=notes_for(rows) + hvp_notes(rows))


# --------------------------------------------------------------------------
# Hessian-vector product rows (--hvp)
# --------------------------------------------------------------------------
#
# Rows with mode "hvp" in the timing table (same files): the Hessian-vector
# product V -> d/dt ∇_X <G, C(X + tV)> at t = 0 by two torch.autograd.grad
# calls (the first with create_graph=True), i.e. the double backward of
# matbp.o2p_log against torch's double backward through the eigh
# composition, float64, at the AlexNet-like shape.

HVP_MODE = "hvp"
HVP_SHAPES = ("alexnet",)
HVP_DTYPES = ("float64",)
HVP_COMPETITORS = ("matbp", "torch")

HVP_COLUMNS = [
    *common.columns(hvp_nonfinite_matbp="HVP non-finite matbp", hvp_nonfinite_torch="HVP non-finite torch"),
    *common.columns(common.fmt_err, hvp_diff="HVP matbp vs torch"),
]


def columns_for(rows: list[dict]) -> list:
    """The timing table's columns, plus the HVP ones when ``rows`` has hvp rows."""
    return COLUMNS + HVP_COLUMNS if any(r.get("mode") == HVP_MODE for r in rows) else COLUMNS


def hvp_call(f, X: torch.Tensor, G: torch.Tensor, V: torch.Tensor):
    """The argument-free call: on a fresh leaf Xl, g = ∇ <G, f(Xl)> with
    create_graph=True, then the double backward <g, V> -> returns the HVP."""
    def call():
        Xl = X.detach().requires_grad_()
        (g,) = torch.autograd.grad(f(Xl), Xl, G, create_graph=True)
        (hv,) = torch.autograd.grad(g, Xl, V)
        return hv
    return call


def hvp_one(shape: str, batch: int, dtype: torch.dtype, *, repeats: int | None = None, seed: int = 0,
            budget_s: float = BUDGET_S) -> dict:
    """One hvp row: median ms of matbp and torch, their ratio, and the
    non-finite entries of each HVP (from the untimed warm-up call)."""
    _, m, d = SHAPES[shape]
    X, G = make_input(shape, batch, dtype, seed)
    g = torch.Generator().manual_seed(seed * 1_000_003 + m * 1_000 + d + 1)
    V = torch.randn(X.shape, generator=g, dtype=torch.float64).to(dtype)
    fns = {name: hvp_call(FUNCS[name], X, G, V) for name in HVP_COMPETITORS}

    row: dict = {"shape": shape, "batch": batch, "m": m, "d": d, "dtype": common.dtype_name(dtype),
                 "mode": HVP_MODE}
    hv = {}
    for name in HVP_COMPETITORS:  # warm-up (untimed), kept for the finiteness columns
        hv[name] = fns[name]()
        text, k = finite_text(hv[name])
        row[f"finite_{name}"] = text
        row[f"nonfinite_{name}"] = k
        row[f"hvp_nonfinite_{name}"] = int((~torch.isfinite(hv[name])).sum())
    row["hvp_diff"] = common.rel_fro(hv["matbp"], hv["torch"])
    del hv

    row["repeats"], ms = common.time_ms(fns, budget_s=budget_s, min_repeats=MIN_REPEATS,
                                        max_repeats=MAX_REPEATS, repeats=repeats)
    for name in HVP_COMPETITORS:
        row[f"{name}_ms"] = common.median(ms[name])
    row["ratio_torch"], row["ratio_torch_iqr"] = common.paired_ratio(ms["matbp"], ms["torch"])
    row["target"] = None
    row["status"] = None
    for name in HVP_COMPETITORS:
        row[f"{name}_samples_ms"] = ms[name]
    return row


def _hvp_progress(row: dict, seconds: float) -> str:
    return (f"  {row['shape']:>7} B={row['batch']:<4} {row['dtype']:>7} {row['mode']:<7} "
            f"reps={row['repeats']:<2} matbp {row['matbp_ms']:8.1f}  torch {row['torch_ms']:8.1f} ms  "
            f"m/t {row['ratio_torch']:.3f}  non-finite HVP entries matbp {row['hvp_nonfinite_matbp']} "
            f"torch {row['hvp_nonfinite_torch']} [{seconds:.0f} s]")


def hvp_rows(shapes=HVP_SHAPES, dtypes=HVP_DTYPES, repeats: int | None = None, *, batch_scale: float = 1.0,
             seed: int = 0, budget_s: float = BUDGET_S, verbose: bool = False) -> list[dict]:
    """Time the HVP through o2p_log against the eigh composition; one row per (shape, dtype)."""
    cases = [(shape, max(1, int(round(SHAPES[shape][0] * batch_scale))), common.as_dtype(dt))
             for shape in shapes for dt in dtypes]
    return common.collect(cases, lambda *case: hvp_one(*case, repeats=repeats, seed=seed, budget_s=budget_s),
                          _hvp_progress if verbose else None)


def hvp_notes(rows: list[dict]) -> list[str]:
    if not any(r.get("mode") == HVP_MODE for r in rows):
        return []
    return [
        "hvp rows (--hvp): the Hessian-vector product d/dt ∇_X <G, C(X + tV)> at t = 0, two "
        "torch.autograd.grad calls on a fresh leaf per call (the first with create_graph=True), fixed "
        "V = randn(B, m, d); matbp = the double backward of matbp.o2p_log, torch = torch's double backward "
        "through the eigh composition; ratio = median(matbp) / median(torch). HVP non-finite = non-finite "
        "entries of the HVP (of B·m·d) from the untimed warm-up call; grad finite columns: matrices with "
        "a non-finite HVP entry; HVP matbp vs torch = max over the batch of ||HVP_matbp - HVP_torch||_F / "
        "||HVP_torch||_F (NaN when torch's is not finite).",
    ]


# --------------------------------------------------------------------------
# Accuracy table
# --------------------------------------------------------------------------

ACC_COLUMNS = [
    *common.standard_columns("m", "d"),
    common.Column("gap", "gap g", lambda v: "0 (tie)" if v == 0 else f"{v:.0e}"),
    common.Column("ref", "reference", ".6e"),
    *[common.Column(f"{name}_{dt}", f"{name} f{dt[-2:]}", common.fmt_err)
      for dt in ("float64", "float32") for name in COMPETITORS],
    # The second-derivative section: Hessian-vector products (double backward).
    *[common.Column(f"hvp_{name}", f"HVP {name} f64", common.fmt_err) for name in HVP_COMPETITORS],
]


def _orthonormal(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    Q, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    return Q


def accuracy_problem(m: int, d: int, gap: float, seed: int = 0):
    """X = P diag(σ) Wᵀ (float64) whose σ² has the cluster 1, 1+g, 1+2g; E, G float32-representable."""
    k = min(m, d)
    lam = ([1.0, 1.0 + gap, 1.0 + 2 * gap] + list(ACC_OTHER_EIGS))[:k]
    g = torch.Generator().manual_seed(seed * 7919 + m * 100 + d)
    P, W = _orthonormal(m, k, g), _orthonormal(d, k, g)
    sigma = torch.tensor(lam, dtype=torch.float64).sqrt()
    X = (P * sigma) @ W.mT
    E = torch.randn(m, d, generator=g, dtype=torch.float64).float().double()
    G = torch.randn(d, d, generator=g, dtype=torch.float64).float().double()
    return X, E, G


def _directional(f, X: torch.Tensor, E: torch.Tensor, G: torch.Tensor) -> float:
    Xl = X.detach().unsqueeze(0).requires_grad_()
    f(Xl).backward(G.to(X.dtype).unsqueeze(0))
    return float((Xl.grad[0].to(torch.float64) * E).sum())


def _rel_err(val: float, ref: float) -> float:
    if not math.isfinite(val):
        return val  # NaN / inf shown as such
    return abs(val - ref) / abs(ref)


def run_accuracy(shapes=ACC_SHAPES, gaps=ACC_GAPS, dtypes=("float64", "float32"), *, seed: int = 0,
                 dps: int = 80, verbose: bool = False) -> list[dict]:
    """Gradient accuracy rows: one per (m, d, gap), a column per (competitor, dtype)."""
    tests_dir = os.path.join(common.REPO_ROOT, "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from hvp_reference import o2p_log_hvp_reference  # noqa: E402
    from o2p_reference import o2p_log_directional_reference  # noqa: E402

    rows = []
    for (m, d) in shapes:
        for gap in gaps:
            X, E, G = accuracy_problem(m, d, gap, seed)
            row: dict = {"m": m, "d": d, "gap": gap}
            for dt in dtypes:
                dtype = DTYPES[dt]
                Xd = X.to(dtype)
                ref = o2p_log_directional_reference(Xd.double(), E, G, EPS, dps=dps)
                row[f"ref_{dt}"] = ref
                if dt == "float64":
                    row["ref"] = ref
                for name in COMPETITORS:
                    val = _directional(FUNCS[name], Xd, E, G)
                    row[f"{name}_{dt}_value"] = val
                    row[f"{name}_{dt}"] = _rel_err(val, ref)
            if "ref" not in row:
                row["ref"] = row[f"ref_{dtypes[0]}"]
            # Second derivative: d/dt ∇_X <G, C(X + tE)> at t = 0 against the 50-digit HVP.
            hvp_ref = o2p_log_hvp_reference(X, G, E, EPS)
            for name in HVP_COMPETITORS:
                hv = hvp_call(FUNCS[name], X.unsqueeze(0), G.unsqueeze(0), E.unsqueeze(0))()[0]
                row[f"hvp_{name}"] = (float("nan") if not bool(torch.isfinite(hv).all())
                                      else float((hv - hvp_ref).norm() / hvp_ref.norm()))
            if verbose:
                print(f"  m={m:<3} d={d:<3} g={gap:<7g} " + "  ".join(
                    f"{n} {dt} {common.fmt_err(row[f'{n}_{dt}'])}" for dt in dtypes for n in COMPETITORS),
                    flush=True)
            rows.append(row)
    return rows


def accuracy_notes() -> list[str]:
    return [
        "Relative error |<gX, E> - ref| / |ref| of each competitor's gradient gX in direction E "
        "(fixed random E, G; B = 1; eps = 1e-3); ref = d/dt <G, C(X + tE)> at t = 0 by an 80-digit "
        "mpmath central difference (tests/o2p_reference.py), taken at the float32-rounded X for the "
        "f32 columns (the 'reference' column shows the float64 one).",
        "X = P diag(σ) Wᵀ (random orthonormal P, W): σ² = 1, 1+g, 1+2g, 0.3, 2, 0.05, 4, ... "
        "(first min(m, d)); for m < d, XᵀX also has d - m exact zero eigenvalues (eps in XᵀX + eps·I). "
        "g = 0 is an exact triple tie (up to the rounding of X). NaN/inf = non-finite gradient.",
        "HVP columns (second derivatives, double backward): ||Hv - ref|| / ||ref|| of the Hessian-vector "
        "product d/dt grad_X <G, C(X + tE)> at t = 0, float64, with ref from a 50-digit mpmath central "
        "difference of the exact gradient (tests/hvp_reference.py); torch = the eigh composition's double "
        "backward.",
    ]


def print_accuracy_rows(rows: list[dict], env: dict | None = None) -> None:
    common.print_table(rows, ACC_COLUMNS, title=ACC_TITLE, env=env, notes=accuracy_notes())


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=None,
                   help=f"shapes by name (default {' '.join(DEFAULT_SHAPES)}; --quick: "
                        f"{' '.join(QUICK_SHAPES)})")
    common.add_case_arguments(p, dtypes=DTYPES, default_dtypes=DEFAULT_DTYPES, modes=MODES,
                              min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS, budget_s=BUDGET_S)
    p.add_argument("--batch-scale", type=float, default=None,
                   help="scale every shape's batch size (default 1; --quick: 0.1)")
    p.add_argument("--quick", action="store_true",
                   help=f"demo-sized run: shapes {' '.join(QUICK_SHAPES)}, B x {QUICK_BATCH_SCALE:g}, "
                        f"about {QUICK_BUDGET_S:g} s per case; writes *_quick.*")
    p.add_argument("--skip-accuracy", action="store_true", help="skip the gradient accuracy table")
    p.add_argument("--skip-timing", action="store_true", help="skip the timing table")
    p.add_argument("--hvp", action="store_true",
                   help="also time a Hessian-vector product through o2p_log against the eigh composition "
                        f"({' '.join(HVP_SHAPES)}, {' '.join(HVP_DTYPES)}; rows with mode 'hvp' in the timing "
                        "table, also with --skip-timing)")
    common.add_standard_arguments(p)
    args = common.parse_standard_arguments(p, argv, shapes=(QUICK_SHAPES, DEFAULT_SHAPES),
                                           batch_scale=(QUICK_BATCH_SCALE, 1.0), budget=(QUICK_BUDGET_S, BUDGET_S))
    suffix = "_quick" if args.quick else ""

    env = common.print_header(TITLE, "cpu")
    status = 0
    t_start = time.perf_counter()

    if not args.skip_timing or args.hvp:
        rows = [] if args.skip_timing else run(
            args.shapes, args.dtypes, args.modes, args.repeats, batch_scale=args.batch_scale,
            seed=args.seed, budget_s=args.budget, verbose=True)
        if args.hvp:
            rows += hvp_rows(repeats=args.repeats, batch_scale=args.batch_scale, seed=args.seed,
                             budget_s=args.budget, verbose=True)
        print()
        print_rows(rows)
        config = common.timing_config(args, MIN_REPEATS, MAX_REPEATS, {
            "shapes": {s: [max(1, int(round(SHAPES[s][0] * args.batch_scale))), *SHAPES[s][1:]]
                       for s in (() if args.skip_timing else args.shapes)},
            "dtypes": [] if args.skip_timing else args.dtypes, "modes": [] if args.skip_timing else args.modes,
            "eps": EPS, "input": "randn(B, m, d) / sqrt(m), float64 draw then cast"})
        if args.hvp:
            config["hvp"] = {"shapes": {s: [max(1, int(round(SHAPES[s][0] * args.batch_scale))), *SHAPES[s][1:]]
                                        for s in HVP_SHAPES}, "dtypes": list(HVP_DTYPES)}
        common.save(args, common.result_name(NAME, "cpu", args.quick), rows, columns_for(rows), env=env,
                    title=TITLE, config=config, notes=notes_for(rows) + hvp_notes(rows))
        if matbp_failures(rows) or (args.strict and any(r["status"] == "FAIL" for r in rows)):
            status = 1
        print(f"[timing table: {time.perf_counter() - t_start:.0f} s]\n", flush=True)

    if not args.skip_accuracy:
        t_acc = time.perf_counter()
        gaps = (1e-3, 1e-9, 0.0) if args.quick else ACC_GAPS
        acc = run_accuracy(ACC_SHAPES, gaps, seed=args.seed, verbose=True)
        print()
        print_accuracy_rows(acc)
        config = {"shapes (m, d)": [list(s) for s in ACC_SHAPES], "gaps": list(gaps), "eps": EPS,
                  "batch": 1, "reference": "mpmath, 80 digits, central difference step 1e-30",
                  "seed": args.seed}
        common.save(args, f"{ACC_NAME}{suffix}", acc, ACC_COLUMNS, env=env, title=ACC_TITLE, config=config,
                    notes=accuracy_notes())
        print(f"[accuracy table: {time.perf_counter() - t_acc:.0f} s]", flush=True)

    return status


if __name__ == "__main__":
    sys.exit(main())
