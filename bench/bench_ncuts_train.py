"""Benchmark: DeepNCuts training at the full BSDS resolution (paper §6.2).

Two measurements in one process, ``alexnet`` backbone, J2 loss at every pixel
of 321×481 images, batch 1, float32:

* the training command itself (``python -m matbp.train ncuts``) over a
  BSDS300-layout folder of built-in mosaics at 321×481: images/s as the
  run reports it, data loading (JPEG decoding, .seg parsing) included;
* one step split into its parts, medians over repetitions: the backbone
  forward, the new layers (two conv pairs and the upsampling to every
  pixel), the J2 loss, the backward pass of all three, the optimiser step.

Target: ≥ 4 training images/s on the 2-core build machine, twice the
paper's 2 images/s on a Titan Z GPU with an 8-core CPU.

Usage::

    python bench/bench_ncuts_train.py            # bench/results/ncuts_train_cpu.{json,md}
    python bench/bench_ncuts_train.py --images 8 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import matbp  # noqa: E402,F401
from matbp import engine, train  # noqa: E402
from matbp.data import make_mosaics  # noqa: E402
from matbp.models import DeepNCuts  # noqa: E402
from matbp.nn import NormalizedCutsLoss  # noqa: E402

TARGET = 4.0


def parts(args) -> dict:
    torch.manual_seed(args.seed)
    model = DeepNCuts("alexnet")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = NormalizedCutsLoss("j2")
    image = torch.randn(1, 3, args.height, args.width)
    labels = torch.randint(0, 8, (1, args.height, args.width))
    times = {k: [] for k in ("backbone", "new layers", "J2 loss", "backward", "optimiser step", "step")}
    for rep in range(args.repeats + 1):
        t0 = time.perf_counter()
        feeds = model.feeds(image)
        t1 = time.perf_counter()
        X = model._flatten(model._to_loss_grid(model.head(feeds), (args.height, args.width)))
        t2 = time.perf_counter()
        J = loss_fn(X, model.loss_labels(labels), model.Lambda())
        t3 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        J.backward()
        t4 = time.perf_counter()
        optimizer.step()
        t5 = time.perf_counter()
        if rep:  # the first is a warm-up
            for k, a, b in (("backbone", t0, t1), ("new layers", t1, t2), ("J2 loss", t2, t3),
                            ("backward", t3, t4), ("optimiser step", t4, t5), ("step", t0, t5)):
                times[k].append(b - a)
    return {k: common.median(v) for k, v in times.items()}


def command(args) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = make_mosaics(os.path.join(tmp, "bsds"), seed=args.seed, num_train=args.images, num_test=1,
                            size=(args.height, args.width))
        summary = train.main(["ncuts", "--data", "bsds300", "--data-root", root, "--backbone", "alexnet",
                              "--epochs", "1", "--out", os.path.join(tmp, "run"), "--device", "cpu",
                              "--no-progress"])
    return summary["images_per_s"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_standard_arguments(parser)
    parser.add_argument("--images", type=int, default=16, help="training images of the timed command run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--height", type=int, default=321)
    parser.add_argument("--width", type=int, default=481)
    args = common.parse_standard_arguments(parser, argv)
    # The training command keeps freed memory in the process; the step's
    # parts are timed as it runs them.
    kept = engine.keep_freed_memory()
    split = parts(args)
    rate = command(args)
    rows = [{"measurement": k, "ms": 1e3 * v, "share": v / split["step"]} for k, v in split.items()]
    rows.append({"measurement": "training command, data loading included", "images_per_s": rate,
                 "target": "PASS" if rate >= TARGET else "FAIL"})
    columns = [("measurement", "measurement"), ("ms", "median ms", ".1f"), ("share", "share of step", ".1%"),
               ("images_per_s", "images/s", ".2f"), ("target", f"≥ {TARGET} images/s")]
    env = common.environment("cpu")
    env["allocator"] = "glibc, freed memory kept (engine.keep_freed_memory)" if kept else "default"
    title = f"DeepNCuts training, alexnet, J2 at every pixel of {args.height}×{args.width}, batch 1, float32"
    common.print_table(rows, columns, title=title, env=env)
    if not args.no_write:
        paths = common.write_results("ncuts_train_cpu", rows, columns, env=env, out_dir=args.out, title=title,
                                     config=vars(args))
        print("wrote " + " and ".join(paths))
    return 1 if args.strict and rate < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
