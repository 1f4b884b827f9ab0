"""Normalized-cuts inference (matbp.segmentation), covering (matbp.metrics) and the
BSDS300 readers (matbp.data)."""

import math
import warnings

import numpy as np
import pytest
import torch

from matbp import data, metrics, segmentation

# --------------------------------------------------------------------------
# covering
# --------------------------------------------------------------------------


def test_covering_known_example():
    seg = [[0, 0, 1], [0, 1, 1]]
    gt = [[0, 0, 0], [1, 1, 1]]
    assert metrics.covering(np.array(seg), np.array(gt)) == pytest.approx(0.5)
    assert metrics.covering(torch.tensor(seg), torch.tensor(gt)) == pytest.approx(0.5)
    # regions of S by G: S0 ∩ G0 = 2 of union 4, S0 ∩ G1 = 1 of union 5 -> same 0.5
    assert metrics.covering(np.array(gt), np.array(seg)) == pytest.approx(0.5)


def test_covering_identical_and_relabelled():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, size=(7, 9))
    assert metrics.covering(gt, gt) == pytest.approx(1.0)
    # any injective relabelling (non-contiguous, negative ids) is the same partition
    perm = np.array([-7, 100, 3, -1, 42])
    assert metrics.covering(perm[gt], gt) == pytest.approx(1.0)
    assert metrics.covering(gt, perm[gt]) == pytest.approx(1.0)
    assert metrics.covering(torch.from_numpy(perm[gt]), gt) == pytest.approx(1.0)


def test_covering_single_region_and_singletons():
    H, W = 4, 5
    n = H * W
    one = np.zeros((H, W), dtype=np.int64)
    singletons = np.arange(n).reshape(H, W)
    assert metrics.covering(one, one) == pytest.approx(1.0)
    # each singleton has IoU 1/N with the single ground-truth region
    assert metrics.covering(singletons, one) == pytest.approx(1.0 / n)
    # every singleton ground-truth region is matched exactly
    assert metrics.covering(one * 0 + singletons, singletons) == pytest.approx(1.0)
    # one region covering a ground truth with region sizes n_i: Σ (n_i/N)²
    gt = np.zeros((H, W), dtype=np.int64)
    gt[:, 2:] = 1
    gt[3, :] = 2
    sizes = np.bincount(gt.ravel())
    assert metrics.covering(one, gt) == pytest.approx(float(((sizes / n) ** 2).sum()))
    # all singletons covering a ground truth: Σ_R |R|·(1/|R|) / N = #regions / N
    assert metrics.covering(singletons, gt) == pytest.approx(3 / n)


def test_covering_bad_input():
    with pytest.raises(ValueError, match="matbp.metrics.covering"):
        metrics.covering(np.zeros((2, 3), dtype=int), np.zeros((3, 2), dtype=int))
    with pytest.raises(ValueError, match="matbp.metrics.covering"):
        metrics.covering(np.zeros((2, 3)), np.zeros((2, 3), dtype=int))  # float labels
    with pytest.raises(ValueError, match="matbp.metrics.covering"):
        metrics.covering(np.zeros((0, 3), dtype=int), np.zeros((0, 3), dtype=int))


