"""The training machinery every matbp training command shares.

One process or many (``torchrun``): :func:`setup_distributed` reads the
environment torchrun sets and starts DistributedDataParallel with gloo on the
CPU and NCCL on CUDA. ``--batch-size`` is the global batch: each of the W
processes takes B/W samples, so a run's arithmetic does not depend on how
many processes share it (the multi-process test checks exactly that).

A task (classification for DeepO2P, normalized cuts for DeepNCuts) supplies
one function, ``step(model, batch) -> (loss, stats)``, and :class:`Trainer`
does the rest: data order from the seed and the epoch, one SGD step per
batch that is skipped (and counted) when the loss or any gradient is not
finite, tqdm progress, ``log.csv``/``steps.csv``, a checkpoint every epoch
that ``--resume`` continues bit for bit (model, optimiser, scheduler and
every process's random state), ``summary.json`` and the curves figure. Only
rank 0 writes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import json
import math
import os
import platform
import random
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

CHECKPOINT = "last.pt"
BEST = "best.pt"
LOG = "log.csv"
STEPS = "steps.csv"
SUMMARY = "summary.json"
CURVES = "curves.png"
CHECKPOINT_FORMAT = 1


class TrainingError(RuntimeError):
    """A training run that cannot start or continue (bad option, resume
    mismatch); the message says what to change."""


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------

def add_common_arguments(parser: argparse.ArgumentParser, *, lr: float = 0.01,
                         batch_size: Optional[int] = None) -> None:
    """Options every training command has (the paper's hyper-parameters and
    the run's bookkeeping); ``lr`` and ``batch_size`` are the command's
    defaults (no default batch size: the option is required)."""
    g = parser.add_argument_group("optimisation (SGD with momentum, as in the paper)")
    g.add_argument("--epochs", type=int, required=True, help="epochs to train (with --resume: the total)")
    g.add_argument("--batch-size", type=int, required=batch_size is None, default=batch_size,
                   help="global batch size, split evenly over the torchrun processes (the paper: 100)")
    g.add_argument("--lr", type=float, default=lr,
                   help="learning rate; with --weights, the rate of the layers loaded from the file")
    g.add_argument("--new-layer-lr-mult", type=float, default=10.0,
                   help="with --weights, layers not in the file (new layers) train at lr times this "
                        "(the paper: 10); from scratch every layer trains at --lr")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--lr-schedule", choices=("constant", "cosine", "step"), default="cosine",
                   help="per-epoch schedule: constant, cosine to 0 over --epochs, or x --lr-gamma every --lr-step epochs")
    g.add_argument("--lr-step", type=int, default=30)
    g.add_argument("--lr-gamma", type=float, default=0.1)
    g.add_argument("--clip-grad", type=float, default=None, help="clip the global gradient norm to this value")
    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="initialisation, data order, augmentation, dropout")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="parameter and input dtype (the matbp layers compute in float64 inside either way)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes per training process")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    g.add_argument("--out", required=True, help="output folder: last.pt, best.pt, log.csv, steps.csv, summary.json, curves.png")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    g.add_argument("--max-steps-per-epoch", type=int, default=None,
                   help="cap the training steps per epoch (quick runs and smoke tests)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


# Options that may differ when a run is resumed; any other difference makes
# the continuation a different experiment, which --resume refuses.
RESUMABLE_OPTIONS = {"epochs", "resume", "workers", "threads", "no_progress", "device", "out"}


# --------------------------------------------------------------------------
# Processes and devices
# --------------------------------------------------------------------------

@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: Optional[str]) -> Distributed:
    """The process group torchrun describes in the environment (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), or a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {device}: CUDA is not available in this torch or on this machine")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise TrainingError(f"--device {device}: expected cpu, cuda or cuda:N")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, dev)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Have glibc's malloc keep freed blocks in the process for reuse.

    By default glibc hands blocks above an adaptive threshold back to the
    kernel when they are freed, and every new activation, gradient and float64
    work buffer of the next step then costs page faults on first touch: about
    19 000 per normalized-cuts loss at 481×321, a third of the loss's time,
    and a third of a whole DeepNCuts training step on the 2-core machine
    (docs/design.md §3). Blocks up to ``mmap_threshold`` bytes now come from
    the heap, which is trimmed only past ``trim_threshold`` free bytes.

    Called by every training and evaluation command. Does nothing (and
    returns False) when the user set MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_ (their choice stands) or the C library is not
    glibc; returns True when the settings took effect.
    """
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold))


@contextlib.contextmanager
def training_processes(args):
    """The process group of a training command (``--threads``, ``--device``,
    torchrun's environment), seeded with ``--seed``, torn down at the end."""
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    d = setup_distributed(args.device)
    try:
        seed_everything(args.seed)
        yield d
        if d.enabled:  # no process tears gloo down while a peer still writes (it aborts)
            dist.barrier()
    finally:
        cleanup_distributed(d)


def cleanup_distributed(d: Distributed) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_(t: Tensor, d: Distributed, op=None) -> Tensor:
    if d.enabled:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_name() -> str:
    """The CPU's model name (for the records of runs and benchmarks)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(d: Distributed) -> Tuple[dict, dict]:
    """(versions, device) records for summary.json."""
    import matbp

    versions = {"matbp": matbp.__version__, "torch": torch.__version__, "python": platform.python_version(),
                "numpy": np.__version__}
    try:
        import torchvision

        versions["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if torch.version.cuda:
        versions["cuda"] = torch.version.cuda
    if d.device.type == "cuda":
        name = torch.cuda.get_device_name(d.device)
    else:
        name = cpu_name()
    device = {"type": d.device.type, "name": name, "world_size": d.world_size,
              "threads_per_process": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "backend": dist.get_backend() if d.enabled else None}
    return versions, device


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

class ShardSampler(torch.utils.data.Sampler):
    """Evaluation indices of one process (rank, rank + W, ...): every sample
    exactly once over all processes, unlike DistributedSampler, which pads."""

    def __init__(self, n: int, d: Distributed):
        self.indices = range(d.rank, n, d.world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def per_process_batch(batch_size: int, d: Distributed) -> int:
    if batch_size < d.world_size or batch_size % d.world_size:
        raise TrainingError(
            f"--batch-size {batch_size} is the global batch and must be a positive multiple of the "
            f"{d.world_size} processes")
    return batch_size // d.world_size


def make_loaders(train_set, val_set, args, d: Distributed, collate_fn=None):
    per_process = per_process_batch(args.batch_size, d)
    # DistributedSampler with one replica is a seeded shuffle whose order is
    # a function of (seed, epoch): the same in a resumed run.
    train_sampler = torch.utils.data.DistributedSampler(
        train_set, num_replicas=d.world_size, rank=d.rank, shuffle=True, seed=args.seed, drop_last=False)
    common = dict(num_workers=args.workers, collate_fn=collate_fn, pin_memory=d.device.type == "cuda",
                  persistent_workers=False)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=per_process, sampler=train_sampler, **common)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=per_process, sampler=ShardSampler(len(val_set), d),
                                             **common)
    return train_loader, val_loader


def to_device(batch, device: torch.device, dtype: torch.dtype):
    """Moves a batch (tensor or nested tuple/list/dict) to the device; floating
    tensors take the run's dtype."""
    if isinstance(batch, Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.to(dtype) if batch.is_floating_point() else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device, dtype) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device, dtype) for k, v in batch.items()}
    return batch


