"""Shared helpers for matbp's benchmark scripts.

Benchmarks are plain scripts (see docs/design.md §7): each one measures every
competitor in the same process, reports medians and ratios, prints one table,
and writes machine-readable JSON plus a Markdown summary under
``bench/results/``, tagged with the device, thread count and versions.

This module is imported by the scripts in ``bench/`` (which is not a package;
scripts put their own directory on ``sys.path``).  It holds:

* timing: :func:`synchronize`, :func:`time_fn`, :func:`time_interleaved`,
  :func:`time_interleaved_adaptive`, :func:`adaptive_repeats`, :func:`median`;
* the environment record: :func:`environment`, :func:`device_tag`;
* output: :class:`Column`, :func:`format_table`, :func:`print_table`,
  :func:`write_results` (one table), :func:`write_tables` (several in one
  JSON/Markdown pair).

Rows are plain dicts; a table is described by an ordered list of columns
(``Column`` objects, ``(key, header)`` / ``(key, header, fmt)`` tuples or bare
keys), so future benchmarks (o2p_log, ncut, GPU runs) reuse the same writer.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
DEFAULT_RESULTS_DIR = os.path.join(BENCH_DIR, "results")


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------

def _is_cuda(device: Any) -> bool:
    if device is None:
        return False
    if isinstance(device, torch.Tensor):
        return device.is_cuda
    return torch.device(device).type == "cuda"


def synchronize(device: Any = None) -> None:
    """Wait for queued GPU work when ``device`` is a CUDA device (or tensor)."""
    if _is_cuda(device) and torch.cuda.is_available():
        torch.cuda.synchronize(torch.device(device) if not isinstance(device, torch.Tensor) else device.device)


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def _timed_call(fn: Callable[[], Any], device: Any) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def time_fn(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1,
            device: Any = None) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed calls.

    Returns ``{"median": seconds, "samples": [seconds, ...]}``.  Pass a CUDA
    ``device`` (or tensor) so every call is bracketed by
    ``torch.cuda.synchronize``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = [_timed_call(fn, device) for _ in range(repeats)]
    return {"median": median(samples), "samples": samples}


def time_interleaved(fns: Mapping[str, Callable[[], Any]], *, repeats: int = 5,
                     warmup: int = 1, device: Any = None, start: int = 0) -> dict:
    """Time several competitors, interleaved so machine noise hits all alike.

    Each repetition calls every competitor once; the order is rotated from one
    repetition to the next (A B, B A, ... for two), so neither always runs
    first.  ``start`` offsets the rotation (to continue an earlier run).
    Returns ``{name: {"median": s, "samples": [...]}}``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(start, start + repeats):
        k = rep % len(names)
        order = names[k:] + names[:k]
        for name in order:
            samples[name].append(_timed_call(fns[name], device))
    return {name: {"median": median(s), "samples": s} for name, s in samples.items()}


