"""The matbp tour (`make demo`): versions, a correctness self-check of every
operator, the layers at work (second-order pooling where PyTorch's own
composition returns NaN, normalized cuts at full image resolution, spectral
segmentation of a synthetic image scored by covering), and the benchmarks at
small sizes (full runs: `make bench`)."""

import os
import platform
import shutil
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import matbp  # noqa: E402


def heading(text):
    print(f"\n== {text} " + "=" * max(0, 70 - len(text)))


def check(name, ok, detail):
    print(f"  [{'PASS' if ok else 'FAIL'}] {name:<52} {detail}")
    return ok


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def self_check():
    g = torch.Generator().manual_seed(0)
    ok = True

    X = torch.randn(64, 16, 16, generator=g, dtype=torch.float64)
    A = X + X.mT
    L, V = matbp.sym_eig(A)
    err = rel((V * L.unsqueeze(-2)) @ V.mT, A)
    ok &= check("sym_eig: V diag(L) Vᵀ = A (B=64, n=16)", err < 1e-13, f"rel err {err:.1e}")
    err = rel(L, torch.linalg.eigvalsh(A))
    ok &= check("sym_eig: eigenvalues vs torch.linalg.eigvalsh", err < 1e-13, f"rel err {err:.1e}")

    Y = torch.randn(32, 20, 7, generator=g, dtype=torch.float64)
    U, S, W = matbp.svd(Y)
    err = rel((U * S.unsqueeze(-2)) @ W.mT, Y)
    ok &= check("svd: U diag(S) Vᵀ = X (B=32, 20x7)", err < 1e-13, f"rel err {err:.1e}")

    P = X @ X.mT / 16 + torch.eye(16, dtype=torch.float64)
    err = rel(torch.linalg.matrix_exp(matbp.sym_fn(P, "log")), P)
    ok &= check("sym_fn: exp(log(A)) = A for SPD A", err < 1e-12, f"rel err {err:.1e}")
    err = rel(matbp.sym_fn(P, "sqrt") @ matbp.sym_fn(P, "sqrt"), P)
    ok &= check("sym_fn: sqrt(A)² = A", err < 1e-12, f"rel err {err:.1e}")

    # Exactness at a triple eigenvalue: sym_fn's gradient against the
    # Daleckii–Krein formula with the known spectrum; the composition through
    # eigenvectors (torch.linalg.eigh) is not differentiable there.
    lam = torch.tensor([1.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    E = torch.randn(4, 4, generator=g, dtype=torch.float64)
    E = E + E.mT
    A4 = ((Q * lam) @ Q.mT).requires_grad_()
    (matbp.sym_fn(A4, "log") * E).sum().backward()
    d = lam[:, None] - lam[None, :]
    F1 = torch.where(d == 0, 1 / lam[:, None].expand(4, 4), (lam.log()[:, None] - lam.log()[None, :]) / torch.where(d == 0, 1, d))
    Et = Q.mT @ E @ Q
    exact = (F1 * Et * Et).sum()
    got = (A4.grad * E).sum()
    err = abs(got - exact).item() / abs(exact).item()
    ok &= check("sym_fn: gradient exact at a triple eigenvalue", err < 1e-12, f"rel err {err:.1e}")
    compositions = []
    for name, eig in [("matbp.sym_eig", matbp.sym_eig), ("torch.linalg.eigh", torch.linalg.eigh)]:
        A5 = A4.detach().clone().requires_grad_()
        Lt, Vt = eig(A5)
        (((Vt * Lt.log().unsqueeze(-2)) @ Vt.mT) * E).sum().backward()
        compositions.append(f"{name} + log gives {(A5.grad * E).sum().item():.6g}")
    print(f"         (exact {exact.item():.6g}; through eigenvectors: {'; '.join(compositions)})")

    Z = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.arange(1.0, 4.0, dtype=torch.float64)

    def svd_fn(Z):
        U, S, V = matbp.svd(Z)
        return S, (U * w) @ U.mT, (V * w) @ V.mT

    ok &= check("svd: float64 gradcheck (m ≠ n)", torch.autograd.gradcheck(svd_fn, (Z,)), "")
    Asym = torch.randn(2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    ok &= check(
        "sym_eig: float64 gradcheck",
        torch.autograd.gradcheck(lambda A: (lambda L, V: (L, (V * torch.arange(5.0, dtype=A.dtype)) @ V.mT))(*matbp.sym_eig(A + A.mT)), (Asym,)),
        "",
    )
    try:
        matbp.sym_eig(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
        ok &= check("bad input: NaN raises a named error", False, "no error")
    except RuntimeError as e:
        ok &= check("bad input: NaN raises a named error", "matbp.sym_eig" in str(e), str(e).splitlines()[0][:60])
    return ok


def o2p_and_projector_check():
    g = torch.Generator().manual_seed(1)
    ok = True
    # AlexNet conv5-like features, 13·13 = 169 positions × 256 channels:
    # XᵀX + eps I has d - m = 87 eigenvalues exactly eps.
    B, m, d = 20, 169, 256
    X = torch.randn(B, m, d, generator=g, dtype=torch.float64) / m ** 0.5
    C = matbp.o2p_log(X)
    L, V = torch.linalg.eigh(X[0].mT @ X[0] + 1e-3 * torch.eye(d, dtype=torch.float64))
    err = rel(C[0], (V * L.log()) @ V.mT)
    ok &= check(f"o2p_log: log(XᵀX + eps I) (m={m} < d={d})", err < 1e-10, f"rel err {err:.1e}")
    G = torch.randn(B, d, d, generator=g, dtype=torch.float64)
    Xa = X.clone().requires_grad_()
    (matbp.o2p_log(Xa) * G).sum().backward()
    Xb = X.clone().requires_grad_()
    Lb, Vb = torch.linalg.eigh(Xb.mT @ Xb + 1e-3 * torch.eye(d, dtype=torch.float64))
    (((Vb * Lb.log().unsqueeze(-2)) @ Vb.mT) * G).sum().backward()
    bad = int((~torch.isfinite(Xb.grad)).flatten(1).any(1).sum())
    ok &= check("o2p_log: gradient finite for every matrix", bool(torch.isfinite(Xa.grad).all()),
                f"(torch.linalg.eigh + autograd: NaN in {bad}/{B})")
    Y = torch.randn(4, 30, 3, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(Y)
    err = rel(matbp.projector(Y @ Y.mT), Q @ Q.mT)
    ok &= check("projector: A A⁺ of a rank-3 PSD matrix", err < 1e-12, f"rel err {err:.1e}")
    return ok


def ncut_check():
    g = torch.Generator().manual_seed(2)
    ok = True
    m, d, k = 154401, 20, 12  # one full-resolution BSDS image, 481 x 321 pixels
    X = torch.rand(m, d, generator=g, dtype=torch.float64).requires_grad_()
    labels = torch.randint(0, k, (m,), generator=g)
    (matbp.ncut_j1(X, labels) + matbp.ncut_j2(X, labels)).backward()  # warm-up
    X.grad = None
    t0 = time.perf_counter()
    J1 = matbp.ncut_j1(X, labels)
    J2, rank = matbp.ncut_j2(X, labels, return_rank=True)
    (J1 + J2).backward()
    dt = time.perf_counter() - t0
    ok &= check("ncut: J1 + J2 fwd+bwd, 481x321 pixels, d=20, k=12", bool(torch.isfinite(X.grad).all()),
                f"{dt * 1e3:.0f} ms, rank(W) = {int(rank)}")
    # Against the paper's dense m×m J2 on a small problem.
    Xs = torch.rand(60, 5, generator=g, dtype=torch.float64)
    ls = torch.randint(0, 4, (60,), generator=g)
    Lw, Vw = torch.linalg.eigh(Xs @ Xs.T)
    Vr = Vw[:, Lw > 1e-10 * Lw.max()]
    E = (ls[:, None] == torch.unique(ls)[None, :]).double()
    dense = 0.5 * ((Vr @ Vr.T - E @ torch.linalg.inv(E.T @ E) @ E.T) ** 2).sum()
    err = abs(matbp.ncut_j2(Xs, ls) - dense).item() / dense.item()
    ok &= check("ncut: J2 low-rank = dense m×m formula", err < 1e-10, f"rel err {err:.1e}")

    # Spectral segmentation of a synthetic image whose regions differ in
    # feature statistics, scored by the BSDS covering.
    H = W = 48
    gt = torch.zeros(H, W, dtype=torch.int64)
    gt[6:22, 6:36] = 1
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    gt[(yy - 34) ** 2 + (xx - 14) ** 2 <= 80] = 2
    gt[26:44, 28:44] = 3
    means = torch.full((4, 8), 0.05, dtype=torch.float64)
    for r in range(4):
        means[r, 2 * r : 2 * r + 2] = 1.0
    feats = means[gt.flatten()] + 0.1 * torch.rand(H * W, 8, generator=g, dtype=torch.float64)
    segs = matbp.segmentation.segment(feats, (H, W), ks=(2, 3, 4, 5, 6))
    cov = matbp.metrics.image_covering(segs, [gt])
    ok &= check("segmentation.segment + covering on a synthetic 48x48 image", cov["best"] > 0.9,
                f"best covering {cov['best']:.3f} over k = 2..6")
    return ok


def deepo2p_training():
    """The paper's Table 1 comparison in miniature: the first-order baseline
    and DeepO2P trained from scratch on the built-in second-order textures
    (full run: python -m matbp.experiments table1)."""
    from matbp import experiments

    out = os.path.join(DEMO_OUT, "table1")
    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time, not an older one's results
    table = experiments.main(["table1", "--out", out, "--only", "baseline", "deepo2p", "--seeds", "1",
                              "--epochs", "4", "--train-samples", "1000", "--no-progress"])
    rows = {r["config"]: r for r in table["rows"]}
    base, deep = rows["baseline"], rows["deepo2p"]
    ok = check("DeepO2P (matbp): every training step finite", deep["nonfinite_steps"] == 0,
               f"{deep['nonfinite_steps']} skipped")
    ok &= check("DeepO2P learns second-order textures faster", deep["val_error_mean"] < base["val_error_mean"],
                f"val error {100 * deep['val_error_mean']:.1f}% vs baseline {100 * base['val_error_mean']:.1f}%")
    return ok


DEMO_OUT = os.path.join(os.path.dirname(HERE), "build", "demo")


def deepncuts_training():
    """The paper's Table 2 in shape: normalized cuts on the backbone's own
    features against DeepNCuts trained with J2 at full image resolution, on
    held-out built-in mosaics (full run: python -m matbp.experiments table2)."""
    from matbp import experiments

    out = os.path.join(DEMO_OUT, "table2")
    shutil.rmtree(out, ignore_errors=True)
    table = experiments.main(["table2", "--out", out, "--no-progress"])
    base, deep = table["rows"]
    ok = check("DeepNCuts: every training step finite", table["training"]["nonfinite_steps"] == 0,
               f"final rank of W {table['training']['final_rank']:.0f}")
    gain = deep["best_covering_ois"] - base["best_covering_ois"]
    ok &= check("DeepNCuts beats NCuts by ≥ 0.10 best covering (OIS)", gain >= 0.10,
                f"{deep['best_covering_ois']:.3f} vs {base['best_covering_ois']:.3f}")
    return ok


def main():
    heading("matbp")
    print(f"  matbp {matbp.__version__}, torch {torch.__version__}, Python {platform.python_version()}")
    print(f"  CPU threads: {torch.get_num_threads()}, CUDA available: {torch.cuda.is_available()}")
    heading("self-check")
    t0 = time.perf_counter()
    ok = self_check()
    print(f"  ({time.perf_counter() - t0:.1f} s)")
    heading("second-order pooling and projectors")
    ok &= o2p_and_projector_check()
    heading("normalized cuts")
    ok &= ncut_check()
    heading("DeepO2P trained end to end (4 epochs; full Table 1: python -m matbp.experiments table1)")
    ok &= deepo2p_training()
    heading("DeepNCuts trained end to end (full Table 2: python -m matbp.experiments table2)")
    ok &= deepncuts_training()
    heading("benchmark: sym_eig vs torch.linalg.eigh (small sizes; full run: make bench)")
    import bench_sym_eig

    rows = bench_sym_eig.run(bench_sym_eig.QUICK_SIZES, batch=bench_sym_eig.QUICK_BATCH, dtypes=["float64"], budget_s=bench_sym_eig.QUICK_BUDGET_S)
    bench_sym_eig.print_rows(rows)
    heading("benchmark: o2p_log vs PyTorch's composition and the paper's approach (B / 10)")
    import bench_o2p_log

    rows = bench_o2p_log.run(bench_o2p_log.QUICK_SHAPES, dtypes=["float64"], batch_scale=bench_o2p_log.QUICK_BATCH_SCALE, budget_s=bench_o2p_log.QUICK_BUDGET_S)
    bench_o2p_log.print_rows(rows)
    if not ok:
        print(f"\nself-check FAILED (tables, figures, runs: {DEMO_OUT})")
        sys.exit(1)
    print("\nall self-checks passed")
    print(f"tables, figures, runs (logs, checkpoints, curves): {DEMO_OUT}")


if __name__ == "__main__":
    main()