# --------------------------------------------------------------------------
# Optimiser
# --------------------------------------------------------------------------

def parameter_groups(model: torch.nn.Module, args) -> List[dict]:
    """Layers loaded from --weights train at --lr, new layers at
    --lr x --new-layer-lr-mult (the paper's fine-tuning rates); from scratch,
    all at --lr. Biases and normalisation gains get no weight decay."""
    pretrained = getattr(model, "pretrained_parameter_names", set()) or set()
    mult = args.new_layer_lr_mult if pretrained else 1.0
    groups: Dict[Tuple[bool, bool], List[Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name in pretrained, p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    out = []
    for (is_pretrained, no_decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": args.lr * (1.0 if is_pretrained else mult),
                    "weight_decay": 0.0 if no_decay else args.weight_decay,
                    "name": ("pretrained" if is_pretrained else "new") + ("/no-decay" if no_decay else "")})
    return out


def lr_factor(epoch: int, args) -> float:
    """The schedule as a pure function of the epoch and the options, so a
    resumed run (even one whose --epochs was raised) sets the rate the
    uninterrupted run would have."""
    if args.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, args.epochs) / max(args.epochs, 1)))
    if args.lr_schedule == "step":
        return args.lr_gamma ** (epoch // max(args.lr_step, 1))
    return 1.0


def make_optimizer(model: torch.nn.Module, args):
    optimizer = torch.optim.SGD(parameter_groups(model, args), lr=args.lr, momentum=args.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, args))
    return optimizer, scheduler


