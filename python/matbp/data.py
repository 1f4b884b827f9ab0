"""Readers (and a writer) for the BSDS300 segmentation benchmark files.

BSDS300 (Martin et al. 2001) stores each human segmentation of an image in a
``.seg`` text file (the "ascii cr", compressed-row, format of David Martin's
``seg-format.txt``)::

    format ascii cr
    date Thu Feb 14 11:11:42 2002
    image 100075
    user 1130
    width 481
    height 321
    segments 10
    gray 0
    invert 0
    flipflop 0
    data
    0 0 0 480
    ...

The header is a list of ``key value`` lines in any order, ``#`` starting a
comment; ``width``, ``height`` and ``segments`` are required, the others are
optional (defaults ``format ascii cr``, ``gray 0``, ``invert 0``,
``flipflop 0``). A line reading ``data`` ends the header. Every data line
``s r c1 c2`` says that columns c1..c2 (inclusive) of row r belong to
segment s; all values count from 0, lines may come in any order, and every
pixel must be named exactly once.

The header flags describe how the image was *presented* to the subject:
``gray`` in grayscale, ``invert`` with inverted pixel values (a photographic
negative), ``flipflop`` upside-down and backwards (rotated by 180°).
``gray`` and ``invert`` do not change the geometry, so they do not affect the
labels and are only reported in the header. For ``flipflop 1``,
:func:`read_bsds_seg` by default takes the runs to be in the coordinates of
the presented (rotated) image and rotates the label map back by 180° into the
image frame (``honour_flipflop=False`` returns the runs as stored). The
format description does not say in which frame the runs of a flipped
presentation are stored, so this is a documented choice; for ``flipflop 0``
(the usual case) both readings agree.

Images are read with Pillow by :func:`read_image`; :func:`load_bsds_image`
loads an image with its human segmentations.

:func:`make_mosaics` writes a built-in stand-in for BSDS300 in the same
layout (texture mosaics with several "human" segmentations per image), and
:func:`mosaics_root` keeps a generated copy in a cache folder; both are read
by :class:`matbp.datasets.bsds.BSDS300`.
"""

from __future__ import annotations

import array
import itertools
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["read_bsds_seg", "write_bsds_seg", "read_image", "load_bsds_image", "make_mosaics", "mosaics_root",
           "MOSAICS_VERSION"]

PathLike = Union[str, "os.PathLike[str]"]

_INT_KEYS = ("image", "user", "width", "height", "segments", "gray", "invert", "flipflop")

# Bounds that make a corrupt or hostile file fail fast instead of exhausting
# memory: real BSDS300 files are ~10-100 KB with ~11 header lines, lines of
# < 40 bytes and 481 x 321 images.
_MAX_SEG_BYTES = 64 << 20
_MAX_SEG_LINE = 512
_MAX_SEG_HEADER_LINES = 100
_MAX_SEG_PIXELS = 1 << 26  # 8192 x 8192; the int64 label map is then 512 MiB


