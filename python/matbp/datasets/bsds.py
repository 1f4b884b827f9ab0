"""BSDS300 (Martin et al. 2001) for DeepNCuts (paper §6.2), and the built-in
texture mosaics in the same layout.

A BSDS300 folder (``root``) holds::

    images/train/<iid>.jpg, images/test/<iid>.jpg
    human/color/<uid>/<iid>.seg, human/gray/<uid>/<iid>.seg
    iids_train.txt, iids_test.txt        (one image id per line)

Every ``.seg`` file of an image, whether from the colour or the grayscale
presentation, is a human segmentation of it (:func:`matbp.data.read_bsds_seg`).

:class:`BSDS300` (``"bsds300"``) reads such a folder; :class:`Mosaics`
(``"mosaics"``) is the same class on the built-in texture mosaics of
:func:`matbp.data.make_mosaics`, generated once into a cache folder
(:func:`matbp.data.mosaics_root`) when no ``root`` is given.

``ds[i]`` is a dict: ``image`` (3, H, W) float32 normalised with the
ImageNet mean and std, ``labels`` (H, W) int64 (one human segmentation,
labels 0..S-1), ``index`` i. Training (``augment``, the default for the
train split) draws the segmentation and a horizontal flip of image and labels
from ``np.random.default_rng([seed, epoch, i])``, as the classification
datasets draw their augmentation; without augmentation ``labels`` is the
first segmentation (in the order of :meth:`BSDS300.seg_paths`) and nothing is
flipped. ``ds.ground_truths(i)`` gives all segmentations, for the covering.

Images may differ in size (BSDS300 has 481×321 and 321×481 images), so
batches are made by :func:`collate_segmentation`, which stacks a batch whose
images all have one size and raises otherwise (use batch size 1).
"""

from __future__ import annotations

import operator
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import check_nonnegative_int

__all__ = ["BSDS300", "Mosaics", "collate_segmentation", "BSDS_SPLITS", "IMAGENET_MEAN", "IMAGENET_STD"]