# --------------------------------------------------------------------------
# One step, one epoch
# --------------------------------------------------------------------------

StepFn = Callable[[torch.nn.Module, object], Tuple[Tensor, Dict[str, float]]]


def _forward(step: StepFn, model, batch) -> Tuple[Optional[Tensor], Dict[str, float], str]:
    """The task's loss, or None with the reason when the forward pass failed
    numerically (torch.linalg raises LinAlgError on a spectrum it cannot
    decompose: a competitor's failure that the run counts, not a crash)."""
    try:
        loss, stats = step(model, batch)
    except torch.linalg.LinAlgError as exc:
        return None, {}, f"forward failed: {str(exc).splitlines()[0]}"
    if not torch.isfinite(loss.detach()).item():
        return None, stats, f"loss is {loss.item()}"
    return loss, stats, ""


def _gradients_finite(params: Sequence[Tensor], clip: Optional[float]) -> Tuple[bool, float]:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True, 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else float("inf"))
    finite = torch.stack([torch.isfinite(g).all() for g in grads]).all() & torch.isfinite(norm)
    return bool(finite.item()), float(norm.item())


def train_step(model, ddp_model, batch, step: StepFn, optimizer, d: Distributed, clip: Optional[float]):
    """One SGD step; returns (loss or None, stats, reason skipped or "", grad norm);
    the step was applied when the reason is "".

    A step is applied only when every process has a finite loss and the
    averaged gradients are finite; otherwise every process skips it, so the
    replicas never diverge and no process waits for a collective another
    skipped."""
    optimizer.zero_grad(set_to_none=True)
    loss, stats, reason = _forward(step, ddp_model, batch)
    if d.enabled:
        ok = torch.tensor([0.0 if loss is None else 1.0], device=d.device)
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() < 1:
            return None, stats, reason or "another process's loss was not finite", float("nan")
    elif loss is None:
        return None, stats, reason, float("nan")
    loss.backward()
    finite, norm = _gradients_finite([p for p in model.parameters() if p.requires_grad], clip)
    if not finite:  # the loss is still logged: finite loss, NaN gradient is the telling case
        optimizer.zero_grad(set_to_none=True)
        return loss.detach(), stats, "gradient is not finite", norm
    optimizer.step()
    loss = loss.detach().clone()
    if d.enabled:  # the logged loss is the global batch's, as in a single process
        dist.all_reduce(loss)
        loss /= d.world_size
    return loss, stats, "", norm


def _progress(iterable, total, desc, d: Distributed, args):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr,
                disable=args.no_progress or not d.is_main)


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------