def read_bsds_seg(path: PathLike, *, honour_flipflop: bool = True, return_header: bool = False):
    """Read a BSDS300 ``.seg`` file ("ascii cr" format) into a label map.

    Args:
        path: the ``.seg`` file.
        honour_flipflop: when the header says ``flipflop 1`` (image presented
            upside-down and backwards), rotate the label map by 180° so that
            it is in the frame of the (unrotated) image file. False returns
            the runs as stored.
        return_header: also return the parsed header.

    Returns:
        labels, a (height, width) int64 array with values in
        [0, segments) (every pixel named by the runs); with
        ``return_header=True``, ``(labels, header)`` where header is a dict
        with the integer fields (``width``, ``height``, ``segments``,
        ``image``, ``user``, ``gray``, ``invert``, ``flipflop`` when present;
        the flags default to 0) and the strings ``format`` and ``date``, plus
        any unrecognised ``key value`` lines as strings.

    The runs are checked (bounds, overlaps, coverage) before the label map is
    allocated, and the file is read line by line with bounds, so a corrupt
    file fails fast: files over 64 MiB, lines over 512 bytes, headers over
    100 lines and images over 2^26 pixels are refused.

    Raises:
        ValueError naming ``matbp.data.read_bsds_seg``, the file and the
        line number for: a file, line or header over the bounds above, a
        malformed header line or integer field, an unsupported format
        (anything but ``ascii cr``), a missing ``data`` line or missing
        width/height/segments, non-positive width/height, a data line that
        is not 4 integers, more runs than pixels, a run out of bounds (row
        outside [0, height), c1 > c2 or columns outside [0, width)), a
        segment id outside [0, segments), a pixel named twice, and (at the
        end of the file) pixels left uncovered.
    """
    name = "matbp.data.read_bsds_seg"

    def fail(lineno: int, msg: str):
        raise ValueError(f"{name}: {os.fspath(path)}, line {lineno}: {msg}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > _MAX_SEG_BYTES:
            raise ValueError(
                f"{name}: {os.fspath(path)} has {size} bytes, more than the {_MAX_SEG_BYTES >> 20} MiB "
                "accepted for a .seg file"
            )
        lines = _bounded_lines(f, fail)
        labels, header = _parse_seg(lines, fail)
    if honour_flipflop and int(header.get("flipflop", 0)) != 0:
        labels = np.ascontiguousarray(labels[::-1, ::-1])
    if return_header:
        return labels, header
    return labels


def _bounded_lines(f, fail):
    """(line number, text) of the lines of the binary file f, within the size bounds."""
    total = 0
    for lineno in itertools.count(1):
        raw = f.readline(_MAX_SEG_LINE + 2)  # room for "\r\n"
        if not raw:
            return
        total += len(raw)
        if total > _MAX_SEG_BYTES:
            fail(lineno, f"the file exceeds the {_MAX_SEG_BYTES >> 20} MiB accepted for a .seg file")
        raw = raw.rstrip(b"\r\n")
        if len(raw) > _MAX_SEG_LINE:
            fail(lineno, f"line longer than {_MAX_SEG_LINE} bytes: not a .seg file")
        yield lineno, raw.decode("ascii", errors="replace")


def _parse_seg(lines, fail):
    header: Dict[str, object] = {"format": "ascii cr", "gray": 0, "invert": 0, "flipflop": 0}
    data_line = None
    lineno = 0
    for lineno, raw in lines:
        if lineno > _MAX_SEG_HEADER_LINES:
            fail(lineno, f"no 'data' line within the first {_MAX_SEG_HEADER_LINES} lines")
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line == "data":
            data_line = lineno
            break
        parts = line.split(None, 1)
        if len(parts) != 2:
            fail(lineno, f"expected a 'key value' header line or 'data', got {raw!r}")
        key, value = parts[0], parts[1].strip()
        if key in _INT_KEYS:
            try:
                header[key] = int(value)
            except ValueError:
                fail(lineno, f"{key} must be an integer, got {value!r}")
        elif key == "format":
            if value.split() != ["ascii", "cr"]:
                fail(lineno, f"unsupported format {value!r} (only 'ascii cr' is supported)")
            header[key] = "ascii cr"
        else:
            header[key] = value
    if data_line is None:
        fail(lineno + 1, "reached the end of the file without a 'data' line")
    for key in ("width", "height", "segments"):
        if key not in header:
            fail(data_line, f"the header lacks the required '{key}' line")
    width, height, segments = int(header["width"]), int(header["height"]), int(header["segments"])
    if width < 1 or height < 1:
        fail(data_line, f"width and height must be positive, got width {width}, height {height}")
    if not 0 < segments < 1 << 63:  # ids are stored as int64
        fail(data_line, f"segments must be positive (and below 2^63), got {segments}")
    n = width * height
    if n > _MAX_SEG_PIXELS:
        fail(data_line, f"width {width} x height {height} is more than the {_MAX_SEG_PIXELS} pixels accepted")

    runs = array.array("q")  # s, r, c1, c2, line number per run: 40 bytes, not 5 Python ints
    for lineno, raw in lines:
        # Every run names a pixel; allow as many blank or comment lines as the header.
        if lineno - data_line > n + _MAX_SEG_HEADER_LINES:
            fail(lineno, f"more lines than the {n} pixels of the image can need")
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 4:
            fail(lineno, f"expected 4 integers 's r c1 c2', got {raw!r}")
        try:
            s, r, c1, c2 = (int(v) for v in fields)
        except ValueError:
            fail(lineno, f"expected 4 integers 's r c1 c2', got {raw!r}")
        if not 0 <= s < segments:
            fail(lineno, f"segment id {s} outside [0, {segments}) (header: segments {segments})")
        if not 0 <= r < height:
            fail(lineno, f"row {r} outside [0, {height})")
        if not (0 <= c1 <= c2 < width):
            fail(lineno, f"columns {c1}..{c2} not a run within [0, {width})")
        if len(runs) >= 5 * n:
            fail(lineno, f"more runs than the {n} pixels of the image, so some pixel is named twice")
        runs.extend((s, r, c1, c2, lineno))
    end_line = lineno + 1

    # Runs as [start, end] ranges of raster indices, sorted: an overlap is a
    # start not beyond the furthest end before it, a gap a start beyond it + 1.
    s, r, c1, c2, ln = np.frombuffer(runs, dtype=np.int64).reshape(-1, 5).T
    start, end = r * width + c1, r * width + c2
    order = np.lexsort((ln, start))
    s, start, end, ln = s[order], start[order], end[order], ln[order]
    reach = np.maximum.accumulate(end)
    overlap = np.flatnonzero(start[1:] <= reach[:-1])
    if overlap.size:
        i = int(overlap[0]) + 1
        j = int(np.argmax(end[:i]))  # an earlier run reaching start[i]
        row, col = divmod(int(start[i]), width)
        earlier, later = sorted((int(ln[i]), int(ln[j])))
        fail(later, f"pixel (row {row}, column {col}) is named twice (also on line {earlier})")
    covered = int((end - start + 1).sum())
    if covered < n:
        gap = np.flatnonzero(start[1:] > end[:-1] + 1)
        first = 0 if not start.size or start[0] > 0 else int(end[gap[0]] + 1 if gap.size else end[-1] + 1)
        row, col = divmod(first, width)
        fail(
            end_line,
            f"{n - covered} of {n} pixels are not covered by any run (first: row {row}, column {col})",
        )
    # The runs tile the image exactly, in raster order.
    return np.repeat(s, end - start + 1).reshape(height, width), header


def write_bsds_seg(
    path: PathLike,
    labels,
    image_id: int = 0,
    user_id: int = 0,
    *,
    gray: int = 0,
    date: Optional[str] = None,
) -> None:
    """Write a label map as a BSDS300 ``.seg`` file ("ascii cr" format).

    Args:
        path: the file to write.
        labels: (H, W) integer label map (numpy array or torch tensor). Its
            distinct values, in increasing order, are written as segments
            0..S−1, so a map with contiguous labels 0..S−1 reads back
            unchanged and any other map reads back as the same partition.
        image_id, user_id: the ``image`` and ``user`` header fields.
        gray: the ``gray`` header flag (presentation only).
        date: the ``date`` header field; None writes the current local time.

    The header written is ``format ascii cr``, ``date``, ``image``, ``user``,
    ``width W``, ``height H``, ``segments S``, ``gray``, ``invert 0``,
    ``flipflop 0``, ``data``; then one ``s r c1 c2`` line per maximal run of
    equal labels in each row, rows in order.

    Raises:
        ValueError naming ``matbp.data.write_bsds_seg`` unless labels is a
        non-empty 2-D integer map.
    """
    name = "matbp.data.write_bsds_seg"
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    a = np.asarray(labels)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name}: labels must be a non-empty 2-D (H, W) map, got shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integers, got dtype {a.dtype}")
    uniq, inv = np.unique(a, return_inverse=True)
    lab = inv.reshape(a.shape).astype(np.int64)
    height, width = lab.shape
    if date is None:
        date = time.strftime("%a %b %d %H:%M:%S %Y")
    out = [
        "format ascii cr",
        f"date {date}",
        f"image {int(image_id)}",
        f"user {int(user_id)}",
        f"width {width}",
        f"height {height}",
        f"segments {uniq.shape[0]}",
        f"gray {int(gray)}",
        "invert 0",
        "flipflop 0",
        "data",
    ]
    for r in range(height):
        row = lab[r]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(row) != 0) + 1))
        ends = np.concatenate((starts[1:] - 1, [width - 1]))
        out.extend(f"{row[c1]} {r} {c1} {c2}" for c1, c2 in zip(starts.tolist(), ends.tolist()))
    with open(path, "w", encoding="ascii") as f:
        f.write("\n".join(out) + "\n")