#: Splits of a BSDS300 folder; "val" (what the training engine asks for) is
#: read as "test".
BSDS_SPLITS: Tuple[str, ...] = ("train", "test")
_SPLIT_ALIASES = {"train": "train", "test": "test", "val": "test"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_SEG_KINDS = ("color", "gray")
_LAYOUT = ("images/{train,test}/<iid>.jpg, human/{color,gray}/<uid>/<iid>.seg, "
           "iids_{train,test}.txt")


def _uid_key(uid: str):
    return (0, int(uid), uid) if uid.isdigit() else (1, 0, uid)


class BSDS300(torch.utils.data.Dataset):
    """A BSDS300-layout folder as a map-style dataset (see the module
    docstring).

    Args:
        root: the folder holding ``iids_{train,test}.txt``, ``images/`` and
            ``human/``.
        split: ``"train"`` or ``"test"``; ``"val"`` is read as ``"test"``
            (``self.split`` is then ``"test"``).
        seed: the augmentation seed.
        augment: draw a random human segmentation and a random horizontal
            flip per sample (default: for the train split).

    Attributes: ``root``, ``split``, ``iids`` (list of str, in the order of
    ``iids_<split>.txt``), ``image_size`` ((H, W) when every image has that
    size, else None), ``image_sizes`` (per image), ``seed``, ``augment``,
    ``epoch``.

    Every file is checked when the dataset is built (images exist and their
    headers read, every iid has at least one ``.seg``); ``.seg`` files are
    parsed when a sample is loaded.

    Raises:
        FileNotFoundError: ``root`` or ``iids_<split>.txt`` missing (the
            message gives the expected layout), an iid without an image
            (naming ``images/<split>/<iid>.jpg``) or without any ``.seg``
            (naming ``human/{color,gray}/*/<iid>.seg``).
        ValueError: an unknown split, an empty or malformed iids file, a
            malformed ``.seg`` file or one whose size differs from its
            image's (naming the file; raised when it is read).
    """

    name = "bsds300"

    def __init__(self, root, split: str, *, seed: int = 0, augment: Optional[bool] = None):
        where = f"matbp.datasets.{self.name}"
        if not isinstance(split, str) or split not in _SPLIT_ALIASES:
            raise ValueError(f"{where}: unknown split {split!r}; choose 'train' or 'test' ('val' reads 'test')")
        self.split = _SPLIT_ALIASES[split]
        self.seed = check_nonnegative_int(seed, "seed", where)
        self.augment = (self.split == "train") if augment is None else bool(augment)
        self.epoch = 0
        if root is None:
            raise ValueError(f"{where}: a root folder in the BSDS300 layout is required ({_LAYOUT})")
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"{where}: the folder {self.root} does not exist; expected a BSDS300 folder "
                                    f"with {_LAYOUT}")
        iids_path = os.path.join(self.root, f"iids_{self.split}.txt")
        if not os.path.isfile(iids_path):
            raise FileNotFoundError(f"{where}: {iids_path} is missing; {self.root} is not a BSDS300 folder "
                                    f"(expected {_LAYOUT})")
        with open(iids_path, encoding="utf-8") as f:
            iids = [line.strip() for line in f if line.strip()]
        for iid in iids:
            if os.sep in iid or "/" in iid or len(iid.split()) != 1:
                raise ValueError(f"{where}: {iids_path}: {iid!r} is not an image id (one id per line)")
        if not iids:
            raise ValueError(f"{where}: {iids_path} lists no image ids")
        if len(set(iids)) != len(iids):
            dup = next(i for i in iids if iids.count(i) > 1)
            raise ValueError(f"{where}: {iids_path} lists image id {dup!r} twice")
        self.iids: List[str] = iids

        segs = self._scan_segs(set(iids))
        self._image_paths: List[str] = []
        self._seg_paths: List[Tuple[str, ...]] = []
        self.image_sizes: List[Tuple[int, int]] = []
        from PIL import Image

        for iid in iids:
            path = self._find_image(iid)
            if iid not in segs:
                raise FileNotFoundError(
                    f"{where}: image {iid} has no human segmentation: no "
                    f"{os.path.join(self.root, 'human', '{color,gray}', '*', iid + '.seg')}")
            try:
                with Image.open(path) as im:
                    w, h = im.size
            except OSError as e:
                raise ValueError(f"{where}: cannot read image {path}: {e}") from e
            self._image_paths.append(path)
            self._seg_paths.append(tuple(segs[iid]))
            self.image_sizes.append((h, w))
        self.image_size: Optional[Tuple[int, int]] = (
            self.image_sizes[0] if len(set(self.image_sizes)) == 1 else None)

    # -- layout ---------------------------------------------------------

    def _find_image(self, iid: str) -> str:
        base = os.path.join(self.root, "images", self.split, iid)
        for ext in _IMAGE_EXTENSIONS:
            if os.path.isfile(base + ext):
                return base + ext
        raise FileNotFoundError(f"matbp.datasets.{self.name}: image {iid} listed in iids_{self.split}.txt has no "
                                f"image file {base}.jpg")

    def _scan_segs(self, wanted) -> Dict[str, List[str]]:
        """iid -> its .seg paths: human/color/* before human/gray/*, users in
        increasing (numeric) order."""
        out: Dict[str, List[str]] = {}
        for kind in _SEG_KINDS:
            top = os.path.join(self.root, "human", kind)
            if not os.path.isdir(top):
                continue
            for uid in sorted((e.name for e in os.scandir(top) if e.is_dir()), key=_uid_key):
                folder = os.path.join(top, uid)
                for entry in os.scandir(folder):
                    stem, ext = os.path.splitext(entry.name)
                    if ext == ".seg" and stem in wanted:
                        out.setdefault(stem, []).append(os.path.join(folder, entry.name))
        return out

    def image_path(self, index: int) -> str:
        return self._image_paths[self._index(index)]

    def seg_paths(self, index: int) -> Tuple[str, ...]:
        """The ``.seg`` files of image ``index``: colour before gray, users
        in increasing order."""
        return self._seg_paths[self._index(index)]

    # -- reading --------------------------------------------------------

    def _read_seg(self, index: int, path: str) -> np.ndarray:
        from ..data import read_bsds_seg

        where = f"matbp.datasets.{self.name}"
        try:
            labels = read_bsds_seg(path)
        except ValueError as e:
            raise ValueError(f"{where}: human segmentation {path} of image {self.iids[index]} cannot be read: "
                             f"{e}") from e
        if labels.shape != self.image_sizes[index]:
            raise ValueError(f"{where}: human segmentation {path} has (height, width) {labels.shape} but image "
                             f"{self._image_paths[index]} has {self.image_sizes[index]}")
        return labels

    def ground_truths(self, index: int) -> List[np.ndarray]:
        """All human segmentations of image ``index``: (H, W) int64 maps, in
        the order of :meth:`seg_paths` (never flipped)."""
        i = self._index(index)
        return [self._read_seg(i, p) for p in self._seg_paths[i]]

    def read_image(self, index: int) -> torch.Tensor:
        """Image ``index`` as read, (H, W, 3) float32 in [0, 1]
        (un-normalised, never flipped)."""
        from ..data import read_image

        i = self._index(index)
        image = read_image(self._image_paths[i])
        if tuple(image.shape[:2]) != self.image_sizes[i]:  # the file changed since the dataset was built
            raise ValueError(f"matbp.datasets.{self.name}: image {self._image_paths[i]} is now "
                             f"{tuple(image.shape[:2])}, was {self.image_sizes[i]}")
        return image

    # -- dataset protocol -----------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Selects the augmentation of this epoch."""
        self.epoch = check_nonnegative_int(epoch, "epoch", f"matbp.datasets.{self.name}.set_epoch")

    def augmentation_rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __len__(self) -> int:
        return len(self.iids)

    def _index(self, index) -> int:
        i = operator.index(index)
        n = len(self.iids)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"matbp.datasets.{self.name}: index {index} out of range for {n} images")
        return i

    def __getitem__(self, index) -> Dict[str, object]:
        i = self._index(index)
        paths = self._seg_paths[i]
        flip = False
        k = 0
        if self.augment:
            rng = self.augmentation_rng(i)
            k = int(rng.integers(len(paths)))
            flip = bool(rng.random() < 0.5)
        labels = self._read_seg(i, paths[k])
        image = self.read_image(i).numpy()
        if flip:
            image, labels = image[:, ::-1], labels[:, ::-1]
        mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
        std = np.asarray(IMAGENET_STD, dtype=np.float32)
        x = ((image - mean) / std).transpose(2, 0, 1)
        return {"image": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
                "index": i}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={self.root!r}, split={self.split!r}, images={len(self)}, "
                f"image_size={self.image_size}, augment={self.augment}, seed={self.seed}, epoch={self.epoch})")


