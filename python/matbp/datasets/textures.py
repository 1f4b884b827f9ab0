"""``"textures"``: built-in synthetic second-order textures.

A classification set that only second-order statistics can solve, made for
the demo and for the paper-comparison experiment (Table 1 on the CPU): in
every class every pixel of every channel has mean 0 and variance 1, so the
global average of the image, or any per-channel mean or variance, carries no
information about the class. The classes differ in

* cross-channel correlation: the three channels are mixed by the Cholesky
  factor L of a class-specific correlation matrix R (unit diagonal), and
* spatial orientation: the noise is smoothed by an anisotropic Gaussian
  kernel, the same shape in every class rotated to a class-specific angle
  (0°, 45°, 90° or 135°), normalised to unit L2 norm so the pixel variance
  stays 1; rotating the kernel leaves the total gradient energy unchanged,
  only its direction changes.

Ten classes pair five correlation matrices with the four orientations so that
no single cue separates them: every correlation matrix is shared by two
classes and every orientation by two or three, and the correlations are
moderate (|ρ| ≤ 0.25 by default), so a class is only identified from both
statistics measured over the whole image.

Each image also gets a random global contrast g = exp(u)/c with u uniform in
[-contrast, contrast] and c = sqrt(E[exp(2u)]) (so E[g²] = 1 and the
per-channel variance over the set stays exactly 1; ``contrast=0`` disables
it). This is the nuisance real images have (illumination, exposure). Log
second-order pooling turns it into an additive multiple of the identity,
log(g²·C) = 2·log(g)·I + log(C), which a linear classifier can ignore, while
average-pooled features scale with g and have to be made invariant by the
network: this is where DeepO2P learns faster than a first-order head.

A sample is z·Lᵀ filtered by the kernel, z white Gaussian noise, times g:

    x[c] = g · Σ_k L[c, k] · (K_θ ∗ z_k)

generated on the fly in ``__getitem__`` from ``np.random.default_rng([TAG,
data_seed, split, i])`` (O(1) per sample, about 0.2 ms at 32×32), so the
data do not depend on the training ``seed``, and train and val come from
different key streams. The label of sample i is ``i % num_classes``
(balanced).

Augmentation (train): the image is the central ``size``×``size`` window of
a field with a ``shift``-pixel border; augmentation takes the window at a
random offset in [-shift, shift]² instead and multiplies the image by a
random sign. Both keep the class statistics exactly (the field is
stationary, and C(-x) = C(x)); flips and rotations would not (they change
the orientation).
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np
import torch

from . import ImageDataset, check_nonnegative_int, check_positive_int

__all__ = ["Textures", "CORRELATIONS", "CLASS_TABLE", "texture_kernel", "correlation_matrix"]

# Keys the data streams, so they never coincide with the [seed, epoch, index]
# augmentation streams or with another dataset's data streams.
_TAG = 0x7E87
_SPLIT_CODE = {"train": 0, "val": 1}

# Off-diagonal correlations (rg, rb, gb) at strength 1; the dataset scales
# them by `strength` (default 0.5).
CORRELATIONS = {
    "independent": (0.0, 0.0, 0.0),
    "positive": (0.5, 0.5, 0.5),
    "alternating": (-0.4, 0.4, -0.4),
    "rg+rb-": (0.5, -0.3, 0.0),
    "rb+gb-": (0.0, 0.3, -0.5),
}

# (correlation, orientation in degrees) of each class. Every correlation
# appears twice, every orientation two or three times.
CLASS_TABLE: Tuple[Tuple[str, int], ...] = (
    ("independent", 0),
    ("independent", 90),
    ("positive", 45),
    ("positive", 135),
    ("alternating", 0),
    ("alternating", 45),
    ("rg+rb-", 90),
    ("rg+rb-", 135),
    ("rb+gb-", 0),
    ("rb+gb-", 90),
)

_SIGMA_MAJOR = 1.5
_SIGMA_MINOR = 1.0
_RADIUS = 5  # ≥ 3·sigma_major: the truncated tail is < 1% of the kernel's energy


def texture_kernel(theta_degrees: float, sigma_major: float = _SIGMA_MAJOR, sigma_minor: float = _SIGMA_MINOR,
                   radius: int = _RADIUS) -> np.ndarray:
    """Anisotropic Gaussian kernel (2r+1, 2r+1), long axis at ``theta`` (degrees
    from the x axis, counter-clockwise with y pointing down), unit L2 norm."""
    ax = np.arange(-radius, radius + 1, dtype=np.float64)
    y, x = np.meshgrid(ax, ax, indexing="ij")
    t = math.radians(theta_degrees)
    u = math.cos(t) * x + math.sin(t) * y
    v = -math.sin(t) * x + math.cos(t) * y
    k = np.exp(-0.5 * ((u / sigma_major) ** 2 + (v / sigma_minor) ** 2))
    return k / np.sqrt((k ** 2).sum())


def correlation_matrix(name: str, strength: float) -> np.ndarray:
    rg, rb, gb = (strength * r for r in CORRELATIONS[name])
    return np.array([[1.0, rg, rb], [rg, 1.0, gb], [rb, gb, 1.0]])


class Textures(ImageDataset):
    """Synthetic second-order textures (see the module docstring).

    Options: ``data_seed=0`` (the data; separate from the augmentation
    ``seed``), ``size=32`` (images are 3×size×size), ``num_train=2000``,
    ``num_val=500``, ``num_classes=10`` (2..10: the first classes of
    :data:`CLASS_TABLE`), ``strength=0.5`` (scale of the channel
    correlations, in [0, 1]), ``contrast=2.0`` (half-width of the log-uniform
    contrast range, 0 for none), ``shift=4`` (translation of the augmentation,
    pixels).
    """

    name = "textures"

    def __init__(self, split: str, *, seed: int = 0, augment: Optional[bool] = None, data_seed: int = 0,
                 size: int = 32, num_train: int = 2000, num_val: int = 500, num_classes: int = 10,
                 strength: float = 0.5, contrast: float = 2.0, shift: int = 4):
        super().__init__(split, seed, augment)
        where = "matbp.datasets.textures"
        num_train, num_val = self._check_generation(data_seed, size, num_train=num_train, num_val=num_val)
        k = check_positive_int(num_classes, "num_classes", where)
        if not 2 <= k <= len(CLASS_TABLE):
            raise ValueError(f"{where}: argument 'num_classes' must be in [2, {len(CLASS_TABLE)}], got {k}")
        if isinstance(strength, bool) or not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"{where}: argument 'strength' must be in [0, 1], got {strength!r}")
        if isinstance(contrast, bool) or not 0.0 <= float(contrast) <= 5.0:
            raise ValueError(f"{where}: argument 'contrast' must be in [0, 5], got {contrast!r}")
        self.shift = check_nonnegative_int(shift, "shift", where)
        self.strength = float(strength)
        self.contrast = float(contrast)
        self.classes: List[str] = [f"{corr}-{angle}deg" for corr, angle in CLASS_TABLE[:k]]
        self.image_size = (self.size, self.size)
        self._length = num_train if split == "train" else num_val
        self._split_code = _SPLIT_CODE[split]
        # Small (k × 11 × 11 and k × 3 × 3), so they travel with the pickle.
        self._kernels = np.stack([texture_kernel(angle) for _, angle in CLASS_TABLE[:k]])
        self._mixing = np.stack([np.linalg.cholesky(correlation_matrix(corr, self.strength))
                                 for corr, _ in CLASS_TABLE[:k]])
        # E[exp(2u)] for u ~ U(-a, a) is sinh(2a)/(2a).
        a = self.contrast
        self._contrast_norm = math.sqrt(math.sinh(2 * a) / (2 * a)) if a > 0 else 1.0

    def field(self, index: int) -> Tuple[np.ndarray, int]:
        """The un-cropped texture of sample ``index``: (3, size+2·shift,
        size+2·shift) float64, and its label."""
        label = index % self.num_classes
        rng = np.random.default_rng([_TAG, self.data_seed, self._split_code, index])
        n = self.size + 2 * self.shift + 2 * _RADIUS
        z = rng.standard_normal((3, n, n))
        # Circular convolution by FFT, keeping only the outputs that did not
        # wrap around (the 'valid' part): every kept pixel is a full kernel's
        # worth of noise, so its variance is exactly 1. (numpy's FFT, not
        # scipy's, whose import would cost each DataLoader worker a second.)
        f = np.fft.irfft2(np.fft.rfft2(z) * np.fft.rfft2(self._kernels[label], s=(n, n)), s=(n, n))
        f = f[:, 2 * _RADIUS:, 2 * _RADIUS:]
        x = np.einsum("ck,khw->chw", self._mixing[label], f)
        if self.contrast > 0:
            x *= math.exp(rng.uniform(-self.contrast, self.contrast)) / self._contrast_norm
        return x, label

    def _sample(self, index: int, rng: Optional[np.random.Generator]):
        x, label = self.field(index)
        s, dy, dx = self.shift, 0, 0
        sign = 1.0
        if rng is not None:
            dy, dx = (int(v) for v in rng.integers(-s, s + 1, size=2))
            sign = -1.0 if rng.random() < 0.5 else 1.0
        window = x[:, s + dy:s + dy + self.size, s + dx:s + dx + self.size]
        image = torch.from_numpy(np.ascontiguousarray(window * sign, dtype=np.float32))
        return image, label