def read_image(path: PathLike) -> torch.Tensor:
    """Read an image file with Pillow as an (H, W, 3) float32 tensor in [0, 1].

    8-bit images (any Pillow mode but the ones below) are converted to 8-bit
    RGB (grayscale replicated into the three channels, alpha dropped) and
    divided by 255. Single-channel images of higher depth keep their full
    range, replicated into the three channels:

    * 16-bit integer (modes ``I;16*``, e.g. a 16-bit PNG) are divided by 65535;
    * 32-bit integer (mode ``I``, e.g. how some Pillow versions open a 16-bit
      PNG) are taken as 16-bit, divided by 65535, and refused when a value
      is outside [0, 65535];
    * 32-bit float (mode ``F``, e.g. a float TIFF) are taken as they are and
      refused unless every value is in [0, 1] (there is no range to infer).

    Raises:
        ValueError naming ``matbp.data.read_image`` and the file for an
        integer or float image whose values are outside those ranges.
    """
    from PIL import Image

    name = "matbp.data.read_image"
    with Image.open(path) as im:
        if im.mode.startswith("I;16"):
            return _gray_to_rgb(np.asarray(im).astype(np.float32) / np.float32(65535.0))
        if im.mode in ("I", "F"):
            a = np.asarray(im)
            hi = 65535 if im.mode == "I" else 1
            if a.size and not (a.min() >= 0 and a.max() <= hi):  # NaN fails too
                raise ValueError(
                    f"{name}: {os.fspath(path)} is a {'32-bit integer' if hi > 1 else 'float'} image "
                    f"(Pillow mode {im.mode!r}) with values in [{a.min()}, {a.max()}]; only [0, {hi}] "
                    "is read (scale it to that range first)"
                )
            return _gray_to_rgb(a.astype(np.float32) / np.float32(hi))
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(rgb.astype(np.float32) / np.float32(255.0))


