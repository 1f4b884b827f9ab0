"""Real images that ship inside installed packages (nothing is downloaded).

* ``"photos"`` (:class:`Photos`): patches of ten photographs bundled in
  scikit-image's own data folder (``skimage/data/*.png``). Each photograph is
  a class; a sample is a square crop of it. Three are texture photographs
  (brick, grass, gravel), the others natural photographs whose local
  texture identifies them (camera, coins, moon, text, astronaut, coffee,
  chelsea). All are converted to grayscale and replicated to three channels
  so that colour is not a trivial cue.
* ``"digits"`` (:class:`Digits`): scikit-learn's bundled handwritten digits
  (``load_digits``: 1797 images of 8×8, read from the installed package),
  bilinearly upsampled to 32×32 and replicated to three channels.

The photographs are read directly from the files inside the installed
scikit-image package (never through ``skimage.data``'s download cache), so
the set is identical on every machine with the package, online or not.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import List, Optional, Tuple

import numpy as np
import torch

from . import ImageDataset, check_nonnegative_int

__all__ = ["Photos", "Digits", "PHOTOS", "photo_path"]

_PHOTOS_TAG = 0x9407
_DIGITS_TAG = 0xD161
_SPLIT_CODE = {"train": 0, "val": 1}

# class name -> file in skimage/data. Every one is at least 172×384, so a
# 32×32 crop fits in both the train and the val region.
PHOTOS = {
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "camera": "camera.png",
    "coins": "coins.png",
    "moon": "moon.png",
    "text": "text.png",
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
}

# Train crops lie in the first 75% of the columns minus a gap of one crop
# width, val crops in the last 25%, so no val crop overlaps a train crop.
_TRAIN_FRACTION = 0.75


def _skimage_data_dir() -> str:
    # find_spec locates the package without importing it (skimage's import
    # is slow and not needed to read its PNG files).
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("matbp.datasets.photos needs scikit-image (pip install scikit-image) for its bundled "
                          "photographs")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def photo_path(name: str) -> str:
    """Path of the bundled photograph of class ``name`` inside scikit-image."""
    return os.path.join(_skimage_data_dir(), PHOTOS[name])


@functools.lru_cache(maxsize=None)
def _load_photos() -> Tuple[Tuple[np.ndarray, ...], float, float]:
    """The grayscale photographs (uint8, H×W) and the mean and std of all
    their pixels (in [0, 1]); loaded once per process."""
    from PIL import Image

    images = []
    for name in PHOTOS:
        path = photo_path(name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"matbp.datasets.photos: scikit-image's bundled photograph {path} is missing "
                                    "(reinstall scikit-image)")
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("L"), dtype=np.uint8))
    pixels = np.concatenate([im.ravel() for im in images]).astype(np.float64) / 255.0
    return tuple(images), float(pixels.mean()), float(pixels.std())


class Photos(ImageDataset):
    """Grayscale patches of ten photographs bundled in scikit-image (see the
    module docstring); the class is the photograph.

    Sample ``i`` of a split has label ``i % 10`` and a crop position drawn
    from ``np.random.default_rng([TAG, data_seed, split, i])``: anywhere in the
    rows, and in the columns [0, 0.75·W - size) for train and [0.75·W, W)
    for val. Pixels are normalised with the mean and std of all pixels of the
    ten photographs (the same for every crop and both splits). Augmentation
    (train): a random horizontal flip.

    Options: ``data_seed=0``, ``size=32`` (up to 96), ``num_train=2000``,
    ``num_val=500``.
    """

    name = "photos"

    def __init__(self, split: str, *, seed: int = 0, augment: Optional[bool] = None, data_seed: int = 0,
                 size: int = 32, num_train: int = 2000, num_val: int = 500):
        super().__init__(split, seed, augment)
        num_train, num_val = self._check_generation(data_seed, size, num_train=num_train, num_val=num_val)
        images, self.mean, self.std = _load_photos()
        self._regions = []  # per class: (max row, first column, last column) of the crop's top-left corner
        for name, im in zip(PHOTOS, images):
            h, w = im.shape
            boundary = int(round(_TRAIN_FRACTION * w))
            if split == "train":
                lo, hi = 0, boundary - 2 * self.size
            else:
                lo, hi = boundary, w - self.size
            if hi < lo or h < self.size:
                raise ValueError(f"matbp.datasets.photos: crops of size {self.size} do not fit the {split} region of "
                                 f"photograph {name!r} ({w}×{h}); use a smaller size")
            self._regions.append((h - self.size, lo, hi))
        self.classes: List[str] = list(PHOTOS)
        self.image_size = (self.size, self.size)
        self._length = num_train if split == "train" else num_val
        self._split_code = _SPLIT_CODE[split]

    def crop_box(self, index: int) -> Tuple[int, int, int]:
        """(label, top row, left column) of sample ``index``'s crop."""
        label = index % self.num_classes
        rng = np.random.default_rng([_PHOTOS_TAG, self.data_seed, self._split_code, index])
        max_row, lo, hi = self._regions[label]
        return label, int(rng.integers(0, max_row + 1)), int(rng.integers(lo, hi + 1))

    def _sample(self, index: int, rng: Optional[np.random.Generator]):
        label, top, left = self.crop_box(index)
        images, _, _ = _load_photos()
        crop = images[label][top:top + self.size, left:left + self.size].astype(np.float32)
        if rng is not None and rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = (crop / 255.0 - self.mean) / self.std
        image = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(crop, (3,) + crop.shape), dtype=np.float32))
        return image, label


