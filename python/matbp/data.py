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
"""

from __future__ import annotations

import array
import itertools
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["read_bsds_seg", "write_bsds_seg", "read_image", "load_bsds_image"]

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
