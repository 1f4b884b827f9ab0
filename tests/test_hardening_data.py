"""Hostile and confusing input to matbp.data and matbp.metrics: bounded work
and clear errors."""

import os
import time
import tracemalloc

import numpy as np
import pytest
import torch

from matbp import data, metrics

HEADER = "format ascii cr\nwidth {w}\nheight {h}\nsegments 1\ndata\n"


def _seg(tmp_path, text, name="x.seg"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _fails_fast(path, message, seconds=0.5, peak_bytes=1 << 20):
    """read_bsds_seg raises ValueError matching message, quickly and without a large allocation."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="matbp.data.read_bsds_seg") as info:
            data.read_bsds_seg(path)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.match(message)
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < peak_bytes, f"allocated {peak} bytes"


# ------------------------------------------------------------ .seg files


def test_seg_header_claiming_a_huge_image_fails_before_allocating(tmp_path):
    # 65 bytes claiming 20000 x 20000: it used to allocate 3.2 GB and take 40 s.
    p = _seg(tmp_path, HEADER.format(w=20000, h=20000) + "0 0 0 0\n")
    assert os.path.getsize(p) == 65
    _fails_fast(p, r"line 5: width 20000 x height 20000 is more than the 67108864 pixels")


def test_seg_runs_that_cannot_cover_the_image_fail_before_allocating(tmp_path):
    # Under the pixel limit, but one run cannot cover 64 M pixels.
    p = _seg(tmp_path, HEADER.format(w=8000, h=8000) + "0 0 0 0\n")
    _fails_fast(p, r"line 7: 63999999 of 64000000 pixels are not covered by any run \(first: row 0, column 1\)")


def test_seg_non_regular_file_fails_fast():
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    _fails_fast("/dev/zero", "line 1: line longer than 512 bytes")


@pytest.mark.parametrize(
    "text, message",
    [
        ("format ascii cr\n" + "x" * 600 + "\n", "line 2: line longer than 512 bytes"),
        ("# comment\n" * 150 + "width 1\n", "line 101: no 'data' line within the first 100 lines"),
        (HEADER.format(w=2, h=2) + "\n" * 500, "line 110: more lines than the 4 pixels of the image can need"),
        (HEADER.format(w=1, h=1) + "0 0 0 0\n" * 50, "line 7: more runs than the 1 pixels"),
        (HEADER.format(w=1, h=1).replace("segments 1", f"segments {2**70}") + f"{2**68} 0 0 0\n",
         r"line 5: segments must be positive \(and below 2\^63\)"),
    ],
    ids=["long-line", "long-header", "blank-lines", "too-many-runs", "huge-segment-id"],
)
def test_seg_bounds(tmp_path, text, message):
    _fails_fast(_seg(tmp_path, text), message)


def test_seg_file_over_the_size_limit(tmp_path):
    p = tmp_path / "big.seg"
    with open(p, "wb") as f:
        f.truncate((64 << 20) + 1)  # sparse: no disk space used
    _fails_fast(p, "has 67108865 bytes, more than the 64 MiB accepted")


def test_seg_overlap_names_both_lines_and_runs_in_any_order(tmp_path):
    text = HEADER.format(w=4, h=2) + "0 1 0 3\n0 0 2 3\n0 0 0 1\n"
    np.testing.assert_array_equal(data.read_bsds_seg(_seg(tmp_path, text)), np.zeros((2, 4)))
    text = HEADER.format(w=4, h=2) + "0 0 0 3\n0 1 0 3\n0 0 1 1\n"
    _fails_fast(_seg(tmp_path, text), r"line 8: pixel \(row 0, column 1\) is named twice \(also on line 6\)")


# ----------------------------------------------------------------- images


def test_read_image_16_bit_png(tmp_path):
    from PIL import Image

    a = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5461).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")  # "I;16" (or "I" in some Pillow versions)
    img = data.read_image(tmp_path / "g16.png")
    assert img.dtype == torch.float32 and img.shape == (3, 4, 3)
    expected = torch.from_numpy(a / 65535.0).float()
    for c in range(3):
        torch.testing.assert_close(img[..., c], expected, atol=1 / 255, rtol=0)
    # it used to come out 99.6% white (clipped to 255 before the division)
    assert img.max() <= 1 and (img < 0.5).sum() > 0


def test_read_image_float_tiff(tmp_path):
    from PIL import Image

    f = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(f).save(tmp_path / "f.tif")
    img = data.read_image(tmp_path / "f.tif")
    assert img.dtype == torch.float32 and img.shape == (3, 4, 3)
    torch.testing.assert_close(img[..., 1], torch.from_numpy(f), atol=1 / 255, rtol=0)
    # no range to infer outside [0, 1]: refused, not silently near-black or clipped
    Image.fromarray(f * 255).save(tmp_path / "f255.tif")
    with pytest.raises(ValueError, match=r"matbp.data.read_image: .*f255.tif is a float image .*\[0.0, 255.0\]"):
        data.read_image(tmp_path / "f255.tif")


def test_read_image_32_bit_integer(tmp_path):
    from PIL import Image

    a = np.array([[0, 1000], [65535, 30000]], dtype=np.int32)
    Image.fromarray(a).save(tmp_path / "i.tif")
    img = data.read_image(tmp_path / "i.tif")
    torch.testing.assert_close(img[..., 0], torch.from_numpy(a / 65535.0).float(), atol=1e-6, rtol=0)
    Image.fromarray(a * 100).save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"matbp.data.read_image: .*only \[0, 65535\]"):
        data.read_image(tmp_path / "big.tif")


# ---------------------------------------------------------------- metrics

SEG = np.array([[0, 0, 1], [0, 1, 1]])
GT = np.array([[0, 0, 0], [1, 1, 1]])


@pytest.mark.parametrize(
    "call, error, message",
    [
        # two label maps instead of lists: it used to return 0.667
        (lambda: metrics.image_covering(SEG, GT), ValueError, r"candidates must be a list of \(H, W\) label maps"),
        (lambda: metrics.image_covering([SEG], GT), ValueError, r"ground_truths must be a list"),
        (lambda: metrics.image_covering(torch.from_numpy(SEG), [GT]), ValueError, "candidates must be a list"),
        (lambda: metrics.image_covering(SEG.tolist(), [GT]), ValueError, r"candidates\[0\] has shape \(3,\)"),
        (lambda: metrics.image_covering(3, [GT]), TypeError, "candidates must be a list"),
        (lambda: metrics.image_covering([SEG], [[[0, 1], [0]]]), ValueError, r"ground_truths\[0\] must be an integer label map, got a ragged list"),
    ],
    ids=["two-maps", "one-gt-map", "tensor-map", "nested-list-map", "int", "ragged"],
)
def test_image_covering_rejects_a_map_for_a_list(call, error, message):
    with pytest.raises(error, match="matbp.metrics.image_covering: " + message):
        call()


def test_image_covering_accepts_lists_and_stacks():
    assert metrics.image_covering([SEG], [GT])["best"] == pytest.approx(0.5)
    assert metrics.image_covering(np.stack([SEG, GT]), (g for g in [GT]))["best"] == pytest.approx(1.0)


def test_covering_and_dataset_covering_argument_confusion():
    with pytest.raises(ValueError, match="matbp.metrics.covering: .*use matbp.metrics.image_covering"):
        metrics.covering(SEG, [GT, GT])
    with pytest.raises(ValueError, match="matbp.metrics.covering: segmentation must be a label map"):
        metrics.covering(3, 3)
    one = metrics.image_covering([SEG], [GT])
    with pytest.raises(TypeError, match="matbp.metrics.dataset_covering: per_image_results must be a list"):
        metrics.dataset_covering(one)
    with pytest.raises(ValueError, match=r"matbp.metrics.dataset_covering: result 0 has coverings outside \[0, 1\]"):
        metrics.dataset_covering([{"table": [[float("nan")]]}])
    assert metrics.dataset_covering([one])["average"] == pytest.approx(0.5)
