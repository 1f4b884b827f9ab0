"""``"coco"``: COCO 2017 object instances as a classification set (paper §6.1).

The paper trains DeepO2P to recognise the object in a COCO instance's
bounding box (80 categories). ``root`` is a folder with the standard layout::

    root/annotations/instances_train2017.json
    root/annotations/instances_val2017.json
    root/train2017/<file_name>
    root/val2017/<file_name>

Every non-crowd annotation whose box is at least ``min_size`` pixels wide and
high (and not entirely outside its image) is a sample; its label is the index of
its ``category_id`` among the sorted category ids, and ``classes`` are the
category names in that order. Samples are ordered by annotation id.

An image is the box cropped from its photograph (RGB), resized bilinearly so
its longest side is ``longest_side`` (200) pixels, and placed in a
``crop_size``×``crop_size`` (227, AlexNet's input) canvas of the mean colour:
zeros after normalising with ImageNet's per-channel mean and std, so the
padding carries no signal. Val images are centred; train images (with
augmentation) are shifted by up to ``jitter`` (8) pixels in each direction,
clipped to stay inside the canvas, and flipped horizontally with probability
1/2.

The annotation file is read once in ``__init__`` with pycocotools, and only
compact arrays (boxes, labels, image indices, file names) are kept, so the
dataset pickles cheaply to DataLoader workers even for the 860k training
instances.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from typing import List, Optional

import numpy as np
import torch

from . import ImageDataset, check_positive_int

__all__ = ["CocoInstances", "IMAGENET_MEAN", "IMAGENET_STD", "annotation_path"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_LAYOUT = ("annotations/instances_{train,val}2017.json with images in train2017/ and val2017/")


def annotation_path(root: str, split: str) -> str:
    return os.path.join(root, "annotations", f"instances_{split}2017.json")


class CocoInstances(ImageDataset):
    """COCO instances (see the module docstring).

    Options: ``min_size=1`` (pixels; smaller boxes are skipped),
    ``longest_side=200``, ``crop_size=227``, ``jitter=8`` (pixels),
    ``max_samples=None`` (keep only the first N instances by annotation id,
    for quick runs).
    """

    name = "coco"

    def __init__(self, root: Optional[str], split: str, *, seed: int = 0, augment: Optional[bool] = None,
                 min_size: float = 1, longest_side: int = 200, crop_size: int = 227, jitter: int = 8,
                 max_samples: Optional[int] = None):
        super().__init__(split, seed, augment)
        where = "matbp.datasets.coco"
        if root is None:
            raise ValueError(f"{where}: the coco dataset needs --data-root (build_dataset('coco', split, "
                             f"root=DIR)), a folder with {_LAYOUT}")
        self.root = os.fspath(root)
        if isinstance(min_size, bool) or not isinstance(min_size, (int, float)) or not min_size > 0:
            raise ValueError(f"{where}: argument 'min_size' must be a positive number, got {min_size!r}")
        self.min_size = float(min_size)
        self.longest_side = check_positive_int(longest_side, "longest_side", where)
        self.crop_size = check_positive_int(crop_size, "crop_size", where)
        if self.longest_side > self.crop_size:
            raise ValueError(f"{where}: longest_side {self.longest_side} does not fit in crop_size {self.crop_size}")
        if isinstance(jitter, bool) or not isinstance(jitter, (int, np.integer)) or jitter < 0:
            raise ValueError(f"{where}: argument 'jitter' must be a non-negative integer, got {jitter!r}")
        self.jitter = int(jitter)
        if max_samples is not None:
            max_samples = check_positive_int(max_samples, "max_samples", where)

        path = annotation_path(self.root, split)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{where}: annotation file {path} not found; --data-root must be a COCO folder "
                                    f"with the standard layout {_LAYOUT}")
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
            coco = COCO(path)

        cat_ids = sorted(coco.getCatIds())
        self.category_ids: List[int] = [int(c) for c in cat_ids]
        self.classes: List[str] = [str(coco.cats[c]["name"]) for c in cat_ids]
        label_of = {c: k for k, c in enumerate(cat_ids)}

        image_ids = sorted(coco.imgs)
        image_index = {img_id: k for k, img_id in enumerate(image_ids)}
        self.file_names: List[str] = [str(coco.imgs[i]["file_name"]) for i in image_ids]
        boxes, labels, images, ann_ids = [], [], [], []
        for ann_id in sorted(coco.anns):
            ann = coco.anns[ann_id]
            if ann.get("iscrowd", 0):
                continue
            w, h = (float(v) for v in ann["bbox"][2:4])
            if not (w >= self.min_size and h >= self.min_size):
                continue
            box = _clipped_box(ann["bbox"], coco.imgs[ann["image_id"]])
            if box is None:
                continue
            boxes.append(box)
            labels.append(label_of[ann["category_id"]])
            images.append(image_index[ann["image_id"]])
            ann_ids.append(ann_id)
            if max_samples is not None and len(boxes) >= max_samples:
                break
        del coco  # its dicts are large; what the samples need is below
        self.boxes = np.array(boxes, dtype=np.int32).reshape(-1, 4)  # x0, y0, x1, y1 (exclusive)
        self.labels = np.array(labels, dtype=np.int64)
        self.image_indices = np.array(images, dtype=np.int64)
        self.annotation_ids = np.array(ann_ids, dtype=np.int64)
        self.image_size = (self.crop_size, self.crop_size)
        self._length = len(self.labels)
        self._image_dir = os.path.join(self.root, f"{split}2017")

    def image_path(self, index: int) -> str:
        return os.path.join(self._image_dir, self.file_names[self.image_indices[index]])

    def _sample(self, index: int, rng: Optional[np.random.Generator]):
        from PIL import Image

        path = self.image_path(index)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"matbp.datasets.coco: image file {path} (annotation "
                                    f"{int(self.annotation_ids[index])}) not found; expected the {self.split} "
                                    f"images in {self._image_dir}")
        x0, y0, x1, y1 = (int(v) for v in self.boxes[index])
        with Image.open(path) as im:
            im = im.convert("RGB")
            # The file may disagree with the annotation's width/height.
            x1, y1 = min(x1, im.width), min(y1, im.height)
            x0, y0 = min(x0, x1 - 1), min(y0, y1 - 1)
            crop = im.crop((x0, y0, x1, y1))
        w, h = crop.size
        scale = self.longest_side / max(w, h)
        nw, nh = max(1, min(self.longest_side, round(w * scale))), max(1, min(self.longest_side, round(h * scale)))
        crop = crop.resize((nw, nh), Image.BILINEAR)
        pixels = (np.asarray(crop, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # (nh, nw, 3)

        s = self.crop_size
        top, left = (s - nh) // 2, (s - nw) // 2
        if rng is not None:
            if rng.random() < 0.5:
                pixels = pixels[:, ::-1]
            dy, dx = (int(v) for v in rng.integers(-self.jitter, self.jitter + 1, size=2))
            top = min(max(top + dy, 0), s - nh)
            left = min(max(left + dx, 0), s - nw)
        canvas = np.zeros((3, s, s), dtype=np.float32)
        canvas[:, top:top + nh, left:left + nw] = pixels.transpose(2, 0, 1)
        return torch.from_numpy(canvas), int(self.labels[index])


def _clipped_box(bbox, image_info) -> Optional[tuple]:
    """COCO's [x, y, w, h] (floats) → integer (x0, y0, x1, y1) covering it,
    clipped to the image; None when nothing is left."""
    x, y, w, h = (float(v) for v in bbox)
    if not (w > 0 and h > 0) or not all(math.isfinite(v) for v in (x, y, w, h)):
        return None
    width, height = int(image_info.get("width", 1 << 30)), int(image_info.get("height", 1 << 30))
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)