class Trainer:
    """Trains ``model`` with ``step`` and evaluates with ``evaluate``.

    ``step(model, batch) -> (loss, stats)``: the mean loss of the process's
    batch and sums to log (for example {"correct": 7, "count": 16}).
    ``evaluate(model, loader, d) -> dict`` returns the validation metrics
    already reduced over processes; ``error_key`` names the one the summary
    reports as ``val_error`` (a fraction in [0, 1], lower is better).
    ``describe(stats) -> dict`` turns summed train stats into logged metrics.
    """

    def __init__(self, args, model, train_set, val_set, step: StepFn, evaluate, describe,
                 d: Distributed, *, collate_fn=None, extra_summary: Optional[Callable[[], dict]] = None,
                 select: str = "val_error", panels: Optional[Sequence["Panel"]] = None):
        self.args, self.d = args, d
        self.select = select
        self.panels = panels if panels is not None else CLASSIFICATION_PANELS
        self.step, self.evaluate, self.describe = step, evaluate, describe
        self.extra_summary = extra_summary
        self.train_set, self.val_set = train_set, val_set
        self.dtype = getattr(torch, args.dtype)
        self.model = model.to(d.device, self.dtype)
        if d.enabled:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        else:
            self.ddp_model = self.model
        self.optimizer, self.scheduler = make_optimizer(self.model, args)
        self.train_loader, self.val_loader = make_loaders(train_set, val_set, args, d, collate_fn)
        self.out = args.out
        self.history: List[dict] = []
        self.nonfinite_steps = 0
        self.nonfinite_reasons: Dict[str, int] = {}
        self.global_step = 0
        self.start_epoch = 0
        self.train_time = 0.0
        self.train_images = 0

    # -- checkpoints --------------------------------------------------------

    def _config(self) -> dict:
        return {k: v for k, v in vars(self.args).items() if not callable(v)}

    def _gather_rng(self) -> List[dict]:
        state = _rng_state()
        if not self.d.enabled:
            return [state]
        states = [None] * self.d.world_size
        dist.all_gather_object(states, state)
        return states

    def save(self, epoch: int, best: bool) -> None:
        rng = self._gather_rng()
        if not self.d.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT, "epoch": epoch, "config": self._config(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng, "history": self.history,
            "nonfinite_steps": self.nonfinite_steps, "nonfinite_reasons": self.nonfinite_reasons,
            "global_step": self.global_step, "train_time": self.train_time, "train_images": self.train_images,
        }
        path = os.path.join(self.out, CHECKPOINT)
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)  # a run killed while saving keeps the previous checkpoint
        if best:
            best_state = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "config": state["config"],
                          "model": state["model"]}
            torch.save(best_state, os.path.join(self.out, BEST) + ".tmp")
            os.replace(os.path.join(self.out, BEST) + ".tmp", os.path.join(self.out, BEST))

    def resume(self) -> None:
        path = os.path.join(self.out, CHECKPOINT)
        if not os.path.isfile(path):
            raise TrainingError(f"--resume: no checkpoint {path}; start the run without --resume")
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"--resume: {path} has checkpoint format {state.get('format')}, "
                                f"this matbp writes {CHECKPOINT_FORMAT}")
        saved, now = state["config"], self._config()
        changed = sorted(k for k in set(saved) | set(now)
                         if k not in RESUMABLE_OPTIONS and saved.get(k) != now.get(k))
        if changed:
            detail = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise TrainingError(f"--resume: the options differ from the run in {self.out} ({detail}); "
                                "use the same options (only --epochs and the run's plumbing may change)")
        if len(state["rng"]) != self.d.world_size:
            raise TrainingError(f"--resume: {path} was written by {len(state['rng'])} processes, this run has "
                                f"{self.d.world_size}; resume with the same number of processes")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * lr_factor(self.start_epoch_of(state), self.args)
        _set_rng_state(state["rng"][self.d.rank])
        self.history = state["history"]
        self.nonfinite_steps = state["nonfinite_steps"]
        self.nonfinite_reasons = state["nonfinite_reasons"]
        self.global_step = state["global_step"]
        self.train_time, self.train_images = state["train_time"], state["train_images"]
        self.start_epoch = self.start_epoch_of(state)

    @staticmethod
    def start_epoch_of(state: dict) -> int:
        return state["epoch"] + 1

    # -- logs ---------------------------------------------------------------

    def _append_csv(self, name: str, rows: Iterable[dict]) -> None:
        rows = list(rows)
        if not self.d.is_main or not rows:
            return
        path = os.path.join(self.out, name)
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def _truncate_logs(self) -> None:
        """A resumed run rewrites what came after its checkpoint, so the logs
        read as one uninterrupted run."""
        if not self.d.is_main:
            return
        for name, key in ((LOG, "epoch"), (STEPS, "epoch")):
            path = os.path.join(self.out, name)
            if not os.path.exists(path):
                continue
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r[key]) < self.start_epoch]
            os.remove(path)
            self._append_csv(name, rows)

    # -- loop ---------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict:
        args, d = self.args, self.d
        self.ddp_model.train()
        self.train_loader.sampler.set_epoch(epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        total = len(self.train_loader)
        if args.max_steps_per_epoch is not None:
            total = min(total, args.max_steps_per_epoch)
        sums: Dict[str, float] = {}
        loss_sum, loss_count, images, skipped = 0.0, 0, 0, 0
        step_rows = []
        bar = _progress(self.train_loader, total, f"epoch {epoch + 1}/{args.epochs}", d, args)
        t0 = time.perf_counter()
        for i, batch in enumerate(bar):
            if i >= total:
                break
            batch = to_device(batch, d.device, self.dtype)
            loss, stats, reason, norm = train_step(self.model, self.ddp_model, batch, self.step, self.optimizer,
                                                   d, args.clip_grad)
            n = _batch_len(batch)
            images += n
            if reason:
                skipped += 1
                self.nonfinite_reasons[reason] = self.nonfinite_reasons.get(reason, 0) + 1
            else:
                loss_sum += loss.item() * n
                loss_count += n
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            row = {"epoch": epoch, "step": self.global_step,
                   "loss": repr(loss.item()) if loss is not None else "nan",
                   "grad_norm": repr(norm), "lr": self.optimizer.param_groups[0]["lr"], "skipped": reason}
            row.update({k: repr(v) for k, v in self.describe(stats).items()})
            step_rows.append(row)
            self.global_step += 1
            elapsed = time.perf_counter() - t0
            bar.set_postfix(self.describe_postfix(loss_sum, loss_count, sums, images * d.world_size, elapsed),
                            refresh=False)
        elapsed = time.perf_counter() - t0
        bar.close()
        totals = torch.tensor([loss_sum, loss_count, images, skipped] + [sums[k] for k in sorted(sums)],
                              dtype=torch.float64, device=d.device)
        all_reduce_(totals, d)
        loss_sum, loss_count, images, skipped = totals[:4].tolist()
        sums = dict(zip(sorted(sums), totals[4:].tolist()))
        if d.enabled:
            skipped /= d.world_size  # every process counted the same skipped step
        self.nonfinite_steps += int(skipped)
        self.train_time += elapsed
        self.train_images += int(images)
        self._append_csv(STEPS, step_rows)
        row = {"train_loss": loss_sum / loss_count if loss_count else float("nan"),
               "images_per_s": images / elapsed if elapsed > 0 else float("nan"),
               "nonfinite_steps": int(skipped)}
        row.update({f"train_{k}": v for k, v in self.describe(sums).items()})
        return row

    def describe_postfix(self, loss_sum, loss_count, sums, images, elapsed) -> dict:
        post = {"loss": f"{loss_sum / loss_count:.4f}" if loss_count else "nan"}
        post.update({k: f"{v:.4f}" for k, v in self.describe(sums).items()})
        post["img/s"] = f"{images / elapsed:.1f}" if elapsed > 0 else "-"
        return post

    @torch.no_grad()
    def validate(self) -> dict:
        self.ddp_model.eval()
        bar = _progress(self.val_loader, len(self.val_loader), "val", self.d, self.args)
        batches = (to_device(b, self.d.device, self.dtype) for b in bar)
        metrics = self.evaluate(self.model, batches, self.d)
        bar.close()
        return {f"val_{k}": v for k, v in metrics.items()}

    def fit(self) -> dict:
        args, d = self.args, self.d
        if d.is_main:
            os.makedirs(self.out, exist_ok=True)
        if args.resume:
            self.resume()
            self._truncate_logs()
        elif d.is_main and os.path.exists(os.path.join(self.out, CHECKPOINT)):
            raise TrainingError(f"{self.out} already holds a run (last.pt); pass --resume to continue it "
                                "or choose another --out")
        if d.enabled:
            dist.barrier()
        best = min((h[self.select] for h in self.history), default=math.inf)
        for epoch in range(self.start_epoch, args.epochs):
            t0 = time.perf_counter()
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(epoch))
            with warnings.catch_warnings():  # an epoch whose steps were all skipped still advances the schedule
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
                self.scheduler.step()
            row.update(self.validate())
            row["epoch_time_s"] = time.perf_counter() - t0
            self.history.append(row)
            improved = row[self.select] < best
            best = min(best, row[self.select])
            self.save(epoch, improved)
            self._append_csv(LOG, [row])
            if d.is_main:
                shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()}
                print("epoch " + " ".join(f"{k}={v}" for k, v in shown.items() if k != "epoch")
                      + f" [{epoch + 1}/{args.epochs}]", flush=True)
        summary = self.summary()
        if d.is_main:
            with open(os.path.join(self.out, SUMMARY), "w") as f:
                json.dump(summary, f, indent=2, default=str)
            plot_curves(self.out, self.history, self.panels)
        return summary

    def summary(self) -> dict:
        versions, device = environment(self.d)
        last = self.history[-1] if self.history else {}
        best = min(self.history, key=lambda h: h[self.select]) if self.history else {}
        out = {
            "val_error": last.get("val_error"),
            f"best_{self.select}": best.get(self.select),
            "best_epoch": best.get("epoch"),
            "train_loss": last.get("train_loss"),
            "val_loss": last.get("val_loss"),
            "nonfinite_steps": self.nonfinite_steps,
            "nonfinite_reasons": self.nonfinite_reasons,
            "images_per_s": self.train_images / self.train_time if self.train_time > 0 else None,
            "epochs": len(self.history),
            "steps": self.global_step,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "config": self._config(),
            "versions": versions,
            "device": device,
        }
        if self.extra_summary is not None:
            out.update(self.extra_summary())
        return out