def _gray_to_rgb(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.repeat(a[..., None], 3, axis=-1))


def load_bsds_image(
    image_path: PathLike, seg_paths: Union[PathLike, Sequence[PathLike]], **read_kwargs
) -> Tuple[torch.Tensor, List[np.ndarray]]:
    """Load a BSDS image and its human segmentations.

    Args:
        image_path: the image (e.g. ``images/test/100075.jpg``).
        seg_paths: one path or a list of ``.seg`` files for it (e.g. all
            ``human/color/*/100075.seg``).
        **read_kwargs: passed to :func:`read_bsds_seg` (e.g. ``honour_flipflop``).

    Returns:
        ``(image, label_maps)``: the (H, W, 3) float32 image of
        :func:`read_image` and a list of (H, W) int64 label maps of
        :func:`read_bsds_seg`, in the order of ``seg_paths``.

    Raises:
        ValueError naming ``matbp.data.load_bsds_image`` when a
        segmentation's (height, width) differs from the image's.
    """
    name = "matbp.data.load_bsds_image"
    if isinstance(seg_paths, (str, bytes, os.PathLike)):
        seg_paths = [seg_paths]
    image = read_image(image_path)
    shape = tuple(image.shape[:2])
    segs = []
    for p in seg_paths:
        lab = read_bsds_seg(p, **read_kwargs)
        if lab.shape != shape:
            raise ValueError(
                f"{name}: segmentation {os.fspath(p)} has (height, width) {lab.shape} but image "
                f"{os.fspath(image_path)} has {shape}"
            )
        segs.append(lab)
    return image, segs


# --------------------------------------------------------------------------
# Built-in BSDS300-layout texture mosaics
# --------------------------------------------------------------------------

#: Bumped whenever make_mosaics' output changes, so a cached copy of an older
#: generator is never reused (it is part of mosaics_root's folder name).
MOSAICS_VERSION = 1