def test_image_and_dataset_covering():
    gt_a = np.array([[0, 0, 0], [1, 1, 1]])
    gt_b = np.array([[0, 0, 1], [0, 1, 1]])
    one = np.zeros((2, 3), dtype=int)
    # candidates: [one region, gt_a, gt_b]
    cands = [one, gt_a, gt_b]
    r = metrics.image_covering(cands, [gt_a, gt_b])
    # covering(one, gt) = 2·(1/2)² = 0.5 for both; covering(gt_a, gt_b) = 0.5
    np.testing.assert_allclose(r["table"], [[0.5, 0.5], [1.0, 0.5], [0.5, 1.0]])
    assert r["average"] == pytest.approx(0.75)
    assert r["average_index"] == 1 and "index" not in r  # first on ties
    assert r["best"] == pytest.approx(1.0)
    assert (r["best_index"], r["best_ground_truth"]) == (1, 0)

    r2 = metrics.image_covering(cands, [gt_b])
    np.testing.assert_allclose(r2["table"], [[0.5], [0.5], [1.0]])
    assert r2["average"] == pytest.approx(1.0) and r2["average_index"] == 2
    assert r2["best"] == pytest.approx(1.0) and r2["best_index"] == 2

    ds = metrics.dataset_covering([r, r2])
    assert ds["n_images"] == 2
    assert ds["average"] == pytest.approx((0.75 + 1.0) / 2)
    assert ds["best"] == pytest.approx(1.0)
    # ODS: one candidate index for both images
    #   per-candidate mean of the per-image mean coverings: [0.5, 0.625, 0.875]
    #   per-candidate mean of the per-image max coverings:  [0.5, 0.75, 1.0]
    assert ds["ods_average"] == pytest.approx(0.875) and ds["ods_average_index"] == 2
    assert ds["ods_best"] == pytest.approx(1.0) and ds["ods_best_index"] == 2

    # inconsistent candidate counts: no ODS
    r3 = metrics.image_covering([one], [gt_a])
    ds3 = metrics.dataset_covering([r, r3])
    assert ds3["ods_average"] is None and ds3["ods_best_index"] is None
    assert ds3["average"] == pytest.approx((0.75 + 0.5) / 2)

    with pytest.raises(ValueError, match="matbp.metrics.image_covering"):
        metrics.image_covering([], [gt_a])
    with pytest.raises(ValueError, match="matbp.metrics.image_covering"):
        metrics.image_covering([one], [])
    with pytest.raises(ValueError, match="matbp.metrics.dataset_covering"):
        metrics.dataset_covering([])


# --------------------------------------------------------------------------
# BSDS .seg files and images
# --------------------------------------------------------------------------

HAND_SEG = """format ascii cr
date Thu Feb 14 11:11:42 2002
image 100075
user 1130
width 5
height 3
segments 3
gray 0
invert 0
flipflop 0
data
0 0 0 2
1 0 3 4
2 2 0 4
0 1 0 0
1 1 1 4
"""

HAND_LABELS = np.array([[0, 0, 0, 1, 1], [0, 1, 1, 1, 1], [2, 2, 2, 2, 2]])


def _write(tmp_path, text, name="x.seg"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_read_hand_written_seg(tmp_path):
    p = _write(tmp_path, HAND_SEG)
    lab = data.read_bsds_seg(p)
    assert lab.dtype == np.int64 and lab.shape == (3, 5)
    np.testing.assert_array_equal(lab, HAND_LABELS)
    lab2, header = data.read_bsds_seg(str(p), return_header=True)
    np.testing.assert_array_equal(lab2, HAND_LABELS)
    assert header["width"] == 5 and header["height"] == 3 and header["segments"] == 3
    assert header["image"] == 100075 and header["user"] == 1130 and header["flipflop"] == 0
    assert header["format"] == "ascii cr"


def test_read_seg_comments_and_flipflop(tmp_path):
    text = "# a comment\n" + HAND_SEG.replace("flipflop 0", "flipflop 1  # presented rotated")
    p = _write(tmp_path, text)
    np.testing.assert_array_equal(data.read_bsds_seg(p), HAND_LABELS[::-1, ::-1])
    np.testing.assert_array_equal(data.read_bsds_seg(p, honour_flipflop=False), HAND_LABELS)


def test_seg_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 6, size=(13, 17))
    lab[:, :4] = 2  # some long runs
    p = tmp_path / "rt.seg"
    data.write_bsds_seg(p, lab, image_id=42, user_id=7, date="today")
    back, header = data.read_bsds_seg(p, return_header=True)
    np.testing.assert_array_equal(back, lab)
    assert header["image"] == 42 and header["user"] == 7 and header["segments"] == 6
    # non-contiguous labels (torch input) come back as the same partition
    odd = torch.from_numpy(lab * 10 - 3)
    data.write_bsds_seg(p, odd)
    back = data.read_bsds_seg(p)
    assert metrics.covering(back, odd) == pytest.approx(1.0)
    assert back.max() == 5 and back.min() == 0


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("width 5\n", ""), "line 10: the header lacks the required 'width'"),
        (lambda t: t.replace("height 3\n", ""), "lacks the required 'height'"),
        (lambda t: t.replace("data\n", ""), "without a 'data' line"),
        (lambda t: t.replace("1 0 3 4", "1 0 3 5"), r"line 13: columns 3..5"),
        (lambda t: t.replace("2 2 0 4", "2 3 0 4"), r"line 14: row 3 outside"),
        (lambda t: t.replace("2 2 0 4", "3 2 0 4"), r"line 14: segment id 3 outside \[0, 3\)"),
        (lambda t: t.replace("1 1 1 4", "1 1 2 4"), r"1 of 15 pixels are not covered .*row 1, column 1"),
        (lambda t: t.replace("1 1 1 4", "1 1 0 4"), r"line 16: pixel \(row 1, column 0\) is named twice"),
        (lambda t: t.replace("1 1 1 4", "1 1 x 4"), "line 16: expected 4 integers"),
        (lambda t: t.replace("width 5", "width five"), "line 5: width must be an integer"),
        (lambda t: t.replace("ascii cr", "binary cr"), "line 1: unsupported format"),
    ],
)
def test_read_seg_errors(tmp_path, edit, message):
    p = _write(tmp_path, edit(HAND_SEG))
    with pytest.raises(ValueError, match="matbp.data.read_bsds_seg") as info:
        data.read_bsds_seg(p)
    assert info.match(message)


