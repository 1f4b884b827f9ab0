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
for k-means (:func:`scipy.cluster.vq.kmeans2`).

This module is pure Python (torch, numpy and scipy); it needs no compiled
operator. The spectrum is computed on the device of ``features``, k-means on
the CPU; the label maps are CPU tensors. It was ``matbp.ncut`` (segment,
leading_eigenvectors, kmeans) before :mod:`matbp.ncut` became the module of
the J1/J2 objectives; those old names still work there, with a
DeprecationWarning.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from torch import Tensor

from .ncut import _degrees, check_lambda

__all__ = ["segment", "leading_eigenvectors", "kmeans"]

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


def _positive_degrees(X: Tensor, L: Optional[Tensor], name: str) -> Tensor:
    """D = W 1 = X (Λ (Xᵀ 1)) without forming W (:func:`matbp.ncut._degrees`); checks D > 0."""
    deg = _degrees(X, L)
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


def _spectrum(X: Tensor, L: Optional[Tensor], name: str) -> Tuple[Tensor, Tensor]:
    """All r = min(m, d) eigenpairs of M in range(Y), μ descending."""
    deg = _positive_degrees(X, L, name)
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
        ValueError (naming ``matbp.segmentation.leading_eigenvectors``) for a
        non-2-D or non-finite ``features``, a bad Λ, k < 1, or a pixel whose
        degree is not positive.
    """
    name = "matbp.segmentation.leading_eigenvectors"
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


# scipy >= 1.15 takes the generator as ``rng=``, older scipy as ``seed=``.
_KMEANS2_RNG = "rng" if "rng" in inspect.signature(kmeans2).parameters else "seed"


def _kmeans2_run(P: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One k-means++ initialisation and at most ``iters`` Lloyd iterations of
    :func:`scipy.cluster.vq.kmeans2`, stopping once the assignment is stable.

    kmeans2 always runs all its iterations; it is called one iteration at a
    time (each call resumes from the previous centres, so the result is that
    of one call) to stop early. An empty cluster keeps its previous centre
    (kmeans2's ``missing="warn"``, the warning silenced), and the D² seeding's
    0/0 when every point coincides with a centre picks the first point: both
    deterministic, and every label stays in [0, k).
    """
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.filterwarnings("ignore", message="One of the clusters is empty")
        C, labels = kmeans2(P, k, iter=1, minit="++", missing="warn", check_finite=False, **{_KMEANS2_RNG: rng})
        for _ in range(iters - 1):
            C_next, labels_next = kmeans2(P, C, iter=1, minit="matrix", missing="warn", check_finite=False)
            if np.array_equal(labels_next, labels):
                break
            C, labels = C_next, labels_next
    return labels, C


def kmeans(points, k: int, seed: int = 0, iters: int = 100, n_init: int = 1) -> Tuple[Tensor, Tensor]:
    """k-means clustering of the rows of ``points``: k-means++ then Lloyd, by
    :func:`scipy.cluster.vq.kmeans2`.

    Args:
        points: (n, p) real tensor (or array) of n points in R^p.
        k: number of clusters (≥ 1); clamped to n.
        seed: seed of the private ``numpy.random.Generator`` used for the
            k-means++ initialisation, so the result is a deterministic function
            of (points, k, seed, iters, n_init).
        iters: maximum number of Lloyd iterations (assignment + centre update);
            stops earlier when the assignment no longer changes.
        n_init: number of independent k-means++ initialisations (drawn one
            after the other from the same generator); the run with the
            smallest within-cluster sum of squares is returned (the first on
            ties).

    Returns:
        ``(labels, centers)`` on the device of ``points``: labels (n,) int64
        with values in [0, k), the last assignment of every point to its
        nearest centre; centers (k, p) float64, the means of those clusters.
        A cluster that becomes empty keeps its previous centre, so a cluster
        can end up empty (e.g. with fewer than k distinct points).

    Computed in float64 on the CPU.
    """
    name = "matbp.segmentation.kmeans"
    if not isinstance(points, Tensor):
        points = torch.as_tensor(np.asarray(points))
    if points.dim() != 2 or points.numel() == 0:
        raise ValueError(f"{name}: points must be a non-empty 2-D (n, p) tensor, got shape {tuple(points.shape)}")
    X = points.detach().to(torch.float64)
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name}: points contain non-finite values (NaN or Inf)")
    k = min(_as_k(k, name), X.shape[0])
    iters = int(iters)
    n_init = int(n_init)
    if iters < 1 or n_init < 1:
        raise ValueError(f"{name}: iters and n_init must be >= 1, got {iters} and {n_init}")
    P = X.cpu().numpy()
    rng = np.random.default_rng(int(seed) % 2**64)  # any int, as torch's manual_seed took
    best = None
    for _ in range(n_init):
        labels, C = _kmeans2_run(P, k, iters, rng)
        inertia = float(((P - C[labels]) ** 2).sum())
        if best is None or inertia < best[2]:
            best = (labels, C, inertia)
    labels = torch.from_numpy(best[0].astype(np.int64)).to(X.device)
    return labels, torch.from_numpy(best[1]).to(X.device)


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
        ValueError (naming ``matbp.segmentation.segment``) when features are not a
        finite 2-D tensor, image_shape does not match m, Λ is not a symmetric
        (d, d) matrix, some k < 1, or some degree is ≤ 0.
    """
    name = "matbp.segmentation.segment"
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