@functools.lru_cache(maxsize=None)
def _load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images (1797, 8, 8) in [0, 1], labels."""
    # The file load_digits reads (64 pixel values and the label per row), read
    # directly: importing sklearn.datasets costs more than a second, in every
    # DataLoader worker started with spawn.
    spec = importlib.util.find_spec("sklearn")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "digits.csv.gz")
    if path is not None and os.path.isfile(path):
        data = np.loadtxt(path, delimiter=",", dtype=np.float64)
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:
        from sklearn.datasets import load_digits  # another layout: let scikit-learn find its file

        d = load_digits()
        images, target = d.images, d.target
    return (images / 16.0).astype(np.float32), target.astype(np.int64)


def _upsample(images: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.nn.functional.interpolate(x.reshape(-1, 1, *x.shape[-2:]), size=(size, size), mode="bilinear",
                                        align_corners=False)
    return y.reshape(*x.shape[:-2], size, size).numpy()


class Digits(ImageDataset):
    """scikit-learn's bundled 8×8 handwritten digits (ten classes, "0".."9").

    A fixed permutation (``np.random.default_rng([TAG, data_seed])``) puts
    the first 80% of the 1797 images (1437) in train and the rest (360) in
    val. Images are bilinearly upsampled to ``size``×``size`` (default 32)
    and normalised with the mean and std of the training split. Augmentation
    (train): a translation by up to ``jitter`` pixels (default 3) in each
    direction, the uncovered border filled with the background.

    Options: ``data_seed=0``, ``size=32``, ``jitter=3``.
    """

    name = "digits"

    def __init__(self, split: str, *, seed: int = 0, augment: Optional[bool] = None, data_seed: int = 0,
                 size: int = 32, jitter: int = 3):
        super().__init__(split, seed, augment)
        where = "matbp.datasets.digits"
        self._check_generation(data_seed, size)
        self.jitter = check_nonnegative_int(jitter, "jitter", where)
        if self.jitter >= self.size:
            raise ValueError(f"{where}: argument 'jitter' must be smaller than size {self.size}, got {jitter}")
        images, labels = _load_digits()
        order = np.random.default_rng([_DIGITS_TAG, self.data_seed]).permutation(len(images))
        n_train = len(images) * 4 // 5
        train_idx = order[:n_train]
        up = _upsample(images[train_idx], self.size)
        self.mean, self.std = float(up.mean()), float(up.std())
        # Only the 8×8 originals are kept (92 KB), so the dataset pickles small.
        self._indices = np.sort(train_idx if split == "train" else order[n_train:])
        self._labels = labels[self._indices]
        self.classes: List[str] = [str(d) for d in range(10)]
        self.image_size = (self.size, self.size)
        self._length = len(self._indices)

    def _sample(self, index: int, rng: Optional[np.random.Generator]):
        images, _ = _load_digits()
        x = _upsample(images[self._indices[index]], self.size)
        if rng is not None and self.jitter:
            dy, dx = (int(v) for v in rng.integers(-self.jitter, self.jitter + 1, size=2))
            x = _translate(x, dy, dx)
        x = (x - self.mean) / self.std
        image = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(x, (3,) + x.shape), dtype=np.float32))
        return image, int(self._labels[index])


def _translate(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """x shifted by (dy, dx) pixels, zeros (the digits' background) shifted in."""
    h, w = x.shape
    out = np.zeros_like(x)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out