_MOSAIC_TAG = 0x5E65
_MOSAIC_SPLIT_CODE = {"train": 0, "test": 1}
_MOSAIC_IID_BASE = {"train": 100001, "test": 200001}
# "human" subjects: colour segmentations from the finest to the coarsest,
# then one grayscale segmentation (the finest: the true regions).
_MOSAIC_COLOR_UIDS = (1101, 1102, 1103)
_MOSAIC_GRAY_UID = 1104
_MOSAIC_DATE = "Thu Jan 01 00:00:00 2015"  # fixed, so the files are byte-identical
_SYNTHETIC_KINDS = ("oriented", "stripes", "blobs", "grain", "checks", "colour")
_MIN_REGION_FRACTION = 0.04


def make_mosaics(
    root: PathLike,
    seed: int = 0,
    *,
    num_train: int = 40,
    num_test: int = 20,
    size: Tuple[int, int] = (96, 128),
    regions: Tuple[int, int] = (3, 7),
) -> str:
    """Write a BSDS300-layout folder of texture mosaics at ``root``.

    Layout (that of BSDS300)::

        root/images/train/<iid>.jpg     (JPEG, quality 95, 4:4:4)
        root/images/test/<iid>.jpg
        root/human/color/<uid>/<iid>.seg
        root/human/gray/<uid>/<iid>.seg
        root/iids_train.txt, root/iids_test.txt   (one iid per line)

    with iids ``100001, 100002, ...`` (train) and ``200001, ...`` (test).

    Each image (``size`` = (H, W), default 96×128) is a mosaic of
    ``regions[0]..regions[1]`` (default 3–7) regions: the cells of a Voronoi
    diagram of random seeds in warped coordinates (so boundaries curve),
    each cell connected and covering at least 4% of the image. Every region
    shows a different texture, drawn without replacement from 16 kinds: crops
    of the ten photographs scikit-image bundles (brick, grass, gravel,
    camera, coins, moon, text, astronaut, coffee, chelsea; grayscale, at a
    random scale 1 or 1/2, random 90° rotation and mirror, their low
    frequencies removed so that a crop is a stationary texture) and six
    synthetic ones (oriented noise at a random angle, noisy stripes, blobs,
    fine grain, noisy checks, colour-mixed noise). A texture is standardised
    and rendered as ``colour + contrast · texture``, where the colours of all
    regions of an image lie close together (an image-wide grey level in
    [0.4, 0.6], each region within ±0.07 of it, per-channel tints within
    ±0.04) while the contrast is 0.09–0.2: the intensity distributions of
    the regions overlap, so a per-pixel colour clustering cannot find them;
    their texture separates them.

    "Human" segmentations, several per image, at different granularities:
    ``human/color/1101`` is the true region map (n regions);
    ``human/color/1102`` and ``1103`` merge adjacent regions of similar
    texture (greedily, the adjacent pair with the closest mean of local
    texture features first) down to ``max(2, ceil(n/2))`` and 2 regions
    (only the distinct counts are written, so images with 3 or 4 regions get
    two colour segmentations); ``human/gray/1104`` is again the true map,
    written with ``gray 1``.

    ``root`` must be absent or empty (FileExistsError otherwise).

    Deterministic: image k of a split depends only on ``(seed, split, k)``
    (not on ``num_train``/``num_test``), and the same arguments write
    byte-identical files (with the same numpy, scipy and Pillow).

    Returns:
        ``root`` (as a str).
    """
    name = "matbp.data.make_mosaics"
    from PIL import Image

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name}: seed must be a non-negative integer, got {seed!r}")
    for arg, v in (("num_train", num_train), ("num_test", num_test)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: {arg} must be a positive integer, got {v!r}")
    try:
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: size must be (height, width), got {size!r}") from None
    if H < 32 or W < 32 or H * W > 4096 * 4096:
        raise ValueError(f"{name}: size must be at least 32×32 (and at most 4096×4096 pixels), got {size!r}")
    try:
        lo, hi = (int(v) for v in regions)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: regions must be (min, max), got {regions!r}") from None
    if not 2 <= lo <= hi <= min(16, len(_SYNTHETIC_KINDS) + 10):
        raise ValueError(f"{name}: regions must be (min, max) with 2 <= min <= max <= 16, got {regions!r}")

    root = os.fspath(root)
    if os.path.isdir(root) and os.listdir(root):
        raise FileExistsError(f"{name}: {root} is not empty; give a new or empty folder (files of an earlier "
                              "set would be mixed with the new one)")
    for split, count in (("train", num_train), ("test", num_test)):
        os.makedirs(os.path.join(root, "images", split), exist_ok=True)
        iids = []
        for k in range(int(count)):
            iid = _MOSAIC_IID_BASE[split] + k
            rng = np.random.default_rng([_MOSAIC_TAG, int(seed), _MOSAIC_SPLIT_CODE[split], k])
            image, levels = _mosaic(rng, H, W, lo, hi)
            Image.fromarray(image).save(os.path.join(root, "images", split, f"{iid}.jpg"), format="JPEG",
                                        quality=95, subsampling=0)
            for uid, labels in zip(_MOSAIC_COLOR_UIDS, levels):
                d = os.path.join(root, "human", "color", str(uid))
                os.makedirs(d, exist_ok=True)
                write_bsds_seg(os.path.join(d, f"{iid}.seg"), labels, iid, uid, date=_MOSAIC_DATE)
            d = os.path.join(root, "human", "gray", str(_MOSAIC_GRAY_UID))
            os.makedirs(d, exist_ok=True)
            write_bsds_seg(os.path.join(d, f"{iid}.seg"), levels[0], iid, _MOSAIC_GRAY_UID, gray=1,
                           date=_MOSAIC_DATE)
            iids.append(str(iid))
        with open(os.path.join(root, f"iids_{split}.txt"), "w", encoding="ascii") as f:
            f.write("\n".join(iids) + "\n")
    return root


def mosaics_root(seed: int = 0, **options) -> str:
    """The folder of ``make_mosaics(root, seed, **options)``, generated once
    and cached.

    The cache is ``$MATBP_CACHE`` if set, else ``$XDG_CACHE_HOME/matbp``
    (``~/.cache/matbp``); the folder is ``mosaics-v<MOSAICS_VERSION>-<seed>``,
    plus a hash of ``options`` when any are given. It is written to a
    temporary folder next to it and renamed into place (``os.replace``), so
    a folder that exists is complete, and processes that generate it at the
    same time (e.g. the ranks of a distributed run) all end up with the same
    copy.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"matbp.data.mosaics_root: seed must be a non-negative integer, got {seed!r}")
    cache = os.environ.get("MATBP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "matbp")
    folder = f"mosaics-v{MOSAICS_VERSION}-{int(seed)}"
    if options:
        import hashlib

        key = repr(sorted((k, v if isinstance(v, (int, str)) else tuple(v)) for k, v in options.items()))
        folder += "-" + hashlib.sha1(key.encode()).hexdigest()[:10]
    path = os.path.join(cache, folder)
    if os.path.isdir(path):
        return path
    import shutil
    import tempfile

    os.makedirs(cache, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{folder}-", dir=cache)
    try:
        make_mosaics(tmp, seed, **options)
        try:
            os.replace(tmp, path)
        except OSError:
            if not os.path.isdir(path):  # not another process's copy: a real failure
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _mosaic(rng: np.random.Generator, H: int, W: int, lo: int, hi: int):
    """One mosaic: the (H, W, 3) uint8 image and its label maps, finest first,
    with distinct numbers of segments."""
    n = int(rng.integers(lo, hi + 1))
    labels = _region_layout(rng, H, W, n)
    n = int(labels.max()) + 1
    kinds = _texture_kinds()
    chosen = rng.choice(len(kinds), size=n, replace=False)
    grey = rng.uniform(0.4, 0.6)
    image = np.empty((3, H, W))
    for r in range(n):
        texture = _texture(rng, kinds[int(chosen[r])], H, W)  # (3, H, W), zero mean, unit variance
        colour = grey + rng.uniform(-0.07, 0.07) + rng.uniform(-0.04, 0.04, size=3)
        contrast = rng.uniform(0.09, 0.2)
        mask = labels == r
        image[:, mask] = colour[:, None] + contrast * texture[:, mask]
    image = np.clip(np.rint(image.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    counts = sorted({n, max(2, (n + 1) // 2), 2}, reverse=True)
    return image, _merge_levels(image, labels, counts)


def _region_layout(rng: np.random.Generator, H: int, W: int, n: int) -> np.ndarray:
    """(H, W) int64 map of n connected regions (labels 0..n'-1, n' <= n),
    each at least _MIN_REGION_FRACTION of the image: Voronoi cells of random
    seeds in smoothly warped coordinates."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    labels = None
    for _ in range(20):
        amp = 0.08 * min(H, W)
        warp = [ndimage.gaussian_filter(rng.standard_normal((H, W)), min(H, W) / 6.0, mode="wrap")
                for _ in range(2)]
        warp = [w / (np.abs(w).max() + 1e-12) * amp for w in warp]
        seeds = rng.uniform((0, 0), (H, W), size=(n, 2))
        d = (yy[None] + warp[0][None] - seeds[:, 0, None, None]) ** 2 + \
            (xx[None] + warp[1][None] - seeds[:, 1, None, None]) ** 2
        labels = _connected(np.argmin(d, axis=0), n)
        areas = np.bincount(labels.ravel(), minlength=n)
        if areas.min() >= _MIN_REGION_FRACTION * H * W:
            return labels
    # No layout with n large regions in 20 tries: merge the small regions
    # into their neighbours (the image then has fewer regions).
    while True:
        areas = np.bincount(labels.ravel())
        small = np.flatnonzero(areas < _MIN_REGION_FRACTION * H * W)
        if small.size == 0 or areas.size <= 2:
            return labels
        labels = _absorb(labels, labels == small[0])
        labels = np.unique(labels, return_inverse=True)[1].reshape(H, W)


def _connected(labels: np.ndarray, n: int) -> np.ndarray:
    """Every label reduced to its largest connected component, the other
    components given to the neighbouring region they touch most."""
    from scipy import ndimage

    labels = labels.copy()
    for r in range(n):
        comp, count = ndimage.label(labels == r)
        if count <= 1:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        keep = int(np.argmax(sizes)) + 1
        for c in range(1, count + 1):
            if c != keep:
                labels = _absorb(labels, comp == c)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)


