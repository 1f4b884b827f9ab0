"""Segmentation covering, the BSDS region metric (Arbelaez et al., PAMI 2011).

The covering of a ground truth G by a segmentation S (both partitions of the
same N pixels into regions) is

    Cov(S → G) = (1/N) Σ_{R ∈ G} |R| · max_{R′ ∈ S} |R ∩ R′| / |R ∪ R′|,

the region-size-weighted best intersection-over-union of every ground-truth
region. It lies in (0, 1] and equals 1 exactly when S = G as partitions.

BSDS provides several human segmentations per image and algorithms usually
produce several candidate segmentations (for example,
:func:`matbp.segmentation.segment` gives one per number of clusters k).
Following the paper (§6.2), these are combined at the optimal image scale
(OIS):

* :func:`image_covering` — for one image, the "average" covering is the
  largest (over candidates) mean (over human segmentations) covering, the
  "best" covering is the largest covering of any human segmentation by any
  candidate;
* :func:`dataset_covering` — averages those over images, and, when the
  candidates are indexed consistently across images (e.g. by k), also
  reports the optimal dataset scale (ODS): one candidate index for the whole
  data set.

Pure numpy; inputs may be numpy arrays or torch tensors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Dict, List, Sequence

import numpy as np

__all__ = ["covering", "image_covering", "dataset_covering"]


def _as_labels(x, name: str, what: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency of matbp
        pass
    try:
        a = np.asarray(x)
    except ValueError as exc:  # ragged nested lists
        msg = f"{name}: {what} must be an integer label map, got a ragged {type(x).__name__}"
        raise ValueError(msg) from exc
    if a.dtype == np.bool_:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: {what} must be an integer label map, got dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{name}: {what} must be a label map with at least one dimension, got a scalar")
    return a


def _as_map_list(maps, name: str, what: str) -> List[np.ndarray]:
    """A list of 2-D label maps, rejecting a single map passed where a list belongs.

    Iterating over one (H, W) map would yield its rows as H one-dimensional
    "maps", and the coverings of those rows are a wrong number, not an error.
    """
    if isinstance(maps, (str, bytes, dict)) or not isinstance(maps, Iterable):
        raise TypeError(f"{name}: {what} must be a list of (H, W) label maps, got {type(maps).__name__}")
    if getattr(maps, "ndim", 3) != 3:  # an array or tensor must be a stack (N, H, W)
        raise ValueError(
            f"{name}: {what} must be a list of (H, W) label maps (or an (N, H, W) stack), got an array of "
            f"shape {tuple(maps.shape)}; wrap a single map in a list: [{what[:-1]}]"
        )
    out = [_as_labels(m, name, f"{what}[{i}]") for i, m in enumerate(maps)]
    for i, m in enumerate(out):
        if m.ndim != 2:
            raise ValueError(
                f"{name}: {what}[{i}] has shape {m.shape}, but every element of {what} must be a 2-D "
                f"(H, W) label map; wrap a single map in a list: [{what[:-1]}]"
            )
    return out


def covering(segmentation, ground_truth) -> float:
    """Covering Cov(S → G) of ``ground_truth`` G by ``segmentation`` S.

    Cov(S → G) = (1/N) Σ_{R∈G} |R| · max_{R′∈S} |R ∩ R′| / |R ∪ R′|, with N the
    number of pixels (Arbelaez et al. 2011). Note the asymmetry: the sum runs
    over the regions of the ground truth.

    Args:
        segmentation: integer label map S (numpy array or torch tensor).
        ground_truth: integer label map G of the same shape.
            Any integer values are region ids (they need not be contiguous,
            and may be negative); a region is the set of pixels sharing an
            id, whether or not it is connected. Boolean maps count as 0/1.

    Returns:
        The covering, a float in (0, 1].

    Computed from the sparse contingency table of (G-region, S-region) pairs
    (np.unique over pair codes), so the cost is O(N log N) and the memory
    O(N) whatever the numbers of regions.

    Raises:
        ValueError (naming ``matbp.metrics.covering``) when the shapes differ,
        the maps are empty, or a map is not integer-valued.
    """
    name = "matbp.metrics.covering"
    s = _as_labels(segmentation, name, "segmentation")
    g = _as_labels(ground_truth, name, "ground_truth")
    if s.shape != g.shape:
        raise ValueError(
            f"{name}: segmentation shape {s.shape} differs from ground_truth shape {g.shape} (covering "
            "compares two label maps; for a list of ground truths use matbp.metrics.image_covering)"
        )
    n = s.size
    if n == 0:
        raise ValueError(f"{name}: the label maps are empty")
    _, s_inv, s_size = np.unique(s.ravel(), return_inverse=True, return_counts=True)
    _, g_inv, g_size = np.unique(g.ravel(), return_inverse=True, return_counts=True)
    s_inv = s_inv.ravel().astype(np.int64)
    g_inv = g_inv.ravel().astype(np.int64)
    n_s = np.int64(s_size.shape[0])
    pairs, inter = np.unique(g_inv * n_s + s_inv, return_counts=True)
    pg = pairs // n_s
    ps = pairs % n_s
    iou = inter / (g_size[pg] + s_size[ps] - inter).astype(np.float64)
    best = np.zeros(g_size.shape[0], dtype=np.float64)
    np.maximum.at(best, pg, iou)
    return float(np.dot(g_size.astype(np.float64), best) / n)


def image_covering(candidates: Sequence, ground_truths: Sequence) -> Dict:
    """Covering of one image's human segmentations by candidate segmentations.

    Args:
        candidates: list of C ≥ 1 candidate (H, W) label maps of one image (e.g. the
            k = 2..9 segmentations returned by :func:`matbp.segmentation.segment`).
        ground_truths: list of G ≥ 1 human (H, W) label maps of the same image.
            Either list may also be an (N, H, W) array or tensor.

    Returns:
        A dict with

        * ``"table"``: (C, G) float64 array, ``table[c, g] = covering(candidates[c], ground_truths[g])``;
        * ``"average"``: max_c mean_g table[c, g] — the average covering at the
          optimal image scale (OIS): the candidate with the best mean covering
          of the pool of human segmentations;
        * ``"average_index"``: the c attaining it (the first
          on ties);
        * ``"best"``: max_{c, g} table[c, g] — the best covering at OIS: the
          candidate and the human segmentation that agree best;
        * ``"best_index"``, ``"best_ground_truth"``: the c and g attaining it.

    Raises:
        ValueError (naming ``matbp.metrics.image_covering``) on an empty list
        or an element that is not a 2-D integer map (a single (H, W) map
        passed instead of a list of maps); TypeError when an argument is not
        a list; :func:`covering` raises on mismatched shapes.
    """
    name = "matbp.metrics.image_covering"
    candidates = _as_map_list(candidates, name, "candidates")
    ground_truths = _as_map_list(ground_truths, name, "ground_truths")
    if not candidates:
        raise ValueError(f"{name}: no candidate segmentations")
    if not ground_truths:
        raise ValueError(f"{name}: no ground-truth segmentations")
    table = np.array([[covering(c, g) for g in ground_truths] for c in candidates], dtype=np.float64)
    mean = table.mean(axis=1)
    avg_idx = int(np.argmax(mean))
    flat = int(np.argmax(table))
    best_c, best_g = divmod(flat, table.shape[1])
    return {
        "table": table,
        "average": float(mean[avg_idx]),
        "average_index": avg_idx,
        "best": float(table[best_c, best_g]),
        "best_index": int(best_c),
        "best_ground_truth": int(best_g),
    }


def dataset_covering(per_image_results: Sequence[Dict]) -> Dict:
    """Data-set covering from the per-image results of :func:`image_covering`.

    Args:
        per_image_results: list of the dicts returned by :func:`image_covering`
            for each image (only their ``"table"`` entries are used).

    Returns:
        A dict with

        * ``"n_images"``: the number of images I;
        * ``"average"``, ``"best"``: the optimal-image-scale (OIS) scores, the
          means over images of the per-image ``"average"`` and ``"best"``
          coverings (each image uses its own best candidate). These are the
          numbers reported in the paper's Table 2 as "best (average)".
        * ``"ods_average"``, ``"ods_average_index"``, ``"ods_best"``,
          ``"ods_best_index"``: the optimal-dataset-scale (ODS) scores, where a
          single candidate index c is used for every image:
          ods_average = max_c mean_i mean_g table_i[c, g] and
          ods_best = max_c mean_i max_g table_i[c, g], with the maximising c.
          ODS only makes sense when candidates are indexed consistently
          across images (e.g. candidate c is always the segmentation with
          k = ks[c]); it is computed when every image has the same number of
          candidates, and these four entries are None otherwise.

    Images are weighted equally (the BSDS benchmark weights images by their
    pixel counts, which is the same when all images have the same size, as
    in BSDS300).

    Raises:
        ValueError (naming ``matbp.metrics.dataset_covering``) on an empty
        list or a result without a ``"table"`` of coverings in [0, 1];
        TypeError when per_image_results is not a list (e.g. one result).
    """
    name = "matbp.metrics.dataset_covering"
    if isinstance(per_image_results, (dict, str, bytes)) or not isinstance(per_image_results, Iterable):
        raise TypeError(
            f"{name}: per_image_results must be a list of matbp.metrics.image_covering results, got "
            f"{type(per_image_results).__name__} (wrap a single result in a list)"
        )
    results = list(per_image_results)
    if not results:
        raise ValueError(f"{name}: no per-image results")
    tables: List[np.ndarray] = []
    for i, r in enumerate(results):
        if not isinstance(r, dict) or "table" not in r:
            raise ValueError(f"{name}: result {i} is not a dict from matbp.metrics.image_covering")
        t = np.asarray(r["table"], dtype=np.float64)
        if t.ndim != 2 or t.size == 0:
            raise ValueError(f"{name}: result {i} has a malformed table of shape {t.shape}")
        if not ((t >= 0) & (t <= 1)).all():  # NaN fails too
            raise ValueError(f"{name}: result {i} has coverings outside [0, 1] in its table")
        tables.append(t)
    avg = np.array([t.mean(axis=1).max() for t in tables])
    best = np.array([t.max() for t in tables])
    out = {
        "n_images": len(tables),
        "average": float(avg.mean()),
        "best": float(best.mean()),
        "ods_average": None,
        "ods_average_index": None,
        "ods_best": None,
        "ods_best_index": None,
    }
    if len({t.shape[0] for t in tables}) == 1:
        per_c_avg = np.mean([t.mean(axis=1) for t in tables], axis=0)  # (C,)
        per_c_best = np.mean([t.max(axis=1) for t in tables], axis=0)  # (C,)
        ia = int(np.argmax(per_c_avg))
        ib = int(np.argmax(per_c_best))
        out.update(
            ods_average=float(per_c_avg[ia]),
            ods_average_index=ia,
            ods_best=float(per_c_best[ib]),
            ods_best_index=ib,
        )
    return out
