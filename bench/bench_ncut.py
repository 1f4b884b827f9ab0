"""Benchmark: matbp's low-rank normalized-cuts objectives J1 + J2 against a dense m×m version.

The objectives (docs/design.md §4, "Normalized cuts"): for features X (m × d),
W = X Xᵀ (Λ = I), D = diag(W 1), E the indicator matrix of the labels,

* J2 = ½‖Π_W − Π_Ψ‖²_F, Ψ = E (EᵀE)⁻¹ Eᵀ,
* J1 = ½‖Π_M − Π_Ω‖²_F, M = D^{-1/2} W D^{-1/2}, Ω = D^{1/2} E Eᵀ D^{1/2},

Π_A the orthogonal projector onto range(A), numerical rank by the relative
tolerance max(m, d)·eps on the eigenvalues.  The benchmark times the
forward+backward (w.r.t. X) of the sum J1 + J2, in float64, on non-negative
features ``X = rand(m, d)`` and random labels with k segments (fixed seed per m).

Part 1 (``dense`` table) -- low-rank against dense, m in 256, 1024, 4096, d = 20,
k = 12.  Two competitors, interleaved per repetition, same input:

* ``low-rank``: ``matbp.ncut_j1(X, labels) + matbp.ncut_j2(X, labels)``, then
  ``backward()``.  Never forms an m×m matrix: O(m d² + d³ + m k).
* ``dense``: :func:`dense_j1_j2`, written here in plain torch: W = X Xᵀ,
  D = W 1, M = W / (√D √Dᵀ) formed as m×m matrices; Π_W and Π_M from
  ``torch.linalg.eigh`` of W and M (V_r V_rᵀ over the eigenvalues with
  |λ| > max(m, d)·eps·max|λ|, the same tolerance as matbp); Π_Ψ = Ψ (already
  an orthogonal projector) and Π_Ω = S (SᵀS)⁻¹ Sᵀ with S = D^{1/2} E (the
  disjoint columns D^{1/2} e_k span range(Ω)) in closed form rather than by two
  more m×m eigendecompositions -- the cheapest honest dense version.  The
  backward is **torch autograd** through ``eigh`` (and the m×m products);
  the gradient through D is included.  Cost O(m³).

The warm-up call of each competitor doubles as the correctness check: the
relative differences of J1 and of J2 between the two (expected ~1e-10 or
better), of the gradients w.r.t. X, and the numerical ranks of W and M on both
sides.  Speed-up = median(dense) / median(low-rank); target: at least 100× at
m = 4096 (PASS/FAIL).  The dense case at m = 4096 takes seconds per call, so it
runs the minimum number of repetitions.

Part 2 (``scaling`` table) -- the low-rank path alone up to a full BSDS image:
m in 4096, 16384, 65536, 154401 (= 481 × 321), d = 20, k = 12, float64, one
image, plus one batched row (B = 8 images of 154401 pixels, per-image time
reported).  Two timings, interleaved: ``fwd`` = J1 + J2 on a leaf X that
requires grad (the forward half of a training step: the autograd graph is
recorded but not run) and ``fwd+bwd`` = the same plus ``backward()``.
Target: fwd+bwd at m = 154401, B = 1 under 0.5 s (PASS/FAIL).

Usage::

    python bench/bench_ncut.py                 # full run: bench/results/ncut_cpu.{json,md}
    python bench/bench_ncut.py --quick         # demo-sized (m <= 16384): ncut_cpu_quick.*
    python bench/bench_ncut.py --repeats 5 --no-write
    python bench/bench_ncut.py --profile       # also torch.profiler on one full-size fwd+bwd call

From another script (``bench/`` is not a package)::

    sys.path.insert(0, "bench"); import bench_ncut
    rows = bench_ncut.run(dense_sizes=[256], sizes=[4096], batch_rows=[], budget_s=0.5)
    bench_ncut.print_rows(rows)

Exit status: 1 if the values (or gradients) of the two competitors disagree
beyond tolerance or a gradient is not finite (or, with ``--strict``, if a
performance target is missed); 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
import common  # noqa: E402

import matbp  # noqa: E402

NAME = "ncut"
TITLE = "matbp normalized cuts J1 + J2 (low-rank) vs a dense m×m torch implementation (float64, fwd+bwd)"
SCALE_TITLE = "matbp normalized cuts J1 + J2, low-rank path up to a full BSDS image (float64)"

D_FEAT = 20
K_SEG = 12
BSDS_M = 481 * 321  # 154401

DEFAULT_DENSE_SIZES = (256, 1024, 4096)
DEFAULT_SIZES = (4096, 16384, 65536, BSDS_M)
DEFAULT_BATCH_ROWS = ((8, BSDS_M),)  # (B, m)
QUICK_DENSE_SIZES = (256, 1024)
QUICK_SIZES = (4096, 16384)
QUICK_BATCH_ROWS = ((2, 16384),)
QUICK_BUDGET_S = 0.5

# Adaptive repetition count: about BUDGET_S seconds of timed calls per case.
BUDGET_S = 6.0
MIN_REPEATS = 3
MAX_REPEATS = 30

# Targets.
SPEEDUP_TARGETS = {4096: 100.0}          # m -> minimum dense/low-rank speed-up (fwd+bwd)
FWD_BWD_TARGETS_MS = {(1, BSDS_M): 500.0}  # (B, m) -> maximum fwd+bwd ms

# Agreement tolerances (relative), low-rank vs dense.
VALUE_TOL = 1e-10
GRAD_TOL = 1e-7

DENSE_COLUMNS = [
    *common.standard_columns("m", "d", "k", "repeats"),
    common.Column("lowrank_ms", "low-rank ms", ".2f"),
    common.Column("dense_ms", "dense ms", ".1f"),
    common.Column("speedup", "dense/low-rank", ".1f"),
    common.Column("speedup_iqr", "IQR", lambda v: f"{v[0]:.1f}-{v[1]:.1f}"),
    common.Column("target", "target", lambda v: f">= {v:g}"),
    *common.standard_columns("status"),
    *common.columns(".1e", j1_rel="J1 rel diff", j2_rel="J2 rel diff", grad_rel="gX rel diff"),
    common.Column("ranks", "rank W,M (lr/dense)", align="left"),
    *common.columns(".6f", J1="J1", J2="J2"),
]

SCALE_COLUMNS = [
    *common.standard_columns("batch", "m", "d", "k", "repeats"),
    *common.columns(".1f", fwd_ms="fwd ms", fwdbwd_ms="fwd+bwd ms", bwd_ms="bwd ms (diff)",
                    fwd_per_image_ms="fwd ms/img", fwdbwd_per_image_ms="fwd+bwd ms/img",
                    ns_per_pixel="fwd+bwd ns/px"),
    common.Column("target", "target", lambda v: f"< {v:g} ms"),
    *common.standard_columns("status"),
    common.Column("finite", "grad finite", lambda v: "yes" if v else "NO", align="left"),
]


# --------------------------------------------------------------------------
# Inputs and competitors
# --------------------------------------------------------------------------

def make_input(m: int, d: int = D_FEAT, k: int = K_SEG, batch: int | None = None,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative float64 features rand(m, d) and random labels in [0, k), fixed seed per m."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + m)
    shape = (m,) if batch is None else (batch, m)
    X = torch.rand(*shape, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, shape, generator=g, dtype=torch.int64)
    return X, labels


def lowrank_j1_j2(X: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return matbp.ncut_j1(X, labels), matbp.ncut_j2(X, labels)


def _range_projector(A: torch.Tensor, rtol: float) -> tuple[torch.Tensor, int]:
    """Π_A = V_r V_rᵀ from eigh(A), rank by |λ| > rtol·max|λ| (differentiable by autograd)."""
    L, V = torch.linalg.eigh(A)
    absL = L.detach().abs()
    mask = absL > rtol * absL.max()
    Vr = V[:, mask]
    return Vr @ Vr.mT, int(mask.sum())


def dense_j1_j2(X: torch.Tensor, labels: torch.Tensor):
    """Dense m×m J1 and J2 in plain torch (autograd backward).  Returns (J1, J2, rank W, rank M)."""
    m, d = X.shape
    rtol = max(m, d) * torch.finfo(torch.float64).eps
    ids = torch.unique(labels)
    E = (labels[:, None] == ids[None, :]).to(X.dtype)  # m × k indicator (constant)
    W = X @ X.mT
    Dg = W.sum(1)
    r = Dg.sqrt()
    M = W / (r[:, None] * r[None, :])
    PW, rank_w = _range_projector(W, rtol)
    PM, rank_m = _range_projector(M, rtol)
    Psi = (E / E.sum(0)) @ E.mT                    # E (EᵀE)⁻¹ Eᵀ = Π_Ψ
    S = r[:, None] * E                             # D^{1/2} E: disjoint columns spanning range(Ω)
    PO = (S / (S * S).sum(0)) @ S.mT               # S (SᵀS)⁻¹ Sᵀ = Π_Ω
    J1 = 0.5 * ((PM - PO) ** 2).sum()
    J2 = 0.5 * ((PW - Psi) ** 2).sum()
    return J1, J2, rank_w, rank_m


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# --------------------------------------------------------------------------
# Part 1: low-rank vs dense
# --------------------------------------------------------------------------

def bench_dense_one(m: int, *, d: int = D_FEAT, k: int = K_SEG, repeats: int | None = None,
                    seed: int = 0, budget_s: float = BUDGET_S) -> dict:
    X, labels = make_input(m, d, k, seed=seed)

    def lowrank():
        Xl = X.detach().requires_grad_()
        J1, J2 = lowrank_j1_j2(Xl, labels)
        (J1 + J2).backward()
        return J1.detach(), J2.detach(), Xl.grad

    def dense():
        Xl = X.detach().requires_grad_()
        J1, J2, rw, rm = dense_j1_j2(Xl, labels)
        (J1 + J2).backward()
        return J1.detach(), J2.detach(), Xl.grad, rw, rm

    # Warm-up (untimed) doubles as the correctness check.
    J1l, J2l, gl = lowrank()
    J1d, J2d, gd, rank_wd, rank_md = dense()
    with torch.no_grad():
        _, rank_wl = matbp.ncut_j2(X, labels, return_rank=True)
        _, rank_ml = matbp.ncut_j1(X, labels, return_rank=True)
    row: dict = {
        "part": "dense", "m": m, "d": d, "k": k,
        "J1": J1l.item(), "J2": J2l.item(), "J1_dense": J1d.item(), "J2_dense": J2d.item(),
        "j1_rel": _rel(J1l.item(), J1d.item()),
        "j2_rel": _rel(J2l.item(), J2d.item()),
        "grad_rel": ((gl - gd).norm() / gd.norm()).item(),
        "grad_finite": bool(torch.isfinite(gl).all()),
        "grad_finite_dense": bool(torch.isfinite(gd).all()),
        "rank_w": [int(rank_wl), rank_wd], "rank_m": [int(rank_ml), rank_md],
        "ranks": f"{int(rank_wl)},{int(rank_ml)} / {rank_wd},{rank_md}",
    }
    del gl, gd

    fns = {"lowrank": lowrank, "dense": dense}
    row["repeats"], ms = common.time_ms(fns, budget_s=budget_s, min_repeats=MIN_REPEATS,
                                        max_repeats=MAX_REPEATS, repeats=repeats)
    row["lowrank_ms"] = common.median(ms["lowrank"])
    row["dense_ms"] = common.median(ms["dense"])
    row["speedup"], row["speedup_iqr"] = common.paired_ratio(ms["dense"], ms["lowrank"])
    tgt = SPEEDUP_TARGETS.get(m) if (d, k) == (D_FEAT, K_SEG) else None
    row["target"] = tgt
    row["status"] = ("PASS" if row["speedup"] >= tgt else "FAIL") if tgt else None
    row["correct"] = (row["j1_rel"] <= VALUE_TOL and row["j2_rel"] <= VALUE_TOL
                      and row["grad_rel"] <= GRAD_TOL and row["grad_finite"]
                      and row["rank_w"][0] == row["rank_w"][1] and row["rank_m"][0] == row["rank_m"][1])
    row["lowrank_samples_ms"] = ms["lowrank"]
    row["dense_samples_ms"] = ms["dense"]
    return row


# --------------------------------------------------------------------------
# Part 2: low-rank alone, up to full resolution
# --------------------------------------------------------------------------

def bench_scale_one(m: int, batch: int = 1, *, d: int = D_FEAT, k: int = K_SEG,
                    repeats: int | None = None, seed: int = 0, budget_s: float = BUDGET_S) -> dict:
    X, labels = make_input(m, d, k, batch=None if batch == 1 else batch, seed=seed)

    def fwd():
        Xl = X.detach().requires_grad_()
        J1, J2 = lowrank_j1_j2(Xl, labels)
        return J1 + J2

    def fwdbwd():
        Xl = X.detach().requires_grad_()
        J1, J2 = lowrank_j1_j2(Xl, labels)
        (J1 + J2).sum().backward()
        return Xl.grad

    fwd()
    g = fwdbwd()  # warm-up
    finite = bool(torch.isfinite(g).all())
    del g
    reps, ms = common.time_ms({"fwd": fwd, "fwdbwd": fwdbwd}, budget_s=budget_s, min_repeats=MIN_REPEATS,
                              max_repeats=MAX_REPEATS, repeats=repeats)
    row: dict = {"part": "scaling", "batch": batch, "m": m, "d": d, "k": k, "repeats": reps,
                 "fwd_ms": common.median(ms["fwd"]), "fwdbwd_ms": common.median(ms["fwdbwd"])}
    row["bwd_ms"] = row["fwdbwd_ms"] - row["fwd_ms"]
    row["fwd_per_image_ms"] = row["fwd_ms"] / batch
    row["fwdbwd_per_image_ms"] = row["fwdbwd_ms"] / batch
    row["ns_per_pixel"] = row["fwdbwd_ms"] * 1e6 / (batch * m)
    tgt = FWD_BWD_TARGETS_MS.get((batch, m)) if (d, k) == (D_FEAT, K_SEG) else None
    row["target"] = tgt
    row["status"] = ("PASS" if row["fwdbwd_ms"] < tgt else "FAIL") if tgt else None
    row["finite"] = finite
    row["fwd_samples_ms"] = ms["fwd"]
    row["fwdbwd_samples_ms"] = ms["fwdbwd"]
    return row


# --------------------------------------------------------------------------
# Driver, tables
# --------------------------------------------------------------------------

def _dense_progress(row: dict, seconds: float) -> str:
    return (f"  dense   m={row['m']:<6} reps={row['repeats']:<2} low-rank {row['lowrank_ms']:9.2f} ms  "
            f"dense {row['dense_ms']:10.1f} ms  x{row['speedup']:.1f} {row['status'] or ''}  "
            f"J1 {row['j1_rel']:.1e} J2 {row['j2_rel']:.1e} gX {row['grad_rel']:.1e}  [{seconds:.0f} s]")


def _scale_progress(row: dict, seconds: float) -> str:
    return (f"  scaling B={row['batch']:<2} m={row['m']:<6} reps={row['repeats']:<2} fwd {row['fwd_ms']:8.1f} ms  "
            f"fwd+bwd {row['fwdbwd_ms']:8.1f} ms  ({row['fwdbwd_per_image_ms']:.1f} ms/img) "
            f"{row['status'] or ''}  [{seconds:.0f} s]")


def run(dense_sizes=DEFAULT_DENSE_SIZES, sizes=DEFAULT_SIZES, batch_rows=DEFAULT_BATCH_ROWS,
        repeats: int | None = None, *, d: int = D_FEAT, k: int = K_SEG, seed: int = 0,
        budget_s: float = BUDGET_S, verbose: bool = False) -> list[dict]:
    """Run both parts; rows carry ``part`` = "dense" or "scaling".

    ``dense_sizes``: m for the low-rank vs dense table; ``sizes``: m for the
    single-image scaling rows; ``batch_rows``: (B, m) pairs for batched scaling
    rows.  ``repeats`` None picks an adaptive count (>= 3) from ``budget_s``
    seconds per case (the dense m = 4096 case ends up at the minimum, 3).
    """
    dense = common.collect([(int(m),) for m in dense_sizes], lambda m: bench_dense_one(
        m, d=d, k=k, repeats=repeats, seed=seed, budget_s=budget_s), _dense_progress if verbose else None)
    scale_cases = [(int(m), int(B)) for B, m in [(1, m) for m in sizes] + [tuple(r) for r in batch_rows]]
    return dense + common.collect(scale_cases, lambda m, B: bench_scale_one(
        m, B, d=d, k=k, repeats=repeats, seed=seed, budget_s=budget_s), _scale_progress if verbose else None)


def _split(rows):
    return [r for r in rows if r["part"] == "dense"], [r for r in rows if r["part"] == "scaling"]


def dense_notes(rows: list[dict]) -> list[str]:
    notes = [
        "Times: medians (ms) of forward+backward (w.r.t. X) of J1 + J2 over interleaved repetitions "
        "(order rotated each repetition) after one untimed warm-up call of each; speed-up = "
        "median(dense) / median(low-rank), IQR = quartiles of the per-repetition paired ratios. "
        f"X = rand(m, {D_FEAT}) float64, labels = randint(0, {K_SEG}, m), fixed seed per m.",
        "low-rank = matbp.ncut_j1 + matbp.ncut_j2 (no m×m matrix). dense = plain torch: W = X Xᵀ, "
        "M = D^-1/2 W D^-1/2 as m×m matrices, Π_W and Π_M by torch.linalg.eigh with the rank "
        "tolerance max(m, d)·eps, Π_Ψ = E (EᵀE)⁻¹ Eᵀ and Π_Ω = S (SᵀS)⁻¹ Sᵀ (S = D^1/2 E) in closed "
        "form; backward by autograd (through eigh and D).",
        "Target: speed-up " + ", ".join(f">= {v:g}x at m = {m}" for m, v in SPEEDUP_TARGETS.items())
        + ". Agreement from the warm-up call: relative "
        f"difference of J1, of J2 (tolerance {VALUE_TOL:g}) and ||gX_lr - gX_dense|| / ||gX_dense|| "
        f"(tolerance {GRAD_TOL:g}); ranks of W and M as low-rank / dense.",
    ]
    common.add_note(notes, "Targets missed: ",
                    [f"m={r['m']} (x{r['speedup']:.1f})" for r in rows if r["status"] == "FAIL"], sep="; ")
    return common.add_note(notes, "DISAGREEMENT (values, gradients, ranks or non-finite gradient): ",
                           [f"m={r['m']}" for r in rows if not r["correct"]])


def scale_notes(rows: list[dict]) -> list[str]:
    notes = [
        "Low-rank path only: medians (ms) over interleaved repetitions of fwd (J1 + J2 on a leaf X "
        "that requires grad: the forward half of a training step) and fwd+bwd (the same plus "
        "backward()); bwd = fwd+bwd - fwd. B > 1: one batched call on (B, m, d); per-image = total / B. "
        f"d = {D_FEAT}, k = {K_SEG}, float64; m = {BSDS_M} is a full 481 × 321 BSDS image.",
        "Target: fwd+bwd " + ", ".join(f"< {v:g} ms at B = {b}, m = {m}"
                                       for (b, m), v in FWD_BWD_TARGETS_MS.items()) + ".",
    ]
    common.add_note(notes, "Targets missed: ", [f"B={r['batch']} m={r['m']} ({r['fwdbwd_ms']:.1f} ms)"
                                                for r in rows if r["status"] == "FAIL"], sep="; ")
    return common.add_note(notes, "NON-FINITE GRADIENT: ",
                           [f"B={r['batch']} m={r['m']}" for r in rows if not r["finite"]])


def print_rows(rows: list[dict], env: dict | None = None) -> None:
    dense, scale = _split(rows)
    if dense:
        common.print_table(dense, DENSE_COLUMNS, title=TITLE, env=env, notes=dense_notes(dense))
        env = None
    if scale:
        if dense:
            print()
        common.print_table(scale, SCALE_COLUMNS, title=SCALE_TITLE, env=env, notes=scale_notes(scale))


def failures(rows: list[dict]) -> list[str]:
    dense, scale = _split(rows)
    return ([f"dense m={r['m']}" for r in dense if not r["correct"]]
            + [f"scaling B={r['batch']} m={r['m']}" for r in scale if not r["finite"]])


def write(rows: list[dict], env: dict, out_dir: str, name: str, config: dict) -> tuple[str, str]:
    """``<name>.json`` / ``.md``: the dense table as the main rows, the scaling table appended."""
    dense, scale = _split(rows)
    extra = {
        "scaling_title": SCALE_TITLE,
        "scaling_columns": [{"key": c.key, "header": c.title} for c in SCALE_COLUMNS],
        "scaling_rows": scale,
        "scaling_notes": scale_notes(scale),
    }
    paths = common.write_results(name, dense, DENSE_COLUMNS, env=env, out_dir=out_dir, title=TITLE,
                                 config=config, notes=dense_notes(dense), extra=extra)
    if scale:
        with open(paths[1], "a", encoding="utf-8") as f:
            f.write("\n## " + SCALE_TITLE + "\n\n" + common.format_table(scale, SCALE_COLUMNS) + "\n\n"
                    + "\n".join(scale_notes(scale)) + "\n")
    return paths


def profile_one(m: int = BSDS_M, *, d: int = D_FEAT, k: int = K_SEG, seed: int = 0,
                row_limit: int = 20) -> str:
    """torch.profiler table (self CPU time) of one warm fwd+bwd of J1 + J2 at m pixels."""
    from torch.profiler import ProfilerActivity, profile

    X, labels = make_input(m, d, k, seed=seed)

    def step():
        Xl = X.detach().requires_grad_()
        J1, J2 = lowrank_j1_j2(Xl, labels)
        (J1 + J2).backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"demo-sized run: dense m in {QUICK_DENSE_SIZES}, low-rank m in {QUICK_SIZES}, "
                        f"batched {QUICK_BATCH_ROWS} (B, m), about {QUICK_BUDGET_S:g} s per case; "
                        f"writes {NAME}_cpu_quick.*")
    common.add_case_arguments(p, min_repeats=MIN_REPEATS, max_repeats=MAX_REPEATS, budget_s=BUDGET_S)
    common.add_standard_arguments(p)
    p.add_argument("--profile", action="store_true",
                   help=f"also print a torch.profiler table of one fwd+bwd at m = {BSDS_M}")
    args = common.parse_standard_arguments(p, argv, budget=(QUICK_BUDGET_S, BUDGET_S))
    dense_sizes = QUICK_DENSE_SIZES if args.quick else DEFAULT_DENSE_SIZES
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    batch_rows = QUICK_BATCH_ROWS if args.quick else DEFAULT_BATCH_ROWS

    env = common.print_header(TITLE, "cpu")
    t_start = time.perf_counter()
    rows = run(dense_sizes, sizes, batch_rows, args.repeats, seed=args.seed, budget_s=args.budget,
               verbose=True)
    print()
    print_rows(rows)
    if not args.no_write:
        config = common.timing_config(args, MIN_REPEATS, MAX_REPEATS, {
            "dense_sizes": list(dense_sizes), "sizes": list(sizes),
            "batch_rows (B, m)": [list(r) for r in batch_rows], "d": D_FEAT, "k": K_SEG,
            "dtype": "float64", "input": "X = rand(m, d), labels = randint(0, k, m)"})
        common.print_written(write(rows, env, args.out, common.result_name(NAME, "cpu", args.quick), config))
    print(f"[total: {time.perf_counter() - t_start:.0f} s]", flush=True)

    if args.profile:
        print(f"\ntorch.profiler, one warm fwd+bwd of J1 + J2 at m = {BSDS_M}, d = {D_FEAT}, k = {K_SEG}:")
        print(profile_one(BSDS_M, seed=args.seed))

    if failures(rows) or (args.strict and any(r["status"] == "FAIL" for r in rows)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
