"""Evaluation commands: ``python -m matbp.evaluate ncuts ...``.

``ncuts`` segments every image of a BSDS300-layout split by normalized cuts
on a network's features (k = 2…9 clusters of the leading eigenvectors of
W = X Λ Xᵀ, connected components split: the paper's 8 segmentations,
:func:`matbp.segmentation.segment`) and scores them against every human
segmentation with the covering (:mod:`matbp.metrics`): best and average
covering at the optimal image scale (OIS) and the optimal data-set scale
(ODS). Features come from a trained DeepNCuts checkpoint, or with
``--untrained`` from the backbone alone (the NCuts baseline of Table 2: the
backbone's features, pretrained when ``--weights`` names a file)::

    python -m matbp.evaluate ncuts --checkpoint runs/ncuts/best.pt --data-root BSDS300 --split test --out eval/deep
    python -m matbp.evaluate ncuts --untrained --backbone alexnet --weights alexnet.pth \\
        --data-root BSDS300 --split test --out eval/ncuts

The output folder gets ``summary.json`` (``best_covering_ois``,
``avg_covering_ois``, ``best_covering_ods``, ``avg_covering_ods``,
``images``, per-image scores), ``covering.md`` and ``panel.png`` (image,
segmentation, one human segmentation for a few images).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import engine
from .engine import TrainingError


def _load_model(args):
    from .models import DeepNCuts

    if args.checkpoint:
        if not os.path.isfile(args.checkpoint):
            raise TrainingError(f"--checkpoint {args.checkpoint}: no such file")
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        cfg = state.get("config", {})
        if cfg.get("task") != "ncuts":
            raise TrainingError(f"--checkpoint {args.checkpoint} is not a matbp.train ncuts checkpoint "
                                f"(task {cfg.get('task')!r})")
        model = DeepNCuts(cfg["backbone"], feature_dim=cfg["feature_dim"], hidden=cfg["hidden"],
                          dropout=cfg["dropout"], stride=cfg["stride"], learn_lambda=cfg["learn_lambda"])
        model.load_state_dict(state["model"])
        return model, f"DeepNCuts ({cfg['backbone']}, {cfg['objective']}, epoch {state['epoch'] + 1})", False
    if not args.backbone:
        raise TrainingError("--untrained needs --backbone")
    torch.manual_seed(args.seed)
    model = DeepNCuts(args.backbone, stride=args.stride, weights=args.weights)
    source = "pretrained" if args.weights else "randomly initialised"
    return model, f"NCuts on {args.backbone} features ({source})", True


@torch.no_grad()
def segment_image(model, image: torch.Tensor, untrained: bool, ks, seed: int):
    """The candidate segmentations of one (3, H, W) image at full resolution."""
    from .segmentation import segment

    H, W = image.shape[-2:]
    if untrained:
        X, grid = model.backbone_features(image[None])
        Lambda = None
    else:
        X = model(image[None])
        grid = model.last_grid
        Lambda = model.Lambda()
    segs = segment(X[0].double(), grid, ks=ks, Lambda=None if Lambda is None else Lambda.double(), seed=seed)
    if tuple(grid) != (H, W):  # loss taken at a stride: label maps back to every pixel
        segs = [F.interpolate(s[None, None].float(), size=(H, W), mode="nearest")[0, 0].long() for s in segs]
    return segs


def run_ncuts(args) -> dict:
    from .datasets import build_dataset
    from .metrics import dataset_covering, image_covering

    if args.data_root is None and args.data != "mosaics":
        raise TrainingError("--data-root is required (a folder in the BSDS300 layout), or pass --data mosaics")
    model, label, untrained = _load_model(args)
    dataset = build_dataset("bsds300" if args.data_root else "mosaics", args.split, root=args.data_root,
                            augment=False)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    n = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
    ks = list(range(args.k_min, args.k_max + 1))
    per_image, shown = [], []
    from tqdm import tqdm

    for i in tqdm(range(n), desc=f"evaluate {args.split}", disable=args.no_progress, file=sys.stderr):
        sample = dataset[i]
        segs = segment_image(model, sample["image"].to(device), untrained, ks, args.seed)
        gts = dataset.ground_truths(i)
        result = image_covering([s.numpy() for s in segs], gts)
        per_image.append(result)
        if len(shown) < args.panel_images:
            shown.append((i, segs[result["best_index"]].numpy(), gts[result["best_ground_truth"]]))
    scores = dataset_covering(per_image)
    summary = {
        "method": label, "split": args.split, "images": n, "ks": ks,
        "best_covering_ois": scores["best"], "avg_covering_ois": scores["average"],
        "best_covering_ods": scores["ods_best"], "avg_covering_ods": scores["ods_average"],
        "per_image": [{"iid": dataset.iids[i], "best": r["best"], "average": r["average"],
                       "best_k": ks[r["best_index"]]} for i, r in enumerate(per_image)],
        "config": {k: v for k, v in vars(args).items() if k != "run"},
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    md = ["| method | images | best covering OIS (average) | best covering ODS (average) |", "|---|---:|---|---|",
          f"| {label} | {n} | {scores['best']:.3f} ({scores['average']:.3f}) | "
          f"{scores['ods_best']:.3f} ({scores['ods_average']:.3f}) |"]
    with open(os.path.join(args.out, "covering.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    plot_panel(os.path.join(args.out, "panel.png"), dataset, shown, label)
    summary["shown"] = shown  # for figures that put several methods side by side (not in summary.json)
    summary["dataset"] = dataset
    return summary


def plot_panel(path: str, dataset, shown, label: str) -> Optional[str]:
    """Figure 3-style rows: the image, the segmentation, a human segmentation."""
    return plot_panels(path, dataset, [(label, shown)])


def plot_panels(path: str, dataset, methods) -> Optional[str]:
    """Figure 3-style rows: the image, each method's best segmentation
    (``methods``: [(label, shown)] with the ``shown`` of :func:`run_ncuts`
    for the same images), and the human segmentation the last one matched."""
    if not methods or not methods[0][1]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .data import read_image

    rows, cols = len(methods[0][1]), len(methods) + 2
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.6 * rows), squeeze=False)
    for r, row in enumerate(axes):
        i = methods[0][1][r][0]
        panels = [(read_image(dataset.image_path(i)).numpy(), f"image {dataset.iids[i]}")]
        panels += [(shown[r][1], label) for label, shown in methods]
        panels.append((methods[-1][1][r][2], "human"))
        for ax, (picture, title) in zip(row, panels):
            ax.imshow(picture, cmap=None if picture.ndim == 3 else "tab20", interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m matbp.evaluate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    p = sub.add_parser("ncuts", help="covering of normalized-cuts segmentations (paper Table 2)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a matbp.train ncuts checkpoint (last.pt or best.pt)")
    which.add_argument("--untrained", action="store_true", help="the backbone's own features (the NCuts baseline)")
    p.add_argument("--backbone", help="with --untrained: small, alexnet or vgg16")
    p.add_argument("--weights", default=None, help="with --untrained: the backbone's weights file")
    p.add_argument("--stride", type=int, default=1, help="with --untrained: segment at image resolution / stride")
    p.add_argument("--data", default="bsds300", choices=("bsds300", "mosaics"))
    p.add_argument("--data-root", default=None, help="a folder in the BSDS300 layout")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--out", required=True)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0, help="k-means seeding (and --untrained initialisation)")
    p.add_argument("--k-min", type=int, default=2)
    p.add_argument("--k-max", type=int, default=9)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--panel-images", type=int, default=4)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_ncuts)
    return parser


def main(argv: Optional[List[str]] = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    engine.keep_freed_memory()
    try:
        return args.run(args)
    except (TrainingError, FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"matbp.evaluate {args.task}: error: {exc}\n")


def cli() -> int:
    main()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
