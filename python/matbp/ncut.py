"""Normalized-cuts inference from low-rank affinities (paper §5–§6.2).

The affinity between the ``m`` pixels of an image is the low-rank matrix
``W = X Λ Xᵀ`` of the per-pixel features ``X`` (m × d, d ≪ m, Λ symmetric
d × d, the identity by default). Segmenting an image (paper §6.2, design §4
"Inference") means

1. forming the normalized affinity ``M = D^{-1/2} W D^{-1/2}`` with the
   degrees ``D = diag(W 1)``,
2. taking its leading eigenvectors (the relaxed normalized-cuts solution),
3. rounding them to a partition: row-normalising the eigenvectors and
   clustering the rows with k-means (the spectral clustering of Ng, Jordan
   and Weiss; a simple form of the rounding of Bach and Jordan), for several
   numbers of clusters k (the paper makes 8 segmentations per image),
4. splitting every cluster into its 4-connected components, each of which
   becomes a segment.

Everything is computed in float64 and *no m × m matrix is ever formed*: the
degrees are ``D = X (Λ (Xᵀ 1))`` and the eigenvectors come from a thin QR
factorisation of ``Y = D^{-1/2} X`` plus a d × d (or m × m when m < d)
eigenproblem, so the cost is O(m d² + d³) for the spectrum and O(m k² · iterations)
for k-means.

This module is pure Python (torch, numpy and scipy); it needs no compiled
operator. The functions run on the device of ``features``; the label maps
they return are CPU tensors.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .objectives import check_lambda

__all__ = ["segment", "leading_eigenvectors", "kmeans", "normalized_affinity_factor"]

_DEFAULT_KS = (2, 3, 4, 5, 6, 7, 8, 9)


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------


def _as_features(features, name: str) -> Tensor:
    if not isinstance(features, Tensor):
        try:
            features = torch.as_tensor(np.asarray(features))
        except Exception as exc:  # pragma: no cover - defensive
            raise ValueError(f"{name}: features must be a 2-D tensor, got {type(features)!r}") from exc
    if features.dim() != 2:
        raise ValueError(
            f"{name}: features must be a 2-D tensor (m pixels, d features), "
            f"got shape {tuple(features.shape)}"
        )
    if features.is_complex():
        raise ValueError(f"{name}: features must be real, got dtype {features.dtype}")
    m, d = features.shape
    if m == 0 or d == 0:
        raise ValueError(f"{name}: features must be non-empty, got shape {tuple(features.shape)}")
    X = features.detach().to(torch.float64)
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name}: features contain non-finite values (NaN or Inf)")
    return X


def _as_lambda(Lambda, X: Tensor, name: str) -> Optional[Tensor]:
    """Λ as a float64 symmetric (d, d) tensor on X's device; None means Λ = I."""
    if Lambda is None:
        return None
    L = torch.as_tensor(Lambda).detach()
    if L.is_complex():
        raise ValueError(f"{name}: Lambda must be real, got dtype {L.dtype}")
    # Keep float32 as given so that the symmetry tolerance is float32's, like the objectives'.
    L = L.to(device=X.device, dtype=L.dtype if L.dtype == torch.float32 else torch.float64)
    check_lambda(L, X, name, x_name="features")
    L = L.to(torch.float64)
    return 0.5 * (L + L.mT)


def _apply_lambda(L: Optional[Tensor], v: Tensor) -> Tensor:
    return v if L is None else L @ v


def _degrees(X: Tensor, L: Optional[Tensor], name: str) -> Tensor:
    """D = W 1 = X (Λ (Xᵀ 1)) without forming W; checks D > 0."""
    ones = torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device)
    deg = (X @ _apply_lambda(L, X.mT @ ones)).squeeze(1)
    bad = ~(torch.isfinite(deg) & (deg > 0))
    if bool(bad.any()):
        n_bad = int(bad.sum())
        first = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name}: the affinity W = X Λ Xᵀ must have positive degrees D = W 1, but "
            f"{n_bad} of {X.shape[0]} pixels have degree <= 0 or non-finite (first: pixel "
            f"{first}, degree {float(deg[first])!r}); use nonnegative features with no "
            "all-zero rows (and a Λ with nonnegative entries)"
        )
    return deg


