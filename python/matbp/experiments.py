"""The paper's experiments as one command each.

``python -m matbp.experiments table2 --out DIR`` is Table 2 in shape: the
NCuts baseline (normalized cuts on the backbone's own features) against
DeepNCuts trained end to end, scored by covering, with a Figure 3-style
panel (``table2.md``, ``table2.json``, ``table2_panel.png``).

``python -m matbp.experiments table1 --out DIR`` is Table 1 of the paper in
the "(S)" setting (every network trained from scratch): the first-order
baseline, DeepO2P and DeepO2P-FC with matbp's O2P layer, and DeepO2P with
the two global layers users pick today (PyTorch's ``eigh`` + log
composition, and iSQRT-COV's Newton–Schulz square root), trained at equal
budget over several seeds with :mod:`matbp.train`. It writes

- ``DIR/runs/<config>/seed<k>/``: each training run (log, checkpoint,
  summary, curves);
- ``DIR/table1.md`` and ``DIR/table1.json``: validation error mean ± std
  over seeds, non-finite (skipped) steps, training images/s;
- ``DIR/table1.png``: validation error per epoch, mean and range over seeds.

Finished runs are reused and interrupted ones resumed, so the command can be
stopped and started again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

from . import engine, train


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    model: str
    pooling: str = "matbp"
    # As in the paper, each network trains at its own learning rate: the
    # best of 0.003, 0.01, 0.03 and 0.1 on seed 0 (SGD, cosine, 8 epochs,
    # batch 64, the built-in textures).
    lr: float = 0.01


TABLE1 = (
    Config("baseline", "Baseline(S): first-order head", "baseline", lr=0.01),
    Config("deepo2p", "DeepO2P(S), matbp", "deepo2p", lr=0.01),
    Config("deepo2p-fc", "DeepO2P-FC(S), matbp", "deepo2p-fc", lr=0.03),
    Config("deepo2p-torch", "DeepO2P(S), torch eigh + log", "deepo2p", "torch", lr=0.01),
    Config("deepo2p-isqrt", "DeepO2P(S), iSQRT-COV", "deepo2p", "isqrt", lr=0.03),
)


def _run_dir(out: str, config: Config, seed: int) -> str:
    return os.path.join(out, "runs", config.key, f"seed{seed}")


def _train_argv(args, config: Config, seed: int, run_dir: str) -> List[str]:
    argv = ["o2p", "--data", args.data, "--model", config.model, "--backbone", args.backbone,
            "--pooling", config.pooling, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--lr", str(args.lr if args.lr is not None else config.lr),
            "--weight-decay", str(args.weight_decay), "--seed", str(seed),
            "--out", run_dir, "--device", args.device, "--fc-dim", str(args.fc_dim)]
    if args.data_root:
        argv += ["--data-root", args.data_root]
    if args.train_samples:
        argv += ["--train-samples", str(args.train_samples)]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def run_table1(args) -> dict:
    configs = [c for c in TABLE1 if not args.only or c.key in args.only]
    results: Dict[str, List[dict]] = {c.key: [] for c in configs}
    histories: Dict[str, List[List[dict]]] = {c.key: [] for c in configs}
    for seed in range(args.seeds):
        for config in configs:
            run_dir = _run_dir(args.out, config, seed)
            argv = _train_argv(args, config, seed, run_dir)
            summary = train_or_reuse(argv, run_dir, args.epochs, f"{config.label}, seed {seed}")
            results[config.key].append(summary)
            histories[config.key].append(engine.read_csv(os.path.join(run_dir, engine.LOG)))
    table = summarise(configs, results)
    write_table1(args.out, table, args)
    plot_table1(args.out, configs, histories)
    return table


def train_or_reuse(argv: List[str], run_dir: str, epochs: int, label: str) -> dict:
    """The summary of the training run ``argv`` writing into ``run_dir``:
    reused when finished, resumed when interrupted, trained otherwise."""
    summary_path = os.path.join(run_dir, engine.SUMMARY)
    summary = _load(summary_path)
    if summary is not None and not _same_run(summary["config"], argv):
        raise engine.TrainingError(f"{run_dir} holds a run with other options; remove it or choose another --out")
    if summary is not None and summary.get("epochs") == epochs:
        print(f"== {label}: reusing {summary_path}", flush=True)
        return summary
    if os.path.exists(os.path.join(run_dir, engine.CHECKPOINT)):
        argv = argv + ["--resume"]
    print(f"== {label}: python -m matbp.train {' '.join(argv)}", flush=True)
    return train.main(argv)


def _same_run(config: dict, argv: List[str]) -> bool:
    expected = vars(train.build_parser().parse_args(argv))
    return all(config.get(k) == v for k, v in expected.items()
               if k not in engine.RESUMABLE_OPTIONS and k != "run")


def _load(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _mean_std(values: List[float]):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarise(configs, results: Dict[str, List[dict]]) -> dict:
    rows = []
    for c in configs:
        runs = results[c.key]
        errors = [r["val_error"] for r in runs]
        mean, std = _mean_std(errors)
        reasons: Dict[str, int] = {}
        for r in runs:
            for k, v in r.get("nonfinite_reasons", {}).items():
                reasons[k] = reasons.get(k, 0) + v
        rows.append({
            "config": c.key, "label": c.label, "model": c.model, "pooling": c.pooling,
            "val_error_mean": mean, "val_error_std": std, "val_errors": errors,
            "nonfinite_steps": sum(r["nonfinite_steps"] for r in runs),
            "nonfinite_steps_per_run": [r["nonfinite_steps"] for r in runs],
            "nonfinite_reasons": reasons,
            "steps_per_run": runs[0]["steps"],
            "images_per_s": statistics.fmean(r["images_per_s"] for r in runs),
            "lr": runs[0]["config"]["lr"],
            "parameters": runs[0].get("parameters"),
        })
    first = results[configs[0].key][0]
    return {"rows": rows, "seeds": len(results[configs[0].key]),
            "versions": first["versions"], "device": first["device"], "config": {
                k: first["config"][k] for k in ("data", "backbone", "epochs", "batch_size", "weight_decay",
                                                "momentum", "lr_schedule", "eps", "dtype")}}


def write_table1(out: str, table: dict, args) -> None:
    with open(os.path.join(out, "table1.json"), "w") as f:
        json.dump(table, f, indent=2)
    cfg = table["config"]
    lines = [
        "# Table 1, from scratch (S): validation error",
        "",
        f"`python -m matbp.experiments {' '.join(sys.argv[1:] if args.argv is None else args.argv)}`",
        "",
        f"Data `{cfg['data']}`, backbone `{cfg['backbone']}`, {cfg['epochs']} epochs, global batch "
        f"{cfg['batch_size']}, SGD ({cfg['lr_schedule']} learning rate), momentum {cfg['momentum']}, weight "
        f"decay {cfg['weight_decay']}, O2P eps {cfg['eps']}, {cfg['dtype']}; {table['seeds']} seeds. "
        f"Device: {table['device']['name']} ({table['device']['type']}, "
        f"{table['device']['threads_per_process']} threads); torch {table['versions']['torch']}, "
        f"matbp {table['versions']['matbp']}.",
        "",
        "| network | global layer | learning rate | val error (%) mean ± std | per seed (%) | non-finite steps (skipped) | train images/s | parameters |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in table["rows"]:
        layer = {"baseline": "global average pooling"}.get(r["config"], {
            "matbp": "O2P log (matbp)", "torch": "eigh + log (torch)", "isqrt": "iSQRT-COV"}[r["pooling"]])
        per_seed = ", ".join(f"{100 * e:.1f}" for e in r["val_errors"])
        skipped = f"{r['nonfinite_steps']} of {r['steps_per_run'] * len(r['val_errors'])}"
        if r["nonfinite_reasons"]:
            skipped += " (" + "; ".join(f"{k}: {v}" for k, v in r["nonfinite_reasons"].items()) + ")"
        lines.append(f"| {r['label'].split(',')[0]} | {layer} | {r['lr']:g} | {100 * r['val_error_mean']:.1f} ± "
                     f"{100 * r['val_error_std']:.1f} | {per_seed} | {skipped} | {r['images_per_s']:.0f} | "
                     f"{r['parameters']:,} |")
    with open(os.path.join(out, "table1.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot_table1(out: str, configs, histories: Dict[str, List[List[dict]]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = ("o-", "s--", "^-", "v:", "d-.")  # DeepO2P with matbp and torch can coincide: keep both visible
    for c, style in zip(configs, styles * len(configs)):
        runs = [h for h in histories[c.key] if h]
        if not runs:
            continue
        n = min(len(h) for h in runs)
        epochs = [e + 1 for e in range(n)]
        per_epoch = [[100 * h[e]["val_error"] for h in runs] for e in range(n)]
        mean = [statistics.fmean(v) for v in per_epoch]
        line, = ax.plot(epochs, mean, style, ms=4, label=c.label)
        ax.fill_between(epochs, [min(v) for v in per_epoch], [max(v) for v in per_epoch],
                        color=line.get_color(), alpha=0.15)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("validation error (%)")
    ax.set_title("Table 1 (S): validation error, mean and range over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "table1.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def run_table2(args) -> dict:
    """Table 2 shaped: normalized cuts on the backbone's own features (the
    NCuts baseline) against DeepNCuts trained end to end with the J2 loss at
    full image resolution, both scored by covering on the held-out split."""
    from . import evaluate

    data = ["--data-root", args.data_root] if args.data_root else ["--data", "mosaics"]
    train_data = ["--data", "bsds300", "--data-root", args.data_root] if args.data_root else ["--data", "mosaics"]
    weights = ["--weights", args.weights] if args.weights else []
    quiet = ["--no-progress"] if args.no_progress else []
    run_dir = os.path.join(args.out, "runs", "deepncuts")
    argv = ["ncuts", *train_data, "--backbone", args.backbone, "--objective", args.objective,
            "--epochs", str(args.epochs), "--lr", str(args.lr), "--seed", str(args.seed), "--device", args.device,
            "--stride", str(args.stride), "--out", run_dir, *weights, *quiet]
    summary = train_or_reuse(argv, run_dir, args.epochs, "DeepNCuts")
    common = [*data, "--split", "test", "--device", args.device, "--seed", str(args.seed), *quiet]
    print("== NCuts baseline: the backbone's features", flush=True)
    base = evaluate.main(["ncuts", "--untrained", "--backbone", args.backbone, "--stride", str(args.stride),
                          *weights, *common, "--out", os.path.join(args.out, "eval", "ncuts")])
    print("== DeepNCuts", flush=True)
    deep = evaluate.main(["ncuts", "--checkpoint", os.path.join(run_dir, engine.CHECKPOINT), *common,
                          "--out", os.path.join(args.out, "eval", "deepncuts")])
    evaluate.plot_panels(os.path.join(args.out, "table2_panel.png"), deep["dataset"],
                         [("NCuts", base["shown"]), ("DeepNCuts", deep["shown"])])
    rows = []
    for method, r in (("NCuts", base), ("DeepNCuts", deep)):
        rows.append({"method": method, "features": r["method"], "images": r["images"],
                     **{k: r[k] for k in ("best_covering_ois", "avg_covering_ois", "best_covering_ods",
                                          "avg_covering_ods")}})
    table = {"rows": rows, "training": {k: summary.get(k) for k in ("final_objective", "final_rank",
                                                                    "nonfinite_steps", "images_per_s", "epochs")},
             "config": {k: v for k, v in vars(args).items() if k not in ("run", "argv")}}
    with open(os.path.join(args.out, "table2.json"), "w") as f:
        json.dump(table, f, indent=2)
    name = "held-out mosaics" if not args.data_root else f"the test split of {args.data_root}"
    lines = ["# Table 2 shaped: covering on " + name, "",
             f"`python -m matbp.experiments {' '.join(sys.argv[1:] if args.argv is None else args.argv)}`", "",
             f"Backbone `{args.backbone}`{' (weights ' + args.weights + ')' if args.weights else ''}, "
             f"{args.objective.upper()} loss at image resolution / {args.stride}, {args.epochs} epochs, lr "
             f"{args.lr}; DeepNCuts training: final objective {summary['final_objective']:.3f}, rank of W "
             f"{summary['final_rank']:.1f}, {summary['nonfinite_steps']} skipped steps, "
             f"{summary['images_per_s']:.1f} images/s. Segmentations: k = 2…9, connected components split.", "",
             "| method | features | images | best covering OIS (average) | best covering ODS (average) |",
             "|---|---|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['features']} | {r['images']} | {r['best_covering_ois']:.3f} "
                     f"({r['avg_covering_ois']:.3f}) | {r['best_covering_ods']:.3f} ({r['avg_covering_ods']:.3f}) |")
    with open(os.path.join(args.out, "table2.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m matbp.experiments", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="experiment", required=True)
    p = sub.add_parser("table1", help="Table 1 (S): baseline, DeepO2P, DeepO2P-FC and the other global layers",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--data", default="textures")
    p.add_argument("--data-root", default=None)
    p.add_argument("--backbone", default="small")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None,
                   help="one learning rate for every network (default: each network's own, chosen by a sweep)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--fc-dim", type=int, default=1024,
                   help="width of DeepO2P-FC's two fully connected layers (AlexNet's: 4096)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", nargs="*", choices=[c.key for c in TABLE1], help="run only these configurations")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_table1)
    p = sub.add_parser("table2", help="Table 2 shaped: NCuts on backbone features vs DeepNCuts, by covering",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--data-root", default=None, help="a BSDS300-layout folder (default: the built-in mosaics)")
    p.add_argument("--backbone", default="small")
    p.add_argument("--weights", default=None, help="the backbone's weights file (the paper: ImageNet AlexNet/VGG)")
    p.add_argument("--objective", default="j2", choices=("j2", "j1"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run_table2)
    return parser


def main(argv: Optional[List[str]] = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    os.makedirs(args.out, exist_ok=True)
    return args.run(args)


if __name__ == "__main__":
    main()