class Mosaics(BSDS300):
    """The built-in texture mosaics (:func:`matbp.data.make_mosaics`) as a
    :class:`BSDS300`.

    ``root=None`` (the default) reads ``mosaics_root(data_seed)``,
    generating the default set (40 train / 20 test images of 96×128) into
    the cache on first use; a ``root`` reads mosaics (or any BSDS300 folder)
    written there. ``data_seed`` selects the generated set and is separate
    from the augmentation ``seed``.
    """

    name = "mosaics"

    def __init__(self, root=None, split: str = "train", *, seed: int = 0, augment: Optional[bool] = None,
                 data_seed: int = 0):
        self.data_seed = check_nonnegative_int(data_seed, "data_seed", f"matbp.datasets.{self.name}")
        if root is None:
            from ..data import mosaics_root

            root = mosaics_root(self.data_seed)
        super().__init__(root, split, seed=seed, augment=augment)


def collate_segmentation(batch: Sequence[Dict[str, object]]) -> Dict[str, torch.Tensor]:
    """Batch samples of :class:`BSDS300`: ``image`` (B, 3, H, W), ``labels``
    (B, H, W) int64, ``index`` (B,) int64.

    Only images of one size can be stacked: a batch whose images differ in
    size (BSDS300 mixes 481×321 and 321×481) raises ValueError, which says
    to use batch size 1 (the paper's setting). The mosaics all have one
    size, so any batch size works for them.
    """
    if len(batch) == 0:
        raise ValueError("matbp.datasets.collate_segmentation: empty batch")
    shapes = [tuple(s["image"].shape) for s in batch]
    if len(set(shapes)) > 1:
        sizes = sorted({f"{h}×{w}" for _, h, w in shapes})
        raise ValueError(f"matbp.datasets.collate_segmentation: a batch of {len(batch)} images of different sizes "
                         f"({', '.join(sizes)}) cannot be stacked; use batch size 1 (--batch-size 1) for "
                         "datasets whose images differ in size, such as BSDS300")
    return {"image": torch.stack([s["image"] for s in batch]),
            "labels": torch.stack([s["labels"] for s in batch]),
            "index": torch.tensor([int(s["index"]) for s in batch], dtype=torch.int64)}
