"""Image-classification datasets for training DeepO2P (paper §6.1, Table 1).

``build_dataset(name, split, root=None, seed=0, augment=None, **options)``
returns a map-style :class:`torch.utils.data.Dataset` with ``name`` in
:data:`DATASETS`:

* ``"textures"``: built-in synthetic second-order textures, generated on the
  fly (:mod:`matbp.datasets.textures`). Classes share every first-order
  statistic and differ only in cross-channel and orientation correlation, the
  statistics second-order pooling sees directly.
* ``"photos"``: 32×32 grayscale patches of photographs bundled inside
  scikit-image (:mod:`matbp.datasets.photos`).
* ``"digits"``: scikit-learn's bundled 8×8 handwritten digits, upsampled to
  32×32 (:mod:`matbp.datasets.photos`).
* ``"coco"``: COCO 2017 instances, each annotation's box cropped, resized and
  padded to 227×227, the paper's setting (:mod:`matbp.datasets.coco`;
  needs ``root``).

Nothing is downloaded: the first three are generated or read from files
installed with scikit-image / scikit-learn, and COCO is read from ``root``.

Every dataset has ``classes`` (names), ``num_classes``, ``image_size``
(H, W), ``len()``, and ``ds[i] -> (image, label)`` with ``image`` a float32
tensor (3, H, W), normalised per channel (roughly zero mean, unit variance),
and ``label`` an int in ``[0, num_classes)``. ``split`` is ``"train"`` or
``"val"``; ``augment`` defaults to ``split == "train"``.

Augmentation is a pure function of ``(seed, epoch, index)``: sample ``i``
draws from ``np.random.default_rng([seed, epoch, i])``, and ``set_epoch``
changes the epoch. So a sample does not depend on which DataLoader worker or
rank loads it, in which order, or what was loaded before, and runs resume
exactly. The data themselves (texture noise, patch positions, the digits'
train/val split) depend only on the ``data_seed`` option, so every training
``seed`` sees the same data.

The modules of the datasets import their dependencies (scipy, Pillow,
scikit-learn, pycocotools) only when their dataset is built.
"""

from __future__ import annotations

import importlib
import inspect
import operator
from typing import Any, List, Optional, Tuple

import numpy as np
import torch

__all__ = ["DATASETS", "SEGMENTATION_DATASETS", "SPLITS", "build_dataset", "ImageDataset",
           "collate_segmentation"]

DATASETS: Tuple[str, ...] = ("textures", "photos", "digits", "coco")
# Segmentation (DeepNCuts): BSDS300-layout folders; ds[i] is a dict, batched
# by collate_segmentation. Their splits are "train" and "test" ("val" reads "test").
SEGMENTATION_DATASETS: Tuple[str, ...] = ("bsds300", "mosaics")
SPLITS: Tuple[str, ...] = ("train", "val")

# name -> (module, class); imported on first use so that `import
# matbp.datasets` costs nothing and a missing optional dependency only
# affects its own dataset.
_REGISTRY = {
    "textures": ("textures", "Textures"),
    "photos": ("photos", "Photos"),
    "digits": ("photos", "Digits"),
    "coco": ("coco", "CocoInstances"),
    "bsds300": ("bsds", "BSDS300"),
    "mosaics": ("bsds", "Mosaics"),
}


def collate_segmentation(batch):
    """See :func:`matbp.datasets.bsds.collate_segmentation`."""
    from .bsds import collate_segmentation as collate

    return collate(batch)


def _choices(values) -> str:
    return ", ".join(repr(v) for v in values)


def check_split(split, where: str) -> str:
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"{where}: unknown split {split!r}; choose one of {_choices(SPLITS)}")
    return split


def check_nonnegative_int(value, argument: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{where}: argument {argument!r} must be a non-negative integer, got {value!r}")
    return int(value)


def check_positive_int(value, argument: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: argument {argument!r} must be a positive integer, got {value!r}")
    return int(value)


class ImageDataset(torch.utils.data.Dataset):
    """Common behaviour of the datasets: split, seed, epoch, indexing.

    Subclasses set ``classes``, ``image_size`` and ``_length`` in
    ``__init__`` and implement ``_sample(index, rng)``, where ``rng`` is the
    augmentation generator of ``(seed, epoch, index)``, or ``None`` without
    augmentation.
    """

    name = ""
    classes: List[str]
    image_size: Tuple[int, int]
    _length: int

    def __init__(self, split: str, seed: int = 0, augment: Optional[bool] = None):
        where = f"matbp.datasets.{self.name}"
        self.split = check_split(split, where)
        self.seed = check_nonnegative_int(seed, "seed", where)
        self.augment = (split == "train") if augment is None else bool(augment)
        self.epoch = 0

    def _check_generation(self, data_seed: int, size: int, **counts: int) -> List[int]:
        """For the generated datasets: sets ``data_seed`` and ``size`` (the
        images' side) and returns the ``counts`` (name=value), checked positive."""
        where = f"matbp.datasets.{self.name}"
        self.data_seed = check_nonnegative_int(data_seed, "data_seed", where)
        self.size = check_positive_int(size, "size", where)
        return [check_positive_int(v, k, where) for k, v in counts.items()]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        """Selects the augmentation of this epoch (see the module docstring)."""
        self.epoch = check_nonnegative_int(epoch, "epoch", f"matbp.datasets.{self.name}.set_epoch")

    def __len__(self) -> int:
        return self._length

    def augmentation_rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index) -> Tuple[torch.Tensor, int]:
        i = operator.index(index)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"matbp.datasets.{self.name}: index {index} out of range for {self._length} samples")
        rng = self.augmentation_rng(i) if self.augment else None
        image, label = self._sample(i, rng)
        return image, int(label)

    def _sample(self, index: int, rng: Optional[np.random.Generator]) -> Tuple[torch.Tensor, int]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split!r}, samples={len(self)}, classes={self.num_classes}, "
                f"image_size={self.image_size}, augment={self.augment}, seed={self.seed}, epoch={self.epoch})")


def _option_names(cls) -> List[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
            and p.name not in ("seed", "augment")]


def build_dataset(name: str, split: str, root: Optional[str] = None, seed: int = 0,
                  augment: Optional[bool] = None, **options: Any) -> ImageDataset:
    """The dataset ``name`` (one of :data:`DATASETS`), split ``split``
    ("train" or "val").

    ``root``: the data folder (``"coco"`` only, where it is required; the
    other datasets ignore it). ``seed``: the augmentation seed. ``augment``:
    whether to augment (default: for the train split). ``options``: the
    dataset's own keyword options (``data_seed``, ``size``, ``num_train``,
    ...; see each class).
    """
    where = "matbp.datasets.build_dataset"
    if not isinstance(name, str) or name not in DATASETS + SEGMENTATION_DATASETS:
        raise ValueError(f"{where}: unknown name {name!r}; choose one of {_choices(DATASETS + SEGMENTATION_DATASETS)}")
    if name in SEGMENTATION_DATASETS:
        if split not in ("train", "val", "test"):
            raise ValueError(f"{where}: unknown split {split!r}; choose one of 'train', 'test' ('val' reads 'test')")
    else:
        check_split(split, where)
    module, attr = _REGISTRY[name]
    cls = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    accepted = _option_names(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"{where}: dataset {name!r} has no option(s) {_choices(unknown)}; "
                        f"its options are {_choices(accepted)}")
    if name in ("coco", "bsds300", "mosaics"):
        return cls(root, split, seed=seed, augment=augment, **options)
    return cls(split, seed=seed, augment=augment, **options)
