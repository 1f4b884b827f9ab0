"""Training commands: ``python -m matbp.train o2p ...`` (also ``matbp-train``).

``o2p`` trains the paper's region classifiers (§6.1, Table 1): a baseline
with its backbone's usual first-order head, DeepO2P (log second-order
pooling, upper triangle, linear classifier) and DeepO2P-FC, end to end, on
the built-in data or COCO instances. One process, or many with torchrun::

    python -m matbp.train o2p --data textures --model deepo2p --backbone small \\
        --epochs 10 --batch-size 64 --out runs/deepo2p
    torchrun --nproc_per_node 2 -m matbp.train o2p ... (same options)

See :mod:`matbp.engine` for what every run writes and how ``--resume``,
skipped non-finite steps and the global batch work.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from . import engine
from .engine import Distributed, TrainingError


def _set_epoch(dataset, epoch: int) -> None:
    while dataset is not None:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
            return
        dataset = getattr(dataset, "dataset", None)


class _EpochAware(torch.utils.data.Subset):
    """A capped dataset (--train-samples) that still passes the epoch to the
    augmentation."""

    def set_epoch(self, epoch: int) -> None:
        _set_epoch(self.dataset, epoch)


def _capped(dataset, n: Optional[int]):
    if n is None or n >= len(dataset):
        return dataset
    if n <= 0:
        raise TrainingError(f"sample caps must be positive, got {n}")
    return _EpochAware(dataset, range(n))


# --------------------------------------------------------------------------
# o2p: classification (DeepO2P, DeepO2P-FC, baseline)
# --------------------------------------------------------------------------

def add_data_arguments(parser: argparse.ArgumentParser, choices, data_help: str, root_help: str,
                       train_what: str, val_what: str):
    """The "data" option group every task has; returns it for more options."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", required=True, choices=choices, help=data_help)
    g.add_argument("--data-root", default=None, help=root_help)
    g.add_argument("--train-samples", type=int, default=None, help=f"use only the first N {train_what}")
    g.add_argument("--val-samples", type=int, default=None, help=f"use only the first N {val_what}")
    return g


def add_o2p_arguments(parser: argparse.ArgumentParser) -> None:
    from .datasets import DATASETS
    from .models import BACKBONES, MODELS, POOLINGS

    g = add_data_arguments(
        parser, DATASETS,
        "textures: built-in second-order textures; photos: patches of scikit-image's bundled photographs; "
        "digits: scikit-learn's bundled digits; coco: COCO instances (--data-root)",
        "COCO folder with annotations/instances_{train,val}2017.json and {train,val}2017/",
        "training samples", "validation samples")
    g.add_argument("--image-size", type=int, default=None,
                   help="side of the generated images of textures and photos (default 32; the alexnet and "
                        "vgg16 backbones want 227 / 224)")
    g = parser.add_argument_group("model")
    g.add_argument("--model", required=True, choices=MODELS)
    g.add_argument("--backbone", required=True, choices=BACKBONES)
    g.add_argument("--pooling", default="matbp", choices=POOLINGS,
                   help="the global layer of deepo2p/deepo2p-fc: matbp (exact log), torch (eigh + log "
                        "composition) or isqrt (Newton-Schulz square root)")
    g.add_argument("--eps", type=float, default=1e-3, help="O2P regulariser: log(XᵀX/m + eps·I) (the paper: 1e-3)")
    g.add_argument("--reduce-dim", type=int, default=None, help="1x1 convolution to this many channels before O2P")
    g.add_argument("--fc-dim", type=int, default=4096, help="width of deepo2p-fc's fully connected layers")
    g.add_argument("--dropout", type=float, default=0.5, help="dropout of the fully connected layers")
    g.add_argument("--weights", default=None,
                   help="torchvision-format state dict of the backbone (for example AlexNet's ImageNet "
                        "weights saved beforehand); nothing is downloaded")
    engine.add_common_arguments(parser)


def classification_step(model, batch):
    images, labels = batch
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    correct = (logits.detach().argmax(1) == labels).sum().item()
    return loss, {"correct": correct, "count": labels.numel()}


def classification_describe(sums: Dict[str, float]) -> Dict[str, float]:
    if not sums.get("count"):
        return {}
    return {"error": 1.0 - sums["correct"] / sums["count"]}


