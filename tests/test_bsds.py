"""BSDS300-layout datasets (matbp.datasets.bsds) and the built-in texture
mosaics (matbp.data.make_mosaics / mosaics_root)."""

import hashlib
import os

import numpy as np
import pytest
import torch
from PIL import Image

from matbp import data as data_module
from matbp.data import make_mosaics, mosaics_root, write_bsds_seg
from matbp.datasets.bsds import BSDS300, IMAGENET_MEAN, IMAGENET_STD, Mosaics, collate_segmentation

# --------------------------------------------------------------------------
# A tiny BSDS300 folder
# --------------------------------------------------------------------------

SIZES = {"101": (12, 16), "102": (16, 12), "201": (12, 16)}  # (H, W); 102 is portrait
SPLIT_IIDS = {"train": ["101", "102"], "test": ["201"]}


def _segs_for(iid, h, w):
    """(kind, uid) -> label map; left-right asymmetric so a flip shows."""
    cols = np.arange(w)[None, :].repeat(h, 0)
    rows = np.arange(h)[:, None].repeat(w, 1)
    maps = {
        ("color", "1001"): (cols >= w // 3).astype(np.int64),                      # 2 segments
        ("color", "1002"): np.minimum(cols // (w // 3), 2) + 3 * (rows >= h // 2),  # 6 segments
        ("gray", "1001"): (cols + rows > (h + w) // 3).astype(np.int64),           # 2 segments
    }
    if iid != "102":
        maps[("gray", "1003")] = np.minimum(cols // 5, 2)                         # 3 segments
    return maps


@pytest.fixture
def tiny(tmp_path):
    root = tmp_path / "BSDS300"
    rng = np.random.default_rng(0)
    written = {}
    for split, iids in SPLIT_IIDS.items():
        (root / "images" / split).mkdir(parents=True)
        (root / f"iids_{split}.txt").write_text("\n".join(iids) + "\n")
        for iid in iids:
            h, w = SIZES[iid]
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / split / f"{iid}.jpg", quality=95)
            written[iid] = {}
            for (kind, uid), labels in _segs_for(iid, h, w).items():
                d = root / "human" / kind / uid
                d.mkdir(parents=True, exist_ok=True)
                write_bsds_seg(d / f"{iid}.seg", labels, int(iid), int(uid), gray=int(kind == "gray"))
                written[iid][(kind, uid)] = np.unique(labels, return_inverse=True)[1].reshape(h, w)
    return root, written


def _unnormalise(x):
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return x * std + mean


def test_lengths_shapes_dtypes(tiny):
    root, _ = tiny
    train, test = BSDS300(root, "train"), BSDS300(root, "test")
    assert (len(train), len(test)) == (2, 1)
    assert train.iids == ["101", "102"] and test.iids == ["201"]
    assert train.augment and not test.augment
    assert train.image_size is None and test.image_size == (12, 16)
    for ds in (train, test):
        for i, iid in enumerate(ds.iids):
            s = ds[i]
            h, w = SIZES[iid]
            assert s["index"] == i
            assert s["image"].dtype == torch.float32 and s["image"].shape == (3, h, w)
            assert s["labels"].dtype == torch.int64 and s["labels"].shape == (h, w)
            assert ds.image_path(i).endswith(os.path.join("images", ds.split, f"{iid}.jpg"))
            # ImageNet normalisation of the image as read.
            ref = ds.read_image(i).permute(2, 0, 1)
            back = _unnormalise(s["image"])  # as read, or flipped
            assert torch.allclose(back, ref, atol=1e-5) or torch.allclose(back, ref.flip(-1), atol=1e-5)
    assert test[-1]["index"] == 0
    with pytest.raises(IndexError):
        test[1]


def test_ground_truths_are_every_seg(tiny):
    root, written = tiny
    for split in ("train", "test"):
        ds = BSDS300(root, split)
        for i, iid in enumerate(ds.iids):
            gts = ds.ground_truths(i)
            want = written[iid]
            assert len(gts) == len(want) == len(ds.seg_paths(i))
            for g in gts:
                assert g.dtype == np.int64 and g.shape == SIZES[iid]
            # Every written map is there, in the documented order (color
            # before gray, users increasing).
            order = sorted(want, key=lambda ku: (ku[0] != "color", int(ku[1])))
            for g, key in zip(gts, order):
                np.testing.assert_array_equal(g, want[key])
            # Without augmentation the labels are the first segmentation.
            no_aug = BSDS300(root, split, augment=False)
            np.testing.assert_array_equal(no_aug[i]["labels"].numpy(), gts[0])


def _drawn(ds, i, epochs):
    """(segmentation index, flipped) drawn for sample i at each epoch."""
    gts = ds.ground_truths(i)
    out = []
    for e in epochs:
        ds.set_epoch(e)
        lab = ds[i]["labels"].numpy()
        hits = [(k, f) for k, g in enumerate(gts) for f, gg in ((False, g), (True, g[:, ::-1]))
                if np.array_equal(lab, gg)]
        assert hits, "the drawn labels are not a (flipped) human segmentation"
        out.append(hits[0])
    return out


def test_draw_depends_on_epoch_and_seed_deterministically(tiny):
    root, _ = tiny
    epochs = range(16)
    a = _drawn(BSDS300(root, "train", seed=0), 0, epochs)
    assert a == _drawn(BSDS300(root, "train", seed=0), 0, epochs)  # deterministic
    assert len({k for k, _ in a}) > 1  # the segmentation changes with the epoch
    assert {f for _, f in a} == {False, True}  # so does the flip
    b = _drawn(BSDS300(root, "train", seed=1), 0, epochs)
    assert a != b  # and with the seed
    # The draw is np.random.default_rng([seed, epoch, i]): integers, then random.
    for e, (k, f) in zip(epochs, a):
        rng = np.random.default_rng([0, e, 0])
        assert k == int(rng.integers(4)) and f == bool(rng.random() < 0.5)


def test_flip_moves_image_and_labels_together(tiny):
    root, _ = tiny
    ds, plain = BSDS300(root, "train", seed=3), BSDS300(root, "train", augment=False)
    seen = set()
    for e in range(12):
        ds.set_epoch(e)
        for i in range(len(ds)):
            s, ref = ds[i], plain[i]
            k, f = _drawn(ds, i, [e])[0]
            img_flipped = torch.equal(s["image"], ref["image"].flip(-1))
            assert img_flipped == f and (f or torch.equal(s["image"], ref["image"]))
            seen.add(f)
    assert seen == {False, True}


def test_val_is_test(tiny):
    root, _ = tiny
    ds = BSDS300(root, "val")
    assert ds.split == "test" and ds.iids == ["201"] and not ds.augment
    with pytest.raises(ValueError, match="unknown split"):
        BSDS300(root, "validation")


def test_collate(tiny):
    root, _ = tiny
    ds = BSDS300(root, "train", augment=False)
    b = collate_segmentation([ds[0], ds[0]])
    assert b["image"].shape == (2, 3, 12, 16) and b["labels"].shape == (2, 12, 16)
    assert b["labels"].dtype == torch.int64 and b["index"].tolist() == [0, 0]
    one = collate_segmentation([ds[1]])
    assert one["image"].shape == (1, 3, 16, 12)
    with pytest.raises(ValueError, match="batch size 1"):
        collate_segmentation([ds[0], ds[1]])
    loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=collate_segmentation)
    assert [tuple(b["labels"].shape) for b in loader] == [(1, 12, 16), (1, 16, 12)]


def test_clear_errors(tiny, tmp_path):
    root, _ = tiny
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*iids_\{train,test\}\.txt"):
        BSDS300(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match=r"iids_test\.txt.*human/\{color,gray\}"):
        os.remove(root / "iids_test.txt")
        BSDS300(root, "test")
    os.remove(root / "images" / "train" / "102.jpg")
    with pytest.raises(FileNotFoundError, match=r"images.train.102\.jpg"):
        BSDS300(root, "train")
    (root / "iids_train.txt").write_text("101\n")
    for kind, uid in _segs_for("101", 12, 16):
        os.remove(root / "human" / kind / uid / "101.seg")
    with pytest.raises(FileNotFoundError, match=r"101\.seg"):
        BSDS300(root, "train")
    # Malformed .seg: the reader's message, re-raised naming the file.
    (root / "iids_train.txt").write_text("101\n")
    bad = root / "human" / "color" / "1001" / "101.seg"
    write_bsds_seg(bad, np.zeros((12, 16), dtype=np.int64))
    ds = BSDS300(root, "train", augment=False)
    bad.write_text("format ascii cr\nwidth 16\nheight 12\nsegments 1\ndata\n0 0 0 99\n")
    with pytest.raises(ValueError, match=r"101\.seg.*line 6.*columns 0\.\.99"):
        ds[0]
    with pytest.raises(ValueError, match=r"101\.seg"):
        ds.ground_truths(0)
    # A segmentation of the wrong size.
    write_bsds_seg(bad, np.zeros((16, 12), dtype=np.int64))
    with pytest.raises(ValueError, match=r"101\.seg has \(height, width\) \(16, 12\)"):
        ds[0]


# --------------------------------------------------------------------------
# Mosaics
# --------------------------------------------------------------------------

SMALL = dict(num_train=3, num_test=2, size=(48, 64))


def _digest(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_mosaics_deterministic(tmp_path):
    a = _digest(make_mosaics(tmp_path / "a", 5, **SMALL))
    b = _digest(make_mosaics(tmp_path / "b", 5, **SMALL))
    c = _digest(make_mosaics(tmp_path / "c", 6, **SMALL))
    assert a == b
    jpgs = sorted(k for k in a if k.endswith(".jpg"))
    assert len(jpgs) == 5 and jpgs == sorted(k for k in c if k.endswith(".jpg"))
    assert all(a[k] != c[k] for k in jpgs)
    assert {"iids_train.txt", "iids_test.txt", os.path.join("images", "train", "100001.jpg")} <= set(a)
    # An image does not depend on how many others are made.
    d = _digest(make_mosaics(tmp_path / "d", 5, num_train=1, num_test=1, size=(48, 64)))
    assert all(d[k] == a[k] for k in d if not k.startswith("iids"))
    with pytest.raises(FileExistsError, match="not empty"):
        make_mosaics(tmp_path / "d", 5, **SMALL)


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory):
    return make_mosaics(tmp_path_factory.mktemp("mosaics") / "m", 0, num_train=12, num_test=2)


def test_mosaics_load_through_bsds300(mosaics):
    train, test = BSDS300(mosaics, "train"), Mosaics(mosaics, "val")
    assert (len(train), len(test)) == (12, 2) and train.image_size == test.image_size == (96, 128)
    s = test[0]
    assert s["image"].shape == (3, 96, 128) and s["labels"].shape == (96, 128)
    b = collate_segmentation([train[i] for i in range(4)])
    assert b["image"].shape == (4, 3, 96, 128)
    for i in range(len(train)):
        gts = train.ground_truths(i)
        counts = [int(g.max()) + 1 for g in gts]
        # Several segmentations at different granularities: the finest (true
        # regions, 3..7, the first colour user and the gray one) and coarser
        # merges down to 2.
        assert len(gts) >= 3 and len(set(counts)) >= 2
        assert counts[0] == max(counts) and 3 <= counts[0] <= 7 and min(counts) == 2
        assert np.array_equal(gts[0], gts[-1])  # human/gray is the true map
        # Coarser maps are merges of the finest: each fine region inside one coarse region.
        for g in gts[1:]:
            pairs = np.unique(np.stack([gts[0].ravel(), g.ravel()]), axis=1)
            assert pairs.shape[1] == counts[0]
        # Regions are connected and not tiny.
        from scipy import ndimage

        for r in range(counts[0]):
            assert ndimage.label(gts[0] == r)[1] == 1
            assert (gts[0] == r).mean() >= 0.03


def _nearest_centroid_accuracy(features, labels):
    f = features.reshape(-1, features.shape[-1]).astype(np.float64)
    f = (f - f.mean(0)) / (f.std(0) + 1e-9)
    lab = labels.ravel()
    centroids = np.stack([f[lab == k].mean(0) for k in range(lab.max() + 1)])
    pred = np.argmin(((f[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == lab).mean())


def _separability(image, labels):
    """(accuracy from per-pixel colour, accuracy from local texture
    features) of a nearest-centroid classifier of the regions."""
    from scipy import ndimage

    g = image.mean(axis=2)
    gy, gx = np.gradient(g)
    local = [np.abs(gx), np.abs(gy), np.abs(gx + gy), np.abs(gx - gy), (g - ndimage.uniform_filter(g, 5)) ** 2]
    texture = np.stack([ndimage.uniform_filter(f, 9) for f in local], axis=-1)
    return _nearest_centroid_accuracy(image, labels), _nearest_centroid_accuracy(texture, labels)


def test_mosaic_regions_differ_in_texture_not_colour(mosaics):
    ds = BSDS300(mosaics, "train", augment=False)
    colour, texture, gaps = [], [], []
    control = []
    rng = np.random.default_rng(0)
    for i in range(len(ds)):
        image = ds.read_image(i).numpy().astype(np.float64)
        labels = ds.ground_truths(i)[0]
        c, t = _separability(image, labels)
        colour.append(c)
        texture.append(t)
        g = image.mean(axis=2)
        mu = np.array([g[labels == r].mean() for r in range(labels.max() + 1)])
        sd = np.array([g[labels == r].std() for r in range(labels.max() + 1)])
        gaps.append(np.median([abs(mu[a] - mu[b]) / max(sd[a], sd[b]) for a in range(len(mu)) for b in range(a)]))
        # Control: the same regions in distinct flat colours plus noise, which
        # colour alone does separate (so the check below can fail).
        flat = rng.uniform(0.2, 0.8, size=(labels.max() + 1, 3))[labels] + 0.05 * rng.standard_normal(image.shape)
        control.append(_separability(flat, labels)[0])
    # The region intensities overlap: typical mean gaps are under a std.
    assert np.mean(gaps) < 0.6
    # Per-pixel colour finds the regions poorly; texture does much better.
    assert np.mean(colour) < 0.5
    assert np.mean(texture) > np.mean(colour) + 0.12
    assert np.mean(control) > 0.9


def test_mosaics_root_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("MATBP_CACHE", str(tmp_path / "cache"))
    p = mosaics_root(2, **SMALL)
    assert os.path.dirname(p) == str(tmp_path / "cache")
    assert os.path.basename(p).startswith(f"mosaics-v{data_module.MOSAICS_VERSION}-2-")
    assert os.listdir(tmp_path / "cache") == [os.path.basename(p)]  # no temporary folder left
    stamp = os.stat(os.path.join(p, "iids_train.txt")).st_mtime_ns
    assert mosaics_root(2, **SMALL) == p
    assert os.stat(os.path.join(p, "iids_train.txt")).st_mtime_ns == stamp  # not regenerated
    assert _digest(p) == _digest(make_mosaics(tmp_path / "ref", 2, **SMALL))
    # Mosaics without a root reads the cached copy of its data_seed.
    monkeypatch.setattr(data_module, "mosaics_root", lambda seed=0: mosaics_root(seed, **SMALL))
    ds = Mosaics(split="test", data_seed=2)
    assert ds.root == p and len(ds) == 2 and ds.image_size == (48, 64)