def _absorb(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """labels with the pixels of mask given to the label most common on the
    ring of pixels around it."""
    from scipy import ndimage

    ring = ndimage.binary_dilation(mask) & ~mask
    out = labels.copy()
    if ring.any():
        out[mask] = int(np.argmax(np.bincount(labels[ring])))
    return out


def _texture_kinds() -> Tuple[str, ...]:
    from .datasets.photos import PHOTOS

    return tuple(f"photo:{p}" for p in PHOTOS) + _SYNTHETIC_KINDS


def _texture(rng: np.random.Generator, kind: str, H: int, W: int) -> np.ndarray:
    """A (3, H, W) texture field, standardised over the field."""
    from scipy import ndimage

    from .datasets.textures import texture_kernel

    gain = 1.0 + rng.uniform(-0.15, 0.15, size=3)
    if kind.startswith("photo:"):
        from .datasets.photos import PHOTOS, _load_photos

        images, _, _ = _load_photos()
        photo = images[list(PHOTOS).index(kind[len("photo:"):])].astype(np.float64) / 255.0
        photo = np.rot90(photo, int(rng.integers(4)))
        if rng.random() < 0.5:
            photo = photo[:, ::-1]
        scale = int(rng.integers(1, 3))
        h, w = H * scale, W * scale
        pad = ((0, max(0, h - photo.shape[0])), (0, max(0, w - photo.shape[1])))
        if pad[0][1] or pad[1][1]:
            photo = np.pad(photo, pad, mode="symmetric")
        best = None
        for _ in range(4):  # avoid a flat crop (sky, the moon's background)
            top = int(rng.integers(0, photo.shape[0] - h + 1))
            left = int(rng.integers(0, photo.shape[1] - w + 1))
            crop = photo[top:top + h, left:left + w]
            if scale > 1:
                crop = crop.reshape(H, scale, W, scale).mean(axis=(1, 3))
            crop = crop - ndimage.gaussian_filter(crop, 8.0, mode="reflect")
            if best is None or crop.std() > best.std():
                best = crop
            if best.std() > 0.03:
                break
        t = best
    elif kind == "oriented":
        k = texture_kernel(rng.uniform(0.0, 180.0), rng.uniform(2.0, 4.0), rng.uniform(0.6, 1.0), radius=12)
        # Circular convolution by FFT, keeping the outputs that did not wrap
        # around (numpy's FFT: importing scipy.signal costs seconds).
        s = (H + 24, W + 24)
        t = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(s)) * np.fft.rfft2(k, s=s), s=s)[24:, 24:]
    elif kind == "stripes":
        theta, period = rng.uniform(0.0, np.pi), rng.uniform(5.0, 12.0)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
        wobble = ndimage.gaussian_filter(rng.standard_normal((H, W)), 6.0, mode="wrap")
        wobble *= 1.5 / (np.abs(wobble).max() + 1e-12)
        phase = 2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + wobble
        t = np.sin(phase + rng.uniform(0.0, 2 * np.pi)) + 0.35 * rng.standard_normal((H, W))
    elif kind == "blobs":
        t = ndimage.gaussian_filter(rng.standard_normal((H, W)), rng.uniform(2.5, 4.0), mode="wrap")
    elif kind == "grain":
        t = ndimage.gaussian_filter(rng.standard_normal((H, W)), 0.5, mode="wrap")
    elif kind == "checks":
        theta, period = rng.uniform(0.0, np.pi / 2), rng.uniform(6.0, 14.0)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
        u = (xx * np.cos(theta) + yy * np.sin(theta)) / period
        v = (-xx * np.sin(theta) + yy * np.cos(theta)) / period
        t = np.sign(np.sin(np.pi * u) * np.sin(np.pi * v)) + 0.5 * rng.standard_normal((H, W))
    elif kind == "colour":
        # Three independent smooth fields mixed across the channels by a
        # random rotation, on top of a luminance field: a chromatic texture.
        z = np.stack([ndimage.gaussian_filter(rng.standard_normal((H, W)), 1.5, mode="wrap") for _ in range(4)])
        z = (z - z.mean(axis=(1, 2), keepdims=True)) / z.std(axis=(1, 2), keepdims=True)
        q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        t = z[0][None] + 0.5 * np.einsum("ck,khw->chw", q, z[1:])
        return t / t.std()
    else:
        raise AssertionError(kind)
    t = (t - t.mean()) / (t.std() + 1e-12)
    return gain[:, None, None] * t[None]