def classification_evaluate(model, batches, d: Distributed) -> Dict[str, float]:
    """Top-1 error and mean cross-entropy over the whole validation set (each
    process scores its shard; the sums are reduced)."""
    totals = torch.zeros(3, dtype=torch.float64, device=d.device)
    for images, labels in batches:
        logits = model(images)
        totals[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += labels.numel()
    engine.all_reduce_(totals, d)
    loss, correct, count = totals.tolist()
    if count == 0:
        raise TrainingError("the validation set is empty")
    return {"loss": loss / count, "error": 1.0 - correct / count}


def run_o2p(args) -> dict:
    from .datasets import build_dataset
    from .models import build_model

    with engine.training_processes(args) as d:
        options = {}
        if args.image_size is not None:
            if args.data not in ("textures", "photos"):
                raise TrainingError(f"--image-size applies to the generated sets textures and photos, not {args.data}")
            options["size"] = args.image_size
        train_set = _capped(build_dataset(args.data, "train", root=args.data_root, seed=args.seed, **options),
                            args.train_samples)
        val_set = _capped(build_dataset(args.data, "val", root=args.data_root, seed=args.seed, **options),
                          args.val_samples)
        num_classes = train_set.num_classes if hasattr(train_set, "num_classes") else train_set.dataset.num_classes
        model = build_model(args.model, args.backbone, num_classes, pooling=args.pooling, eps=args.eps,
                            reduce_dim=args.reduce_dim, weights=args.weights, fc_dim=args.fc_dim,
                            dropout=args.dropout)
        # Replicas share the initialisation (DDP also broadcasts it) but not
        # their dropout masks.
        torch.manual_seed(args.seed + 1_000_003 * d.rank)
        trainer = engine.Trainer(args, model, train_set, val_set, classification_step,
                                 classification_evaluate, classification_describe, d,
                                 extra_summary=lambda: {"num_classes": num_classes})
        if d.is_main:
            print(f"matbp.train o2p: {args.model} ({args.backbone}, pooling {args.pooling}) on {args.data}: "
                  f"{len(train_set)} train / {len(val_set)} val samples, {num_classes} classes, "
                  f"{d.world_size} process(es) on {d.device}, out {args.out}", flush=True)
        return trainer.fit()


# --------------------------------------------------------------------------
# ncuts: segmentation (DeepNCuts)
# --------------------------------------------------------------------------

def add_ncuts_arguments(parser: argparse.ArgumentParser) -> None:
    from .models import BACKBONES

    add_data_arguments(
        parser, ("mosaics", "bsds300"),
        "mosaics: the built-in BSDS300-layout texture mosaics (generated once and cached, or in --data-root); "
        "bsds300: a BSDS300 folder (--data-root)",
        "BSDS300 layout: images/{train,test}/<iid>.jpg, human/{color,gray}/<uid>/<iid>.seg, iids_{train,test}.txt",
        "training images", "test images")
    g = parser.add_argument_group("model")
    g.add_argument("--backbone", required=True, choices=BACKBONES)
    g.add_argument("--objective", choices=("j2", "j1"), default="j2", help="the normalized-cuts loss (paper §5)")
    g.add_argument("--feature-dim", type=int, default=20, help="d of the learned features X (the paper: 20)")
    g.add_argument("--hidden", type=int, default=None,
                   help="filters of the first new conv layer (default: 256 alexnet, 1024 vgg16, 64 small)")
    g.add_argument("--dropout", type=float, default=0.25)
    g.add_argument("--stride", type=int, default=1,
                   help="take the loss at image resolution / stride (1: every pixel, the default)")
    g.add_argument("--learn-lambda", action="store_true", help="learn the metric Λ of W = X Λ Xᵀ")
    g.add_argument("--weights", default=None, help="torchvision-format state dict of the backbone")
    # The paper's rate: 1e-4 for the pretrained layers, ten times larger for
    # the new ones (--new-layer-lr-mult); images of different sizes: batch 1.
    engine.add_common_arguments(parser, lr=1e-4, batch_size=1)


def _unwrap(model):
    return getattr(model, "module", model)


def make_ncuts_step(objective: str):
    from .nn import NormalizedCutsLoss

    loss_fn = NormalizedCutsLoss(objective, reduction="none")

    def step(model, batch):
        X = model(batch["image"])
        net = _unwrap(model)
        labels = net.loss_labels(batch["labels"])
        J = loss_fn(X, labels, net.Lambda())
        n = J.shape[0]
        return J.mean(), {"objective": J.detach().sum().item(), "rank": loss_fn.last_rank.sum().item(),
                          "count": n}

    return step


def ncuts_describe(sums: Dict[str, float]) -> Dict[str, float]:
    if not sums.get("count"):
        return {}
    return {"objective": sums["objective"] / sums["count"], "rank": sums["rank"] / sums["count"]}


def make_ncuts_evaluate(objective: str):
    step = make_ncuts_step(objective)

    def evaluate(model, batches, d: Distributed) -> Dict[str, float]:
        """Mean objective and rank of W over the held-out images (the
        covering is `python -m matbp.evaluate ncuts`)."""
        totals = torch.zeros(3, dtype=torch.float64, device=d.device)
        for batch in batches:
            _, stats = step(model, batch)
            totals += torch.tensor([stats["objective"], stats["rank"], stats["count"]], dtype=torch.float64,
                                   device=d.device)
        engine.all_reduce_(totals, d)
        objective_sum, rank_sum, count = totals.tolist()
        if count == 0:
            raise TrainingError("the held-out set is empty")
        return {"loss": objective_sum / count, "objective": objective_sum / count, "rank": rank_sum / count}

    return evaluate


NCUTS_PANELS = (
    engine.Panel("objective", (("train_objective", "train", 1.0), ("val_objective", "held out", 1.0)),
                 step_key="objective"),
    engine.Panel("rank of W", (("train_rank", "train", 1.0), ("val_rank", "held out", 1.0)), step_key="rank"),
)


def run_ncuts(args) -> dict:
    from .datasets import build_dataset, collate_segmentation
    from .models import DeepNCuts

    with engine.training_processes(args) as d:
        if args.data == "bsds300" and args.data_root is None:
            raise TrainingError("--data bsds300 needs --data-root, a folder in the BSDS300 layout")
        train_set = _capped(build_dataset(args.data, "train", root=args.data_root, seed=args.seed),
                            args.train_samples)
        val_set = _capped(build_dataset(args.data, "test", root=args.data_root, seed=args.seed), args.val_samples)
        model = DeepNCuts(args.backbone, feature_dim=args.feature_dim, hidden=args.hidden, dropout=args.dropout,
                          stride=args.stride, learn_lambda=args.learn_lambda, weights=args.weights)
        torch.manual_seed(args.seed + 1_000_003 * d.rank)
        trainer = engine.Trainer(
            args, model, train_set, val_set, make_ncuts_step(args.objective), make_ncuts_evaluate(args.objective),
            ncuts_describe, d, collate_fn=collate_segmentation, select="val_objective", panels=NCUTS_PANELS,
            extra_summary=lambda: {"final_objective": trainer.history[-1]["train_objective"] if trainer.history
                                   else None,
                                   "final_rank": trainer.history[-1]["train_rank"] if trainer.history else None})
        if d.is_main:
            print(f"matbp.train ncuts: DeepNCuts ({args.backbone}, {args.objective}, stride {args.stride}) on "
                  f"{args.data}: {len(train_set)} train / {len(val_set)} held-out images, {d.world_size} "
                  f"process(es) on {d.device}, out {args.out}", flush=True)
        return trainer.fit()


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

TASKS = {
    "o2p": ("train DeepO2P / DeepO2P-FC / the first-order baseline (paper §6.1, Table 1)",
            add_o2p_arguments, run_o2p),
    "ncuts": ("train DeepNCuts with the normalized-cuts loss at full image resolution (paper §6.2, Table 2)",
              add_ncuts_arguments, run_ncuts),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m matbp.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for name, (help_text, add_arguments, run) in TASKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Optional[List[str]] = None) -> dict:
    """Runs a training command; returns its summary (also written to
    summary.json). Setup errors exit with status 2 and one clear line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run = args.run
    del args.run
    try:
        return run(args)
    except (TrainingError, FileNotFoundError) as exc:
        parser.exit(2, f"matbp.train {args.task}: error: {exc}\n")
    except ValueError as exc:  # argument checks of the data sets and models
        if exc.__traceback__ is not None and _raised_in_training_loop(exc):
            raise
        parser.exit(2, f"matbp.train {args.task}: error: {exc}\n")


def _raised_in_training_loop(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name in ("fit", "train_epoch", "validate"):
            return True
        tb = tb.tb_next
    return False


def cli() -> int:
    """The ``matbp-train`` console script."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
