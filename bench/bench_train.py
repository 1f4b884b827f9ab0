"""Benchmark: a training step of the paper's AlexNet networks (Table 1).

One SGD step (zero_grad, forward, cross-entropy, backward, optimiser step)
of the ``alexnet`` backbone at 227×227, batch 32, 80 classes (COCO's), in one
process, interleaved per repetition:

* ``baseline``: AlexNet with its own first-order head (pool5, FC 4096-4096);
* ``deepo2p matbp``: conv5 (13×13×256) → ``matbp.nn.SecondOrderPooling``
  (ε = 1e-3) → upper triangle → linear classifier;
* ``deepo2p torch``: the same with PyTorch's ``eigh`` + log composition;
* ``deepo2p isqrt``: the same with iSQRT-COV (5 Newton–Schulz iterations).

Each row reports the median step time, images/s, the step's ratio to the
baseline's (target for matbp: ≤ 1.25, the O2P network costs at most 25%
more than the baseline) and to the ``torch`` pooling's, whether the loss and
every gradient of the (untimed) first step are finite, and the share of the
step spent in the global layer: the median of that layer's forward +
backward alone on the conv5 features of the same batch, over the step time.

Usage::

    python bench/bench_train.py                 # bench/results/train_step_cpu.{json,md}
    python bench/bench_train.py --quick         # batch 8, short budget: *_quick.*
    python bench/bench_train.py --device cuda   # train_step_cuda.*
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import matbp  # noqa: E402,F401
from matbp.models import build_model, build_pooling  # noqa: E402

COMPETITORS = (("baseline", "baseline", None), ("deepo2p matbp", "deepo2p", "matbp"),
               ("deepo2p torch", "deepo2p", "torch"), ("deepo2p isqrt", "deepo2p", "isqrt"))
STEP_TARGET = 1.25


def make_step(model, images, labels):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    return step


def make_global_layer(pooling, features):
    layer = build_pooling(pooling, 1e-3)
    G = torch.randn(features.shape[0], features.shape[1], features.shape[1], device=features.device)

    def fwd_bwd():
        x = features.detach().requires_grad_()
        (layer(x) * G).sum().backward()
        return x.grad

    return fwd_bwd


def run(args) -> list:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    images = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    labels = torch.randint(0, args.classes, (args.batch_size,), device=device)
    models = {name: build_model(model, "alexnet", args.classes, pooling=pooling or "matbp").to(device)
              for name, model, pooling in COMPETITORS}
    steps = {name: make_step(m, images, labels) for name, m in models.items()}
    with torch.no_grad():
        features = models["deepo2p matbp"].backbone(images)
    layers = {name: make_global_layer(pooling, features) for name, _, pooling in COMPETITORS if pooling}
    finite, grads_finite = {}, {}
    for name, step in steps.items():  # warm-up, and whether the step is usable at all
        try:
            finite[name] = bool(torch.isfinite(step()).item())
            grads_finite[name] = all(bool(torch.isfinite(p.grad).all()) for p in models[name].parameters()
                                     if p.grad is not None)
        except torch.linalg.LinAlgError:
            finite[name] = grads_finite[name] = False
    for fn in layers.values():
        fn()
    timed = common.time_interleaved_adaptive(steps, budget_s=args.budget, min_repeats=3, device=device)
    layer_times = common.time_interleaved_adaptive(layers, budget_s=args.budget / 4, min_repeats=3, device=device)
    base = timed["baseline"]["median"]
    torch_step = timed["deepo2p torch"]["median"]
    rows = []
    for name, model, pooling in COMPETITORS:
        t = timed[name]["median"]
        row = {"network": name, "step_ms": 1e3 * t, "images_per_s": args.batch_size / t,
               "vs_baseline": t / base, "loss_finite": finite[name],
               "gradient_finite": grads_finite[name],
               "parameters": sum(p.numel() for p in models[name].parameters())}
        if pooling:
            layer = layer_times[name]["median"]
            row.update(global_layer_ms=1e3 * layer, global_layer_share=layer / t, vs_torch_pooling=t / torch_step)
        if name == "deepo2p matbp":
            row["target"] = "PASS" if t / base <= STEP_TARGET else "FAIL"
        rows.append(row)
    return rows


COLUMNS = [
    ("network", "network"), ("step_ms", "step ms", ".0f"), ("images_per_s", "images/s", ".1f"),
    ("vs_baseline", "step / baseline", ".2f"), ("vs_torch_pooling", "step / deepo2p torch", ".2f"),
    ("global_layer_ms", "global layer fwd+bwd ms", ".1f"), ("global_layer_share", "global layer share", ".1%"),
    ("loss_finite", "loss finite"), ("gradient_finite", "gradient finite"), ("parameters", "parameters", ","), ("target", f"≤ {STEP_TARGET} × baseline"),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_standard_arguments(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--budget", type=float, default=40.0, help="seconds of timed steps, all networks together")
    parser.add_argument("--quick", action="store_true", help="batch 8 and a short budget (the demo's size)")
    args = common.parse_standard_arguments(parser, argv)
    if args.quick:
        args.batch_size, args.budget = 8, 6.0
    rows = run(args)
    env = common.environment(args.device)
    title = (f"Training step of the AlexNet networks: batch {args.batch_size}, {args.size}×{args.size}, "
             f"{args.classes} classes, float32")
    common.print_table(rows, COLUMNS, title=title, env=env)
    if not args.no_write:
        name = f"train_step_{common.device_tag(args.device)}" + ("_quick" if args.quick else "")
        notes = ["Step = zero_grad + forward + cross-entropy + backward + SGD step. Global layer = the pooling's "
                 "forward + backward alone on the conv5 features of the same batch; share = that over the step."]
        paths = common.write_results(name, rows, COLUMNS, env=env, out_dir=args.out, title=title,
                                     config=vars(args), notes=notes)
        print("wrote " + " and ".join(paths))
    matbp_row = next(r for r in rows if r["network"] == "deepo2p matbp")
    if not (matbp_row["loss_finite"] and matbp_row["gradient_finite"]):
        return 1
    return 1 if args.strict and matbp_row["target"] == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