def _merge_levels(image: np.ndarray, labels: np.ndarray, counts: Sequence[int]) -> List[np.ndarray]:
    """labels, then coarser maps with counts[1:] regions: adjacent regions
    merged greedily by the distance of their mean local texture features."""
    from scipy import ndimage

    g = image.astype(np.float64).mean(axis=2) / 255.0
    gy, gx = np.gradient(g)
    local_mean = ndimage.uniform_filter(g, 5)
    feats = [
        local_mean,
        np.sqrt(np.maximum(ndimage.uniform_filter(g * g, 5) - local_mean ** 2, 0.0)),
        np.abs(gx), np.abs(gy), np.abs(gx + gy) / np.sqrt(2), np.abs(gx - gy) / np.sqrt(2),
    ]
    F = np.stack([f / (f.std() + 1e-12) for f in feats], axis=-1).reshape(-1, len(feats))
    cur = labels.copy()
    n = int(labels.max()) + 1
    area = np.bincount(cur.ravel(), minlength=n).astype(np.float64)
    desc = np.stack([np.bincount(cur.ravel(), weights=F[:, j], minlength=n) for j in range(F.shape[1])], 1)
    desc /= area[:, None]
    alive = list(range(n))
    levels = [labels.copy()]
    for target in counts[1:]:
        while len(alive) > target:
            pairs = set()
            for a, b in ((cur[:, 1:], cur[:, :-1]), (cur[1:, :], cur[:-1, :])):
                m = a != b
                pairs.update(zip(np.minimum(a[m], b[m]).tolist(), np.maximum(a[m], b[m]).tolist()))
            i, j = min(sorted(pairs), key=lambda p: float(((desc[p[0]] - desc[p[1]]) ** 2).sum()))
            desc[i] = (area[i] * desc[i] + area[j] * desc[j]) / (area[i] + area[j])
            area[i] += area[j]
            cur[cur == j] = i
            alive.remove(j)
        levels.append(np.unique(cur, return_inverse=True)[1].reshape(cur.shape).astype(np.int64))
    return levels