def _batch_len(batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values()))
    return int(first.shape[0])


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------

def read_csv(path: str) -> List[dict]:
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _number(v: str):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


@dataclass(frozen=True)
class Panel:
    """One plot of curves.png: per-epoch ``series`` (key in log.csv, label,
    scale) and, when ``step_key`` is set, that column of steps.csv too."""
    ylabel: str
    series: Tuple[Tuple[str, str, float], ...]
    step_key: Optional[str] = None


CLASSIFICATION_PANELS = (
    Panel("loss", (("train_loss", "train", 1.0), ("val_loss", "validation", 1.0)), step_key="loss"),
    Panel("error (%)", (("train_error", "train", 100.0), ("val_error", "validation", 100.0))),
)


def plot_curves(out: str, history: List[dict], panels: Sequence[Panel] = CLASSIFICATION_PANELS) -> Optional[str]:
    """curves.png: one plot per panel, per-epoch curves over the per-step
    values they summarise."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    steps_path = os.path.join(out, STEPS)
    steps = read_csv(steps_path) if os.path.exists(steps_path) else []
    per_epoch = max(1, (max((r["step"] for r in steps), default=0) + 1) / max(len(history), 1))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel.step_key:
            pts = [r for r in steps if isinstance(r.get(panel.step_key), (int, float))
                   and math.isfinite(r[panel.step_key])]
            if pts:
                ax.plot([(r["step"] + 1) / per_epoch for r in pts], [r[panel.step_key] for r in pts],
                        color="0.75", lw=0.8, label="train (per step)")
        for (key, label, scale), marker in zip(panel.series, ("o-", "s-", "^-", "v-")):
            if key in history[0]:
                ax.plot(epochs, [scale * h[key] for h in history], marker, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(panel.ylabel)
        ax.legend()
    fig.tight_layout()
    path = os.path.join(out, CURVES)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