def adaptive_repeats(seconds_per_repeat: float, *, budget_s: float = 8.0,
                     min_repeats: int = 3, max_repeats: int = 50) -> int:
    """How many repetitions fit in ``budget_s`` (clamped to [min, max])."""
    if seconds_per_repeat <= 0 or not math.isfinite(seconds_per_repeat):
        return max_repeats
    return int(max(min_repeats, min(max_repeats, budget_s // seconds_per_repeat)))


def time_interleaved_adaptive(fns: Mapping[str, Callable[[], Any]], *, budget_s: float = 8.0,
                              min_repeats: int = 3, max_repeats: int = 50,
                              repeats: int | None = None, device: Any = None) -> dict:
    """:func:`time_interleaved` with the repetition count sized on the fly.

    No warm-up is done here (warm the competitors up first).  The first
    interleaved repetition is timed and kept as a sample; its total time picks
    the count with :func:`adaptive_repeats` (unless ``repeats`` is given) and
    the remaining repetitions continue the rotation.  Returns the same dict as
    :func:`time_interleaved` plus ``"_repeats"``: the number of repetitions.
    """
    first = time_interleaved(fns, repeats=1, warmup=0, device=device)
    if repeats is None:
        per_rep = sum(v["median"] for v in first.values())
        repeats = adaptive_repeats(per_rep, budget_s=budget_s, min_repeats=min_repeats,
                                   max_repeats=max_repeats)
    samples = {name: list(v["samples"]) for name, v in first.items()}
    if repeats > 1:
        rest = time_interleaved(fns, repeats=repeats - 1, warmup=0, device=device, start=1)
        for name, v in rest.items():
            samples[name].extend(v["samples"])
    out: dict = {name: {"median": median(s), "samples": s} for name, s in samples.items()}
    out["_repeats"] = repeats
    return out


# --------------------------------------------------------------------------
# Environment record
# --------------------------------------------------------------------------

def _cpu_model() -> str:
    from matbp.engine import cpu_name

    return cpu_name()


def _blas_info() -> str:
    """A one-line summary of the BLAS/LAPACK torch was built with."""
    try:
        cfg = torch.__config__.show()
    except Exception:  # pragma: no cover - very old torch
        return "unknown"
    parts = []
    for key in ("BLAS_INFO", "LAPACK_INFO"):
        m = re.search(rf"{key}=([^,\s]+)", cfg)
        if m:
            parts.append(f"{key}={m.group(1)}")
    for line in cfg.splitlines():
        line = line.strip().lstrip("- ").strip()
        if re.search(r"Math Kernel Library|OpenBLAS|BLIS|Accelerate|LAPACK is", line):
            parts.append(line)
    return "; ".join(parts) if parts else "unknown"


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_tag(device: Any = "cpu") -> str:
    """Short tag used in result filenames: ``cpu`` or ``cuda``."""
    return torch.device(device).type


def environment(device: Any = "cpu") -> dict:
    """Describe where the benchmark ran (device, threads, versions, BLAS, date)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = _cpu_model()
    try:
        import matbp
        matbp_version = getattr(matbp, "__version__", "unknown")
    except Exception as exc:  # report rather than crash the record
        matbp_version = f"unavailable ({type(exc).__name__})"
    env = {
        "device": dev.type,
        "device_name": name,
        "num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "matbp": matbp_version,
        "python": platform.python_version(),
        "blas_lapack": _blas_info(),
        "git": _git_revision(),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if dev.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


# --------------------------------------------------------------------------
# Tables and result files
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One table column: dict ``key`` in each row, ``header`` text, ``fmt``.

    ``fmt`` is a format spec (``".3f"``), a callable ``value -> str``, or None
    (``str``; floats get ``.4g``).  Missing / None values print as ``-``.
    """
    key: str
    header: str | None = None
    fmt: str | Callable[[Any], str] | None = None
    align: str = "right"  # "left" or "right"

    def render(self, value: Any) -> str:
        if value is None:
            return "-"
        if callable(self.fmt):
            return self.fmt(value)
        if isinstance(self.fmt, str):
            try:
                return format(value, self.fmt)
            except (TypeError, ValueError):
                return str(value)
        if isinstance(value, float):
            return format(value, ".4g")
        return str(value)

    @property
    def title(self) -> str:
        return self.header if self.header is not None else self.key


def as_columns(columns: Iterable[Any]) -> list[Column]:
    out = []
    for c in columns:
        if isinstance(c, Column):
            out.append(c)
        elif isinstance(c, str):
            out.append(Column(c))
        else:
            out.append(Column(*c))
    return out


def _cells(rows: Sequence[Mapping[str, Any]], cols: list[Column]) -> list[list[str]]:
    return [[c.render(row.get(c.key)) for c in cols] for row in rows]


def format_env(env: Mapping[str, Any], markdown: bool = False) -> str:
    lines = []
    for k, v in env.items():
        lines.append(f"- **{k}**: {v}" if markdown else f"  {k}: {v}")
    return "\n".join(lines)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Iterable[Any],
                 markdown: bool = True) -> str:
    """Render rows as a Markdown table (or a plain aligned text table)."""
    cols = as_columns(columns)
    body = _cells(rows, cols)
    widths = [max([len(c.title)] + [len(r[i]) for r in body]) for i, c in enumerate(cols)]

    def fmt_line(cells: Sequence[str]) -> str:
        padded = [s.rjust(w) if c.align == "right" else s.ljust(w)
                  for s, w, c in zip(cells, widths, cols)]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    lines = [fmt_line([c.title for c in cols])]
    if markdown:
        lines.append("|" + "|".join(
            ("-" * (w + 1) + ":") if c.align == "right" else (":" + "-" * (w + 1))
            for w, c in zip(widths, cols)) + "|")
    else:
        lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt_line(r) for r in body)
    return "\n".join(lines)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Iterable[Any], *,
                title: str | None = None, env: Mapping[str, Any] | None = None,
                notes: Sequence[str] = (), file=None) -> None:
    """Print the environment (if given), then the table, to stdout."""
    file = file or sys.stdout
    if title:
        print(title, file=file)
    if env:
        print(format_env(env), file=file)
    print(format_table(rows, columns, markdown=False), file=file)
    for note in notes:
        print(note, file=file)
    file.flush()


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.dtype):
        return str(x).replace("torch.", "")
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def write_results(name: str, rows: Sequence[Mapping[str, Any]], columns: Iterable[Any], *,
                  env: Mapping[str, Any], out_dir: str | None = None,
                  title: str | None = None, config: Mapping[str, Any] | None = None,
                  notes: Sequence[str] = (), extra: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """Write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md``.

    Use stable names (e.g. ``sym_eig_cpu``) so a rerun overwrites the files
    and ``git diff`` shows what changed.  The JSON holds the environment, the
    config, the column order and every row (including raw samples if the rows
    carry them); the Markdown has the environment on top, then the table.
    Returns the two paths.
    """
    out_dir = out_dir or DEFAULT_RESULTS_DIR
    os.makedirs(out_dir, exist_ok=True)
    cols = as_columns(columns)
    json_path = os.path.join(out_dir, f"{name}.json")
    md_path = os.path.join(out_dir, f"{name}.md")

    payload = {
        "benchmark": name,
        "title": title,
        "environment": dict(env),
        "config": dict(config or {}),
        "columns": [{"key": c.key, "header": c.title} for c in cols],
        "rows": [dict(r) for r in rows],
        "notes": list(notes),
    }
    if extra:
        payload.update(extra)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(_jsonable(payload), f, indent=2)
        f.write("\n")

    md = [f"# {title or name}", "", format_env(env, markdown=True), ""]
    if config:
        md.append("Config: " + ", ".join(f"{k}={_jsonable(v)}" for k, v in config.items()))
        md.append("")
    md.append(format_table(rows, cols, markdown=True))
    if notes:
        md.append("")
        md.extend(notes)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    return json_path, md_path


def write_tables(name: str, tables: Sequence[Mapping[str, Any]], *, env: Mapping[str, Any],
                 out_dir: str | None = None, title: str | None = None,
                 config: Mapping[str, Any] | None = None, notes: Sequence[str] = (),
                 extra: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """Several tables in one ``<out_dir>/<name>.json`` and one ``<name>.md``.

    Like :func:`write_results`, for a script that measures several things in
    one run (e.g. ``bench_gpu.py``).  Each table is a mapping with ``key`` (a
    short id), ``title``, ``rows``, ``columns`` and optionally ``notes``.  The
    JSON holds the environment, config and notes once, then ``"tables"``; the
    Markdown has the environment on top, then one section per table.
    Returns the two paths.
    """
    out_dir = out_dir or DEFAULT_RESULTS_DIR
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, f"{name}.json")
    md_path = os.path.join(out_dir, f"{name}.md")

    payload: dict = {
        "benchmark": name,
        "title": title,
        "environment": dict(env),
        "config": dict(config or {}),
        "notes": list(notes),
        "tables": [],
    }
    md = [f"# {title or name}", "", format_env(env, markdown=True), ""]
    if config:
        md.append("Config: " + ", ".join(f"{k}={_jsonable(v)}" for k, v in config.items()))
        md.append("")
    if notes:
        md.extend(notes)
        md.append("")
    for table in tables:
        cols = as_columns(table["columns"])
        payload["tables"].append({
            "key": table.get("key"),
            "title": table.get("title"),
            "columns": [{"key": c.key, "header": c.title} for c in cols],
            "rows": [dict(r) for r in table["rows"]],
            "notes": list(table.get("notes", ())),
        })
        md.append(f"## {table.get('title') or table.get('key')}")
        md.append("")
        md.append(format_table(table["rows"], cols, markdown=True))
        if table.get("notes"):
            md.append("")
            md.extend(table["notes"])
        md.append("")
    if extra:
        payload.update(extra)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(_jsonable(payload), f, indent=2)
        f.write("\n")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(md).rstrip("\n") + "\n")
    return json_path, md_path


def add_standard_arguments(parser) -> None:
    """The options every benchmark script takes: --seed, --threads, --out,
    --no-write, --strict."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before running")
    parser.add_argument("--out", default=DEFAULT_RESULTS_DIR, help="results directory")
    parser.add_argument("--no-write", action="store_true", help="print only; write no files")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a performance target is missed")


def parse_standard_arguments(parser, argv=None):
    """parser.parse_args, then applies --threads."""
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args
