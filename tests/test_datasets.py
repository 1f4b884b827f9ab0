"""matbp.datasets: interface, determinism, the second-order design of the
textures, the bundled photographs and digits, and COCO instances read from a
tiny COCO-format folder."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from matbp.datasets import DATASETS, build_dataset
from matbp.datasets import coco as coco_module
from matbp.datasets import photos as photos_module
from matbp.datasets import textures as textures_module

# ----------------------------------------------------------------------------- helpers


def _stack(ds, indices=None):
    indices = range(len(ds)) if indices is None else indices
    items = [ds[i] for i in indices]
    return torch.stack([x for x, _ in items]), np.array([y for _, y in items])


def _logm(C):
    w, V = np.linalg.eigh(C)
    return (V * np.log(w)[..., None, :]) @ np.swapaxes(V, -1, -2)


def _first_order_features(X):
    """Per-channel mean and std of each image (6 numbers)."""
    X = X.double().numpy()
    return np.concatenate([X.mean((2, 3)), X.std((2, 3))], 1)


def _second_order_features(X):
    """Scale-free log covariances of each image: the 3×3 channel covariance
    and the 2×2 covariance of (horizontal, vertical) differences, each log
    minus its mean eigenvalue (the textures' random contrast multiplies a
    covariance by g², which shifts its log by 2·log(g)·I)."""
    X = X.double().numpy()
    n = len(X)
    Z = X.reshape(n, 3, -1)
    Z = Z - Z.mean(-1, keepdims=True)
    C = Z @ np.swapaxes(Z, 1, 2) / Z.shape[-1]
    gx = np.diff(X, axis=3)[:, :, :-1, :].reshape(n, -1)
    gy = np.diff(X, axis=2)[:, :, :, :-1].reshape(n, -1)
    G = np.stack([gx, gy], 1)
    G = G @ np.swapaxes(G, 1, 2) / G.shape[-1]
    out = []
    for M, d in ((C, 3), (G, 2)):
        L = _logm(M)
        L = L - (np.trace(L, axis1=1, axis2=2) / d)[:, None, None] * np.eye(d)
        iu = np.triu_indices(d)
        out.append(L[:, iu[0], iu[1]])
    return np.concatenate(out, 1)


def _nearest_class_mean(F_train, y_train, F_val, y_val):
    k = int(y_train.max()) + 1
    means = np.stack([F_train[y_train == c].mean(0) for c in range(k)])
    pred = ((F_val[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    return float((pred == y_val).mean())


# ----------------------------------------------------------------------------- interface


def test_registry_and_argument_errors():
    assert DATASETS == ("textures", "photos", "digits", "coco")
    with pytest.raises(ValueError, match=r"unknown name 'cifar'.*'textures', 'photos', 'digits', 'coco'"):
        build_dataset("cifar", "train")
    with pytest.raises(ValueError, match=r"unknown split 'test'.*'train', 'val'"):
        build_dataset("textures", "test")
    with pytest.raises(TypeError, match=r"no option\(s\) 'sizes'.*'size'"):
        build_dataset("textures", "train", sizes=3)
    with pytest.raises(ValueError, match="seed"):
        build_dataset("textures", "train", seed=-1)
    with pytest.raises(ValueError, match="size"):
        build_dataset("photos", "val", size=97)  # coins' val region is 96 columns wide


@pytest.mark.parametrize("name", ["textures", "photos", "digits"])
def test_interface(name):
    for split, augment in (("train", True), ("val", False)):
        ds = build_dataset(name, split)
        assert ds.augment is augment
        assert ds.num_classes == len(ds.classes) == 10
        assert all(isinstance(c, str) for c in ds.classes)
        assert ds.image_size == (32, 32)
        x, y = ds[len(ds) - 1]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        assert type(y) is int and 0 <= y < ds.num_classes
        assert torch.equal(ds[-1][0], x)
        with pytest.raises(IndexError):
            ds[len(ds)]
    assert (len(build_dataset(name, "train")), len(build_dataset(name, "val"))) == \
        ((1437, 360) if name == "digits" else (2000, 500))
    # roughly zero mean, unit variance per channel
    ds = build_dataset(name, "val")
    X, labels = _stack(ds, range(0, len(ds), 3))
    assert np.abs(X.mean((0, 2, 3)).numpy()).max() < 0.15
    assert np.abs(X.std((0, 2, 3)).numpy() - 1).max() < 0.25
    assert set(labels.tolist()) == set(range(10))


@pytest.mark.parametrize("name", ["textures", "photos", "digits"])
def test_augmentation_is_a_function_of_seed_epoch_index(name):
    ds = build_dataset(name, "train", seed=3)
    idx = [5, 1, 17]
    ds.set_epoch(2)
    a = [ds[i][0] for i in idx]
    b = [ds[i][0] for i in reversed(idx)][::-1]  # another access order
    fresh = build_dataset(name, "train", seed=3)
    fresh.set_epoch(2)
    c = [fresh[i][0] for i in idx]
    clone = pickle.loads(pickle.dumps(ds))
    d = [clone[i][0] for i in idx]
    for u, v, w, z in zip(a, b, c, d):
        assert torch.equal(u, v) and torch.equal(u, w) and torch.equal(u, z)
    # other epochs (and seeds) augment differently
    per_epoch = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        per_epoch.append(torch.stack([ds[i][0] for i in idx]))
    assert any(not torch.equal(per_epoch[0], p) for p in per_epoch[1:])
    other = build_dataset(name, "train", seed=4)
    other.set_epoch(2)
    assert any(not torch.equal(other[i][0], u) for i, u in zip(idx, a))
    # without augmentation the epoch does not matter
    val = build_dataset(name, "val")
    x0 = val[3][0]
    val.set_epoch(7)
    assert torch.equal(val[3][0], x0)
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)


def test_dataloader_workers_give_the_same_batches():
    ds = build_dataset("textures", "train", num_train=24, seed=1)
    ds.set_epoch(3)

    def batches(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False, num_workers=workers)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 3
    for (x0, y0), (x1, y1) in zip(serial, parallel):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


# ----------------------------------------------------------------------------- textures


@pytest.fixture(scope="module")
def flat_textures():
    """Train/val textures without the random contrast, no augmentation."""
    tr = build_dataset("textures", "train", augment=False, num_train=1000, contrast=0.0)
    va = build_dataset("textures", "val", contrast=0.0)
    return _stack(tr), _stack(va)


def test_textures_first_order_statistics_agree_second_order_differ(flat_textures):
    (X, y), _ = flat_textures
    X = X.double().numpy()
    means = np.stack([X[y == c].mean((0, 2, 3)) for c in range(10)])
    variances = np.stack([X[y == c].var((0, 2, 3)) for c in range(10)])
    # 100 images of ~1024/12 effectively independent pixels per class
    assert np.abs(means).max() < 0.05
    assert np.abs(variances - 1).max() < 0.1
    # the class channel correlations are the documented ones, and differ
    corr = np.stack([np.corrcoef(X[y == c].transpose(1, 0, 2, 3).reshape(3, -1)) for c in range(10)])
    expected = np.stack([textures_module.correlation_matrix(name, 0.5) for name, _ in textures_module.CLASS_TABLE])
    assert np.abs(corr - expected).max() < 0.06
    assert np.abs(expected[:, None] - expected[None]).max() >= 0.4
    # orientation: the long axis at 0° smooths along x (small horizontal differences)
    gx = np.stack([np.diff(X[y == c], axis=3).var() for c in range(10)])
    gy = np.stack([np.diff(X[y == c], axis=2).var() for c in range(10)])
    angles = np.array([a for _, a in textures_module.CLASS_TABLE])
    assert (gx[angles == 0] < 0.8 * gy[angles == 0]).all()
    assert (gy[angles == 90] < 0.8 * gx[angles == 90]).all()
    diag = (gx + gy)[(angles == 45) | (angles == 135)]
    assert np.abs(diag / (gx + gy).mean() - 1).max() < 0.05  # same total gradient energy at every angle


def test_textures_contrast_only_rescales_with_unit_mean_square():
    plain = build_dataset("textures", "val", contrast=0.0)
    ds = build_dataset("textures", "val")
    gains = []
    for i in range(200):
        x, x0 = ds.field(i)[0], plain.field(i)[0]
        g = (x * x0).sum() / (x0 * x0).sum()
        assert g > 0 and np.allclose(x, g * x0, rtol=1e-10, atol=1e-12)
        gains.append(g)
    gains = np.array(gains)
    assert 0.5 < (gains ** 2).mean() < 1.5  # E[g²] = 1 (sampling error ~0.12 with 200)
    assert gains.max() / gains.min() > 10  # a wide range of contrasts


def test_textures_nearest_class_mean(flat_textures):
    """Second-order features classify well above chance; first-order ones
    stay at chance (with and without the random contrast)."""
    (Xt, yt), (Xv, yv) = flat_textures
    acc_cov = _nearest_class_mean(_second_order_features(Xt), yt, _second_order_features(Xv), yv)
    acc_first = _nearest_class_mean(_first_order_features(Xt), yt, _first_order_features(Xv), yv)
    assert acc_cov > 0.7, acc_cov
    assert acc_first < 0.2, acc_first
    tr = build_dataset("textures", "train", augment=False, num_train=500)
    va = build_dataset("textures", "val", num_val=300)
    (Xt, yt), (Xv, yv) = _stack(tr), _stack(va)
    acc_cov = _nearest_class_mean(_second_order_features(Xt), yt, _second_order_features(Xv), yv)
    acc_first = _nearest_class_mean(_first_order_features(Xt), yt, _first_order_features(Xv), yv)
    assert acc_cov > 0.7, acc_cov
    assert acc_first < 0.2, acc_first


def test_textures_determinism_and_disjoint_splits():
    a = build_dataset("textures", "val")
    b = build_dataset("textures", "val", seed=9)  # the training seed does not change the data
    assert torch.equal(a[11][0], b[11][0])
    assert a[11][1] == 11 % 10
    other = build_dataset("textures", "val", data_seed=1)
    assert not torch.equal(a[11][0], other[11][0])
    train = build_dataset("textures", "train", augment=False)
    X_train = torch.nn.functional.normalize(_stack(train, range(100))[0].flatten(1), dim=1)
    X_val = torch.nn.functional.normalize(_stack(a, range(100))[0].flatten(1), dim=1)
    assert (X_val @ X_train.T).abs().max() < 0.5  # no val image resembles a train image (at any contrast)
    # augmentation: the window moves by up to `shift` pixels and may change sign
    aug = build_dataset("textures", "train")
    field, _ = train.field(4)
    x = aug[4][0].double().numpy()
    found = [(dy, dx, s) for dy in range(-4, 5) for dx in range(-4, 5) for s in (1, -1)
             if np.allclose(x, s * field[:, 4 + dy:36 + dy, 4 + dx:36 + dx], atol=1e-5)]
    assert len(found) == 1
    assert train[4][0].shape == (3, 32, 32)
    assert build_dataset("textures", "train", size=20, num_classes=4)[3][0].shape == (3, 20, 20)


# ----------------------------------------------------------------------------- photos and digits


def test_photos_come_from_the_installed_package():
    import skimage
    import skimage.data

    data_dir = os.path.join(os.path.dirname(skimage.__file__), "data")
    for name in photos_module.PHOTOS:
        path = photos_module.photo_path(name)
        assert os.path.dirname(path) == data_dir and os.path.isfile(path)
    images, mean, std = photos_module._load_photos()
    assert np.array_equal(images[list(photos_module.PHOTOS).index("brick")], skimage.data.brick())
    assert 0.2 < mean < 0.8 and 0.1 < std < 0.5


def test_photos_crops_and_splits():
    train = build_dataset("photos", "train")
    val = build_dataset("photos", "val")
    images, mean, std = photos_module._load_photos()
    # val crop content is the photograph's pixels, grayscale in all three channels
    for i in (0, 7, 13):
        label, top, left = val.crop_box(i)
        x, y = val[i]
        assert y == label == i % 10
        assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
        raw = images[label][top:top + 32, left:left + 32] / 255.0
        assert np.allclose(x[0].double().numpy() * std + mean, raw, atol=1e-5)
    # train crops end a crop width before the 75% column, val crops start there
    for ds, is_train in ((train, True), (val, False)):
        for i in range(len(ds)):
            label, top, left = ds.crop_box(i)
            h, w = images[label].shape
            boundary = round(0.75 * w)
            assert 0 <= top <= h - 32
            if is_train:
                assert 0 <= left and left + 32 <= boundary - 32
            else:
                assert boundary <= left <= w - 32
    # augmentation: a horizontal flip or nothing
    plain = build_dataset("photos", "train", augment=False)
    flips = []
    for epoch in range(6):
        train.set_epoch(epoch)
        a, b = train[5][0], plain[5][0]
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
        flips.append(not torch.equal(a, b))
    assert any(flips) and not all(flips)
    assert not torch.equal(build_dataset("photos", "val", data_seed=1)[0][0], val[0][0])


def test_digits_split_and_jitter():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, target = photos_module._load_digits()
    assert np.array_equal(images * 16, digits.images) and np.array_equal(target, digits.target)
    train, val = build_dataset("digits", "train"), build_dataset("digits", "val")
    assert sorted(train._indices.tolist() + val._indices.tolist()) == list(range(1797))
    assert not set(train._indices.tolist()) & set(val._indices.tolist())
    assert train.classes == [str(d) for d in range(10)]
    for i in (0, 100, 359):
        assert val[i][1] == digits.target[val._indices[i]]
    assert not np.array_equal(build_dataset("digits", "val", data_seed=1)._indices, val._indices)
    # augmentation = an integer translation of the un-augmented image, by at most `jitter`
    plain = build_dataset("digits", "train", augment=False)
    background = (0.0 - plain.mean) / plain.std
    x0 = plain[3][0][0].numpy()
    for epoch in range(3):
        train.set_epoch(epoch)
        x = train[3][0][0].numpy()
        matches = []
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                shifted = np.full_like(x0, background)
                shifted[max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)] = \
                    x0[max(-dy, 0):32 + min(-dy, 0), max(-dx, 0):32 + min(-dx, 0)]
                if np.allclose(x, shifted, atol=1e-5):
                    matches.append((dy, dx))
        assert matches


# ----------------------------------------------------------------------------- COCO

# (file, size, background, [(annotation id, category id, bbox, colour, iscrowd)])
_COLOURS = {"red": (220, 20, 30), "green": (20, 200, 40), "blue": (30, 40, 230), "yellow": (240, 220, 10)}
_IMAGES = [
    (1, "000000000001.png", (120, 80), [(1, 5, [10, 20, 40, 30], "red", 0), (2, 1, [60, 10, 20, 50], "green", 0)]),
    (2, "000000000002.png", (64, 64), [(3, 90, [0, 0, 10, 10], None, 1), (4, 90, [5, 5, 30, 30], "blue", 0)]),
    # annotation 6 sticks out of the image (clipped to 30×50); 5 is degenerate
    (3, "000000000003.png", (100, 150), [(5, 1, [10, 10, 0, 5], None, 0), (6, 5, [70, 100, 40, 60], "yellow", 0)]),
]


def _write_coco(root, split="val"):
    from PIL import Image, ImageDraw

    os.makedirs(root / "annotations", exist_ok=True)
    os.makedirs(root / f"{split}2017", exist_ok=True)
    images, annotations = [], []
    for image_id, file_name, (w, h), anns in _IMAGES:
        im = Image.new("RGB", (w, h), (255, 255, 255))
        draw = ImageDraw.Draw(im)
        for ann_id, cat, (x, y, bw, bh), colour, crowd in anns:
            if colour is not None:
                # right half darker, so a flip is visible
                draw.rectangle([x, y, x + bw - 1, y + bh - 1], fill=_COLOURS[colour])
                draw.rectangle([x + bw // 2, y, x + bw - 1, y + bh - 1], fill=tuple(c // 2 for c in _COLOURS[colour]))
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, y, bw, bh],
                                "area": bw * bh, "iscrowd": crowd, "segmentation": [[x, y, x + bw, y, x + bw, y + bh]]})
        im.save(root / f"{split}2017" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
    categories = [{"id": 90, "name": "gamma"}, {"id": 1, "name": "alpha"}, {"id": 5, "name": "beta"}]
    with open(root / "annotations" / f"instances_{split}2017.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return root


@pytest.fixture
def coco_root(tmp_path):
    _write_coco(tmp_path, "val")
    return _write_coco(tmp_path, "train")


def _content_box(x):
    """(top, left, bottom, right) of the non-padding region of a normalised canvas."""
    mask = (np.asarray(x) != 0).any(0)
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _denormalise(x):
    return x.numpy() * coco_module.IMAGENET_STD[:, None, None] + coco_module.IMAGENET_MEAN[:, None, None]


def test_coco_samples_labels_and_crops(coco_root, capsys):
    ds = build_dataset("coco", "val", root=str(coco_root))
    assert "loading annotations" not in capsys.readouterr().out  # pycocotools' prints are silenced
    assert ds.classes == ["alpha", "beta", "gamma"] and ds.num_classes == 3
    assert ds.image_size == (227, 227)
    assert len(ds) == 4  # not the crowd (3) nor the degenerate box (5)
    assert ds.annotation_ids.tolist() == [1, 2, 4, 6]
    assert [ds[i][1] for i in range(4)] == [1, 0, 2, 1]
    expected_size = {1: (150, 200), 2: (200, 80), 4: (200, 200), 6: (200, 120)}  # (h, w) after resizing
    colours = {1: "red", 2: "green", 4: "blue", 6: "yellow"}
    for i, ann_id in enumerate([1, 2, 4, 6]):
        x, _ = ds[i]
        assert x.shape == (3, 227, 227) and x.dtype == torch.float32
        top, left, bottom, right = _content_box(x)
        h, w = expected_size[ann_id]
        assert (bottom - top, right - left) == (h, w)
        assert max(h, w) == 200
        assert (top, left) == ((227 - h) // 2, (227 - w) // 2)  # val: centred
        rgb = _denormalise(x)
        # left quarter of the instance: its colour; right quarter: the darker half
        y_mid = (top + bottom) // 2
        left_px = rgb[:, y_mid, left + w // 4] * 255
        right_px = rgb[:, y_mid, right - 1 - w // 4] * 255
        assert np.allclose(left_px, _COLOURS[colours[ann_id]], atol=2)
        assert np.allclose(right_px, [c // 2 for c in _COLOURS[colours[ann_id]]], atol=2)
        assert torch.equal(ds[i][0], x)  # val: deterministic
    ds.set_epoch(5)
    assert torch.equal(ds[3][0], x)  # no augmentation: the epoch does not matter
    capped = build_dataset("coco", "val", root=str(coco_root), max_samples=2)
    assert capped.annotation_ids.tolist() == [1, 2]
    # min_size applies to the annotated box: only annotation 6 (40×60) is ≥ 35 both ways
    assert build_dataset("coco", "val", root=str(coco_root), min_size=35).annotation_ids.tolist() == [6]


def test_coco_train_augmentation(coco_root):
    val = build_dataset("coco", "val", root=str(coco_root))
    train = build_dataset("coco", "train", root=str(coco_root), seed=2)
    assert len(train) == 4 and train.augment
    i = 0  # annotation 1: 200×150 after resizing, centred at (38, 13)
    reference = val[i][0]
    rt, rl, rb, rr = _content_box(reference)
    content = reference[:, rt:rb, rl:rr]
    seen = set()
    for epoch in range(8):
        train.set_epoch(epoch)
        x = train[i][0]
        assert torch.equal(x, train[i][0])  # same (seed, epoch, index), same sample
        t, l, b, r = _content_box(x)
        assert (b - t, r - l) == (rb - rt, rr - rl)
        dy, dx = t - rt, l - rl
        assert abs(dy) <= 8 and abs(dx) <= 8
        crop = x[:, t:b, l:r]
        flipped = torch.equal(crop, content.flip(-1))
        assert flipped or torch.equal(crop, content)
        seen.add((dy, dx, flipped))
    assert len(seen) > 3  # set_epoch changes the augmentation
    assert {f for _, _, f in seen} == {True, False}
    # the jitter is clipped so the crop stays inside: a 200×200 instance moves by at most 13 px
    j = 2  # annotation 4 (200×200)
    for epoch in range(8):
        train.set_epoch(epoch)
        t, l, b, r = _content_box(train[j][0])
        assert 0 <= t and b <= 227 and 0 <= l and r <= 227
    clone = pickle.loads(pickle.dumps(train))  # DataLoader workers
    assert all(torch.equal(clone[k][0], train[k][0]) for k in range(4))
    other = build_dataset("coco", "train", root=str(coco_root), seed=3)
    other.set_epoch(7)
    assert any(not torch.equal(other[k][0], train[k][0]) for k in range(4))


def test_coco_errors(coco_root, tmp_path):
    with pytest.raises(ValueError, match="coco.*--data-root"):
        build_dataset("coco", "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    expected = os.path.join(str(empty), "annotations", "instances_val2017.json")
    with pytest.raises(FileNotFoundError, match="instances_val2017.json") as info:
        build_dataset("coco", "val", root=str(empty))
    assert expected in str(info.value) and "train2017/" in str(info.value)
    ds = build_dataset("coco", "val", root=str(coco_root))
    os.remove(coco_root / "val2017" / "000000000002.png")
    ds[0]
    with pytest.raises(FileNotFoundError, match=r"val2017.000000000002\.png"):
        ds[2]