def normalized_affinity_factor(features, Lambda=None) -> Tuple[Tensor, Tensor]:
    """Factor of the normalized affinity: returns ``(Y, D)`` in float64.

    With ``W = X Λ Xᵀ`` and ``D = W 1`` (the degrees, shape (m,)),
    ``Y = D^{-1/2} X`` so that ``M = D^{-1/2} W D^{-1/2} = Y Λ Yᵀ``.
    Raises ValueError (naming ``matbp.ncut.normalized_affinity_factor``) for
    non-finite features, a bad Λ or a non-positive degree.
    """
    name = "matbp.ncut.normalized_affinity_factor"
    X = _as_features(features, name)
    L = _as_lambda(Lambda, X, name)
    deg = _degrees(X, L, name)
    return X * deg.rsqrt().unsqueeze(1), deg


def _spectrum(X: Tensor, L: Optional[Tensor], name: str) -> Tuple[Tensor, Tensor]:
    """All r = min(m, d) eigenpairs of M in range(Y), μ descending."""
    deg = _degrees(X, L, name)
    Y = X * deg.rsqrt().unsqueeze(1)
    Q, R = torch.linalg.qr(Y, mode="reduced")  # Y = Q R, Q (m, r), R (r, d)
    S = R @ _apply_lambda(L, R.mT)  # R Λ Rᵀ, (r, r)
    S = 0.5 * (S + S.mT)
    mu, Z = torch.linalg.eigh(S)  # ascending
    mu = mu.flip(0)
    Z = Z.flip(1)
    return mu, Q @ Z


def leading_eigenvectors(features, k: int, Lambda=None) -> Tuple[Tensor, Tensor]:
    """Leading eigenpairs of the normalized affinity ``M = D^{-1/2} W D^{-1/2}``.

    Args:
        features: (m, d) real tensor X, the per-pixel features; W = X Λ Xᵀ.
        k: number of eigenpairs wanted (≥ 1). M has rank r ≤ min(m, d), and
            only eigenvectors in range(D^{-1/2} X) are computed, so k is
            clamped to min(m, d).
        Lambda: symmetric (d, d) tensor Λ; None means the identity.

    Returns:
        ``(values, vectors)``: float64 tensors of shape (k,) and (m, k), the
        k largest eigenvalues μ of M in descending order and orthonormal
        eigenvectors (columns) of M for them. Signs (and the basis within a
        repeated eigenvalue) are arbitrary.

    Computation (never forming an m × m matrix): D = X (Λ (Xᵀ 1)),
    Y = D^{-1/2} X, thin QR Y = Q R, eigendecomposition
    R Λ Rᵀ = Z diag(μ) Zᵀ; then M = (Q Z) diag(μ) (Q Z)ᵀ, so the columns of
    Q Z sorted by μ descending are the eigenvectors. With nonnegative W the
    largest eigenvalue is 1, with eigenvector ∝ D^{1/2} 1. Cost O(m d² + d³).

    Raises:
        ValueError (naming ``matbp.ncut.leading_eigenvectors``) for a
        non-2-D or non-finite ``features``, a bad Λ, k < 1, or a pixel whose
        degree is not positive.
    """
    name = "matbp.ncut.leading_eigenvectors"
    X = _as_features(features, name)
    k = _as_k(k, name)
    L = _as_lambda(Lambda, X, name)
    mu, V = _spectrum(X, L, name)
    k = min(k, mu.shape[0])
    return mu[:k], V[:, :k]


