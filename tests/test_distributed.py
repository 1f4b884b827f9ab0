"""Multi-process training on the CPU (gloo): two processes on two halves of a
batch average to the gradients of one process on the whole batch, and
``torchrun --nproc_per_node 2 -m matbp.train`` reproduces a one-process run."""

import csv
import json
import os
import socket
import subprocess
import sys

import torch
import torch.multiprocessing as mp

from matbp import engine, train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _problem():
    from matbp.datasets import build_dataset
    from matbp.models import build_model

    torch.manual_seed(0)
    model = build_model("deepo2p", "small", 10).double()
    data = build_dataset("textures", "train")
    images = torch.stack([data[i][0] for i in range(8)]).double()
    labels = torch.tensor([data[i][1] for i in range(8)])
    return model, images, labels


def _half_batch_gradients(rank, world_size, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    d = engine.setup_distributed("cpu")
    try:
        model, images, labels = _problem()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        half = images.shape[0] // world_size
        part = slice(rank * half, (rank + 1) * half)
        loss, _ = train.classification_step(ddp, (images[part], labels[part]))
        loss.backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in model.named_parameters()}, out)
        torch.distributed.barrier()  # tearing gloo down while the peer still works aborts it
    finally:
        engine.cleanup_distributed(d)


def test_two_gloo_processes_average_to_the_whole_batch_gradient(tmp_path):
    out = str(tmp_path / "grads.pt")
    mp.spawn(_half_batch_gradients, args=(2, _free_port(), out), nprocs=2, join=True)
    two = torch.load(out)
    model, images, labels = _problem()
    loss, _ = train.classification_step(model, (images, labels))
    loss.backward()
    for name, p in model.named_parameters():
        rel = ((two[name] - p.grad).norm() / p.grad.norm()).item()
        assert rel < 1e-10, (name, rel)


def _steps(out):
    with open(os.path.join(out, engine.STEPS), newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_torchrun_two_processes_reproduce_one(tmp_path):
    common = ["o2p", "--data", "textures", "--model", "deepo2p", "--backbone", "small", "--epochs", "2",
              "--batch-size", "16", "--train-samples", "32", "--val-samples", "24", "--dtype", "float64",
              "--device", "cpu", "--no-progress"]
    one, two = tmp_path / "one", tmp_path / "two"
    train.main(common + ["--out", str(one)])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "matbp.train", *common,
         "--out", str(two)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(two / engine.SUMMARY) as f:
        summary = json.load(f)
    assert summary["device"]["world_size"] == 2 and summary["device"]["backend"] == "gloo"
    a, b = _steps(one), _steps(two)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-9 * abs(x), (a, b)
    with open(one / engine.SUMMARY) as f:
        assert abs(json.load(f)["val_error"] - summary["val_error"]) < 1e-12