def test_read_image_and_load(tmp_path):
    from PIL import Image

    rgb = np.zeros((3, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    rgb[1, 2] = (0, 51, 102)
    Image.fromarray(rgb).save(tmp_path / "im.png")
    img = data.read_image(tmp_path / "im.png")
    assert img.dtype == torch.float32 and img.shape == (3, 5, 3)
    torch.testing.assert_close(img, torch.from_numpy(rgb.astype(np.float32) / 255))
    # grayscale is replicated into three channels
    Image.fromarray(rgb[..., 1]).save(tmp_path / "gray.png")
    g = data.read_image(tmp_path / "gray.png")
    assert g.shape == (3, 5, 3) and torch.equal(g[..., 0], g[..., 2])

    p1 = _write(tmp_path, HAND_SEG, "a.seg")
    data.write_bsds_seg(tmp_path / "b.seg", np.zeros((3, 5), dtype=int))
    image, segs = data.load_bsds_image(tmp_path / "im.png", [p1, tmp_path / "b.seg"])
    assert image.shape == (3, 5, 3) and len(segs) == 2
    np.testing.assert_array_equal(segs[0], HAND_LABELS)
    data.write_bsds_seg(tmp_path / "c.seg", np.zeros((5, 3), dtype=int))
    with pytest.raises(ValueError, match="matbp.data.load_bsds_image"):
        data.load_bsds_image(tmp_path / "im.png", tmp_path / "c.seg")


# --------------------------------------------------------------------------
# normalized-cuts inference
# --------------------------------------------------------------------------


def _dense_M(X, Lam):
    W = X @ Lam @ X.T
    d = W.sum(1)
    return W / torch.sqrt(d[:, None] * d[None, :])


def test_leading_eigenvectors_match_dense():
    g = torch.Generator().manual_seed(0)
    m, d, k = 40, 6, 3
    X = torch.rand(m, d, generator=g, dtype=torch.float64)
    A = torch.rand(d, d, generator=g, dtype=torch.float64)
    for Lam in (None, A @ A.T + 0.1 * torch.eye(d, dtype=torch.float64)):
        mu, V = segmentation.leading_eigenvectors(X, k, Lambda=Lam)
        assert mu.dtype == torch.float64 and V.shape == (m, k) and mu.shape == (k,)
        M = _dense_M(X, torch.eye(d, dtype=torch.float64) if Lam is None else Lam)
        ev, U = torch.linalg.eigh(M)
        ev, U = ev.flip(0)[:k], U.flip(1)[:, :k]
        torch.testing.assert_close(mu, ev, rtol=1e-10, atol=1e-12)
        assert mu[0].item() == pytest.approx(1.0, abs=1e-12)  # nonnegative W
        torch.testing.assert_close(V.T @ V, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(M @ V, V * mu, rtol=0, atol=1e-10)
        torch.testing.assert_close(V @ V.T, U @ U.T, rtol=0, atol=1e-8)  # same subspace
    # k is clamped to the rank bound min(m, d)
    mu, V = segmentation.leading_eigenvectors(X, 50)
    assert mu.shape == (d,) and V.shape == (m, d)


def test_kmeans_deterministic_and_correct():
    g = torch.Generator().manual_seed(3)
    centers = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    truth = torch.arange(3).repeat_interleave(30)
    pts = centers[truth] + 0.3 * torch.randn(90, 2, generator=g, dtype=torch.float64)
    l1, c1 = segmentation.kmeans(pts, 3, seed=5)
    l2, c2 = segmentation.kmeans(pts, 3, seed=5)
    assert torch.equal(l1, l2) and torch.equal(c1, c2)
    assert l1.dtype == torch.int64 and l1.shape == (90,) and c1.shape == (3, 2)
    assert metrics.covering(l1, truth) == pytest.approx(1.0)
    # centres are the cluster means
    for j in range(3):
        torch.testing.assert_close(c1[j], pts[l1 == j].mean(0))
    # more clusters than distinct points: no crash, clamped to n
    labels, C = segmentation.kmeans(torch.zeros(4, 2), 6, seed=0)
    assert labels.shape == (4,) and C.shape == (4, 2)
    with pytest.raises(ValueError, match="matbp.segmentation.kmeans"):
        segmentation.kmeans(torch.tensor([[float("nan"), 0.0]]), 1)


def test_kmeans_contract():
    """Determinism per seed, best-of-n_init, quiet empty clusters, labels in [0, k)."""
    g = torch.Generator().manual_seed(4)
    pts = torch.randn(200, 3, generator=g, dtype=torch.float64)  # no clear clusters: restarts matter
    runs = {seed: segmentation.kmeans(pts, 5, seed=seed) for seed in (0, 1, 2)}
    for seed, (labels, C) in runs.items():
        again = segmentation.kmeans(pts.numpy(), 5, seed=seed)  # arrays are accepted too
        assert torch.equal(labels, again[0]) and torch.equal(C, again[1])
        assert labels.dtype == torch.int64 and C.dtype == torch.float64 and C.shape == (5, 3)
        assert int(labels.min()) >= 0 and int(labels.max()) < 5

    def inertia(labels, C):
        return float(((pts - C[labels]) ** 2).sum())

    # the first of n_init restarts is the n_init=1 run, so the best is no worse
    one = inertia(*segmentation.kmeans(pts, 5, seed=0))
    best = inertia(*segmentation.kmeans(pts, 5, seed=0, n_init=4))
    assert best <= one
    # fewer distinct points than clusters: empty clusters, no warning, labels still in range
    dup = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).repeat(10, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels, C = segmentation.kmeans(dup, 5, seed=3, iters=7)
    assert labels.shape == (20,) and C.shape == (5, 2)
    assert int(labels.min()) >= 0 and int(labels.max()) < 5
    assert metrics.covering(labels, (dup[:, 0] > 0.5).long()) == pytest.approx(1.0)
    for bad in ({"iters": 0}, {"n_init": 0}):
        with pytest.raises(ValueError, match="matbp.segmentation.kmeans: iters and n_init"):
            segmentation.kmeans(pts, 2, **bad)


def test_old_ncut_names_are_deprecated_aliases():
    import matbp

    for name in ("segment", "leading_eigenvectors", "kmeans"):
        with pytest.warns(DeprecationWarning, match=f"matbp.ncut.{name} moved to matbp.segmentation.{name}"):
            old = getattr(matbp.ncut, name)
        assert old is getattr(segmentation, name)
    with pytest.warns(DeprecationWarning, match="matbp.ncut.kmeans moved to matbp.segmentation.kmeans"):
        from matbp.ncut import kmeans
    assert kmeans is segmentation.kmeans
    with pytest.raises(AttributeError):
        matbp.ncut.normalized_affinity_factor  # deleted, not aliased


def _synthetic_image(H=40, W=40, d=8, seed=0):
    """Background, two rectangles and a disc; features = region mean + noise."""
    gt = np.zeros((H, W), dtype=np.int64)
    gt[5:19, 5:31] = 1
    yy, xx = np.mgrid[0:H, 0:W]
    gt[(yy - 28) ** 2 + (xx - 12) ** 2 <= 64] = 2
    gt[22:37, 24:37] = 3
    g = torch.Generator().manual_seed(seed)
    means = torch.full((4, d), 0.05, dtype=torch.float64)
    for r in range(4):
        means[r, 2 * r : 2 * r + 2] = 1.0
    labels = torch.from_numpy(gt.ravel())
    X = means[labels] + 0.1 * torch.rand(H * W, d, generator=g, dtype=torch.float64)
    return X.to(torch.float32), gt


def test_segment_synthetic_end_to_end():
    H = W = 40
    X, gt = _synthetic_image(H, W)
    segs = segmentation.segment(X, (H, W), ks=(2, 3, 4, 5))
    assert len(segs) == 4
    for s in segs:
        assert isinstance(s, torch.Tensor) and s.dtype == torch.int64 and s.shape == (H, W)
        n = int(s.max()) + 1
        assert s.min() == 0 and torch.equal(torch.unique(s), torch.arange(n))  # contiguous
    res = metrics.image_covering(segs, [gt])
    assert res["best"] > 0.9  # acceptance criterion
    assert res["table"][2, 0] == pytest.approx(1.0)  # k = 4 recovers the 4 regions
    # the clustering itself (no component splitting) finds the 4 regions at k = 4
    (k4,) = segmentation.segment(X, (H, W), ks=[4], split_components=False)
    assert int(k4.max()) == 3 and metrics.covering(k4, gt) > 0.9
    # deterministic given the seed
    again = segmentation.segment(X, (H, W), ks=(2, 3, 4, 5))
    assert all(torch.equal(a, b) for a, b in zip(segs, again))


def test_segment_split_components():
    # two far-apart squares with identical features form one cluster, two segments
    H, W = 12, 12
    gt = np.zeros((H, W), dtype=np.int64)
    gt[1:4, 1:4] = 1
    gt[8:11, 8:11] = 1
    means = torch.tensor([[1.0, 0.05, 0.05], [0.05, 1.0, 0.05]], dtype=torch.float64)
    X = means[torch.from_numpy(gt.ravel())]
    (split,) = segmentation.segment(X, (H, W), ks=[2])
    (joined,) = segmentation.segment(X, (H, W), ks=2, split_components=False)
    assert int(joined.max()) == 1 and int(split.max()) == 2
    assert metrics.covering(joined, gt) == pytest.approx(1.0)
    assert split[0, 0] == 0 and split[2, 2] == 1 and split[9, 9] == 2  # raster order
    assert metrics.covering(split, gt + (np.arange(W) > 5) * (gt == 1)) == pytest.approx(1.0)


def test_segment_bad_input():
    X = torch.rand(30, 4, dtype=torch.float64) + 0.1
    with pytest.raises(ValueError, match="matbp.segmentation.segment.*30"):
        segmentation.segment(X, (5, 5))
    with pytest.raises(ValueError, match="matbp.segmentation.segment"):
        segmentation.segment(X, (30,))
    Xz = X.clone()
    Xz[7] = 0.0
    with pytest.raises(ValueError, match=r"matbp.segmentation.segment.*degree.*pixel 7"):
        segmentation.segment(Xz, (5, 6))
    Xn = X.clone()
    Xn[3, 1] = float("nan")
    with pytest.raises(ValueError, match="matbp.segmentation.segment.*non-finite"):
        segmentation.segment(Xn, (5, 6))
    Xi = X.clone()
    Xi[0, 0] = math.inf
    with pytest.raises(ValueError, match="matbp.segmentation.segment.*non-finite"):
        segmentation.segment(Xi, (5, 6))
    with pytest.raises(ValueError, match="matbp.segmentation.segment.*Lambda"):
        segmentation.segment(X, (5, 6), Lambda=torch.eye(3))
    with pytest.raises(ValueError, match="matbp.segmentation.segment.*symmetric"):
        segmentation.segment(X, (5, 6), Lambda=torch.triu(torch.ones(4, 4)))
    with pytest.raises(ValueError, match="matbp.segmentation.segment.*k must be >= 1"):
        segmentation.segment(X, (5, 6), ks=(0, 2))
    with pytest.raises(ValueError, match="matbp.segmentation.segment"):
        segmentation.segment(X.reshape(-1), (5, 24))
    # a negative Λ gives negative degrees
    with pytest.raises(ValueError, match="matbp.segmentation.segment.*degree"):
        segmentation.segment(X, (5, 6), Lambda=-torch.eye(4))
    with pytest.raises(ValueError, match="matbp.segmentation.leading_eigenvectors"):
        segmentation.leading_eigenvectors(Xz, 2)