def _as_k(k, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        if isinstance(k, Tensor) and k.numel() == 1 and not k.is_floating_point():
            k = int(k)
        else:
            raise ValueError(f"{name}: k must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"{name}: k must be >= 1, got {k}")
    return k


# --------------------------------------------------------------------------
# k-means
# --------------------------------------------------------------------------


def _kmeans_pp(X: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding (Arthur and Vassilvitskii 2007).

    The first centre is a uniformly drawn point; each further centre is the
    best (lowest resulting sum of squared distances) of ``2 + ⌊ln k⌋``
    candidates drawn with probability proportional to the squared distance
    to the nearest centre chosen so far (D² sampling).
    """
    n = X.shape[0]
    trials = 2 + int(math.log(k)) if k > 1 else 1
    first = int(torch.randint(n, (1,), generator=gen))
    idx = [first]
    d2 = ((X - X[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(d2.sum())
        if not total > 0.0:
            # every point coincides with a centre: any point will do
            cand = torch.randint(n, (1,), generator=gen)
        else:
            probs = (d2 / total).cpu()
            cand = torch.multinomial(probs, trials, replacement=True, generator=gen)
        cand = cand.to(X.device)
        dc = torch.minimum(d2.unsqueeze(0), ((X.unsqueeze(0) - X[cand].unsqueeze(1)) ** 2).sum(2))
        best = int(dc.sum(1).argmin())  # first on ties
        idx.append(int(cand[best]))
        d2 = dc[best]
    return X[torch.tensor(idx, device=X.device)].clone()


def _assign(X: Tensor, xx: Tensor, C: Tensor) -> Tuple[Tensor, Tensor]:
    """Nearest centre of every row of X, and the squared distance to it.

    Uses ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖² with ``xx`` = ‖x‖² precomputed; the
    argmin needs only the last two terms.
    """
    part = (C * C).sum(1).unsqueeze(0) - 2.0 * (X @ C.mT)
    pmin, labels = part.min(1)
    return labels, (pmin + xx).clamp_min_(0.0)


def _lloyd(X: Tensor, C: Tensor, iters: int) -> Tuple[Tensor, Tensor, float, int]:
    n, p = X.shape
    k = C.shape[0]
    xx = (X * X).sum(1)
    prev = None
    it = 0
    labels, dmin = _assign(X, xx, C)
    for it in range(1, iters + 1):
        if prev is not None and torch.equal(labels, prev):
            break
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros(k, p, dtype=X.dtype, device=X.device).index_add_(0, labels, X)
        C = sums / counts.clamp_min(1).unsqueeze(1).to(X.dtype)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            # re-seed every empty cluster at the point farthest from its centre
            far = dmin.clone()
            for j in empty:
                i = int(far.argmax())
                C[j] = X[i]
                far[i] = -1.0
        prev = labels
        labels, dmin = _assign(X, xx, C)
    return labels, C, float(dmin.sum()), it


def kmeans(points, k: int, seed: int = 0, iters: int = 100, n_init: int = 1) -> Tuple[Tensor, Tensor]:
    """k-means clustering of the rows of ``points`` (k-means++ then Lloyd).

    Args:
        points: (n, p) real tensor (or array) of n points in R^p.
        k: number of clusters (≥ 1); clamped to n.
        seed: seed of the private ``torch.Generator`` used for the (greedy)
            k-means++ initialisation, so the result is a deterministic function of
            (points, k, seed, iters, n_init) on a given device.
        iters: maximum number of Lloyd iterations (assignment + centre update);
            stops earlier when the assignment no longer changes.
        n_init: number of independent k-means++ initialisations (drawn one
            after the other from the same generator); the run with the
            smallest within-cluster sum of squares is returned.

    Returns:
        ``(labels, centers)``: labels (n,) int64 with values in [0, k), each
        point's nearest centre; centers (k, p) float64, the final centres.
        A cluster that becomes empty during the iterations is re-seeded at the
        point farthest from its current centre, so a cluster can only end
        up empty when points coincide (e.g. fewer than k distinct points).

    Computed in float64 on the device of ``points``.
    """
    name = "matbp.ncut.kmeans"
    if not isinstance(points, Tensor):
        points = torch.as_tensor(np.asarray(points))
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"{name}: points must be a non-empty 2-D (n, p) tensor, got shape {tuple(points.shape)}")
    X = points.detach().to(torch.float64)
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name}: points contain non-finite values (NaN or Inf)")
    k = min(_as_k(k, name), X.shape[0])
    iters = int(iters)
    n_init = int(n_init)
    if iters < 1 or n_init < 1:
        raise ValueError(f"{name}: iters and n_init must be >= 1, got {iters} and {n_init}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    best = None
    for _ in range(n_init):
        C0 = _kmeans_pp(X, k, gen)
        labels, C, inertia, _ = _lloyd(X, C0, iters)
        if best is None or inertia < best[2]:
            best = (labels, C, inertia)
    return best[0], best[1]


# --------------------------------------------------------------------------
# label-map utilities
# --------------------------------------------------------------------------


def _relabel_raster(lab: np.ndarray) -> np.ndarray:
    """Contiguous ids 0..S-1 numbered by first appearance in raster order."""
    flat = lab.ravel()
    _, first, inv = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return rank[inv.ravel()].reshape(lab.shape).astype(np.int64)


def _split_components(lab: np.ndarray) -> np.ndarray:
    """Every 4-connected component of every label becomes its own label."""
    from scipy import ndimage

    out = np.empty(lab.shape, dtype=np.int64)
    offset = 0
    for c in np.unique(lab):
        comp, n = ndimage.label(lab == c)  # default structure: 4-connectivity in 2-D
        mask = comp > 0
        out[mask] = comp[mask] - 1 + offset
        offset += n
    return out


def _as_image_shape(image_shape, m: int, name: str) -> Tuple[int, int]:
    try:
        shape = tuple(int(s) for s in image_shape)
    except Exception as exc:
        raise ValueError(f"{name}: image_shape must be a pair (H, W), got {image_shape!r}") from exc
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{name}: image_shape must be a pair of positive ints (H, W), got {image_shape!r}")
    if shape[0] * shape[1] != m:
        raise ValueError(
            f"{name}: image_shape {shape} has {shape[0] * shape[1]} pixels but features have m = {m} rows"
        )
    return shape


# --------------------------------------------------------------------------
# segmentation
# --------------------------------------------------------------------------


def segment(
    features,
    image_shape: Sequence[int],
    ks: Union[int, Iterable[int]] = _DEFAULT_KS,
    Lambda=None,
    seed: int = 0,
    split_components: bool = True,
    *,
    iters: int = 100,
    n_init: int = 1,
) -> List[Tensor]:
    """Normalized-cuts segmentations of one image, one per number of clusters.

    Args:
        features: (m, d) real tensor X of per-pixel features, m = H·W pixels
            in row-major order. The affinity is W = X Λ Xᵀ; its degrees must be
            positive (nonnegative features without all-zero rows and Λ = I
            guarantee it).
        image_shape: (H, W) with H·W = m.
        ks: the numbers of clusters k (an int or an iterable of ints ≥ 1);
            the default (2, …, 9) gives the paper's 8 segmentations.
        Lambda: symmetric (d, d) tensor Λ; None means the identity.
        seed: seed of the k-means++ initialisation (the same for every k).
        split_components: split every cluster into its 4-connected
            components (scipy.ndimage.label), each becoming a segment
            (paper §6.2). When False, segments are the k-means clusters,
            which may be disconnected.
        iters: maximum Lloyd iterations of k-means.
        n_init: k-means++ restarts per k (the lowest-inertia run is kept).

    Returns:
        A list with one (H, W) int64 CPU label map per k, in the order of
        ``ks``. Labels are contiguous, 0..S−1, numbered by first appearance
        in raster order. Without splitting, S ≤ k; with splitting S may
        exceed k.

    Computation, in float64 without forming an m × m matrix: degrees
    D = X (Λ (Xᵀ 1)); M = D^{-1/2} W D^{-1/2} = Y Λ Yᵀ with Y = D^{-1/2} X;
    eigenvectors of M from Y = Q R and R Λ Rᵀ = Z diag(μ) Zᵀ (see
    :func:`leading_eigenvectors`), computed once for the largest k. For each
    k: the top min(k, m, d) eigenvectors, each row normalised to unit length
    (a row of zero norm stays zero), the rows clustered into k clusters by
    :func:`kmeans`, reshaped to (H, W), optionally split into connected
    components, relabelled contiguously.

    Raises:
        ValueError (naming ``matbp.ncut.segment``) when features are not a
        finite 2-D tensor, image_shape does not match m, Λ is not a symmetric
        (d, d) matrix, some k < 1, or some degree is ≤ 0.
    """
    name = "matbp.ncut.segment"
    X = _as_features(features, name)
    m, d = X.shape
    H, Wd = _as_image_shape(image_shape, m, name)
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = [ks]
    ks = [_as_k(k, name) for k in ks]
    L = _as_lambda(Lambda, X, name)
    mu, V = _spectrum(X, L, name)  # validates degrees even when ks is empty
    if not ks:
        return []
    r = mu.shape[0]
    out: List[Tensor] = []
    for k in ks:
        E = V[:, : min(k, r)]
        norms = E.norm(dim=1, keepdim=True)
        E = torch.where(norms > 0, E / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(E))
        labels, _ = kmeans(E, k, seed=seed, iters=iters, n_init=n_init)
        lab = labels.cpu().numpy().reshape(H, Wd)
        if split_components:
            lab = _split_components(lab)
        out.append(torch.from_numpy(_relabel_raster(lab)))
    return out
