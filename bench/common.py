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
  JSON/Markdown pair);
* what the scripts share: the competitors' timed calls
  (:func:`timed_calls`, fwd or fwd+bwd), timing summaries (:func:`time_ms`,
  :func:`time_pair`, :func:`paired_ratio`, :func:`quartiles`), the loop over
  the cases with its progress lines (:func:`collect`, :func:`pair_progress`),
  checks (:func:`rel_fro`, :func:`finite_text`, :func:`fmt_err`), the usual
  columns (:func:`standard_columns`, :func:`timing_columns`, :func:`columns`),
  notes (:func:`add_note`, :data:`PAIRED_TIMES_NOTE`) and the command line
  (:func:`add_standard_arguments`, :func:`add_case_arguments`,
  :func:`parse_standard_arguments`, :func:`timing_config`,
  :func:`run_and_print`, :func:`save`, :func:`finish`, :func:`run_table`).

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


def time_ms(fns: Mapping[str, Callable[[], Any]], *, budget_s: float, min_repeats: int = 3,
            max_repeats: int = 50, repeats: int | None = None,
            device: Any = None) -> tuple[int, dict[str, list[float]]]:
    """:func:`time_interleaved_adaptive`, returned as ``(repetitions, {name: samples in ms})``."""
    timing = time_interleaved_adaptive(fns, budget_s=budget_s, min_repeats=min_repeats,
                                       max_repeats=max_repeats, repeats=repeats, device=device)
    reps = timing.pop("_repeats")
    return reps, {name: [s * 1e3 for s in v["samples"]] for name, v in timing.items()}


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    """First and third quartiles (inclusive method); ``(x, x)`` for a single sample."""
    if len(xs) < 2:
        return (xs[0], xs[0])
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return (q[0], q[2])


def paired_ratio(num_ms: Sequence[float], den_ms: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """``median(num) / median(den)`` and the quartiles of the per-repetition ratios ``num_i / den_i``."""
    return median(num_ms) / median(den_ms), quartiles([a / b for a, b in zip(num_ms, den_ms)])


def time_pair(fns: Mapping[str, Callable[[], Any]], **kwargs: Any) -> dict:
    """Time two competitors ``a``, ``b`` (in ``fns`` order) with :func:`time_ms`.

    Returns the row entries ``repeats``, ``<a>_ms``, ``<b>_ms`` (medians),
    ``ratio`` (median a / median b), ``ratio_iqr`` (:func:`paired_ratio`) and
    ``<a>_samples_ms``, ``<b>_samples_ms``.  ``kwargs`` go to :func:`time_ms`.
    """
    reps, ms = time_ms(fns, **kwargs)
    a, b = ms
    ratio, iqr = paired_ratio(ms[a], ms[b])
    return {"repeats": reps, f"{a}_ms": median(ms[a]), f"{b}_ms": median(ms[b]), "ratio": ratio,
            "ratio_iqr": iqr, f"{a}_samples_ms": ms[a], f"{b}_samples_ms": ms[b]}


def collect(cases: Iterable[Sequence[Any]], bench: Callable[..., dict],
            progress: Callable[[dict, float], str] | None = None) -> list[dict]:
    """``[bench(*case) for case in cases]`` (each case a tuple of arguments); with
    ``progress``, print the line ``progress(row, seconds)`` after each row
    (``seconds``: that row's wall time)."""
    rows = []
    for case in cases:
        t0 = time.perf_counter()
        row = bench(*case)
        if progress is not None:
            print(progress(row, time.perf_counter() - t0), flush=True)
        rows.append(row)
    return rows


def collect_modes(modes: Iterable[str], make_inputs: Callable[[], tuple], reference: Callable[..., Any],
                  bench: Callable[..., dict], progress: Callable[[dict, float], str] | None = None) -> list[dict]:
    """:func:`collect` of ``bench(mode, inputs, ref)`` over ``modes`` on one input:
    ``inputs = make_inputs()`` and ``ref = reference(*inputs)`` are made once,
    shared by the modes and freed before the next input is made."""
    inputs = make_inputs()
    ref = reference(*inputs)
    return collect([(mode,) for mode in modes], lambda mode: bench(mode, inputs, ref), progress)


def pair_progress(case: str, row: Mapping[str, Any], check: str, seconds: float) -> str:
    """The progress line of a matbp-vs-torch row (:func:`time_pair`):
    ``  <case> <dtype> <mode> reps=.. matbp .. torch .. ms ratio .. <check> ok [.. s]``."""
    return (f"  {case} {row['dtype']:>7} {row['mode']:<7} reps={row['repeats']:<2} "
            f"matbp {row['matbp_ms']:9.2f}  torch {row['torch_ms']:9.2f} ms  ratio {row['ratio']:.3f}  "
            f"{check} {'ok' if row['correct'] else 'WRONG'} [{seconds:.1f} s]")


def timed_calls(funcs: Mapping[str, Callable[..., Any]], x: torch.Tensor, mode: str, *,
                grad: torch.Tensor | None = None, backward: Callable[[Any], Any] | None = None,
                args: tuple = ()) -> dict[str, Callable[[], Any]]:
    """The argument-free calls that time each competitor ``f`` of ``funcs`` on input ``x``.

    ``mode`` "fwd": ``f(x, *args)`` under ``torch.no_grad()``, returning its
    output.  ``mode`` "fwd+bwd": ``f(xl, *args)`` on a fresh leaf ``xl`` (a
    detached ``x`` that requires grad), then ``output.backward(grad)`` -- or
    ``backward(output)`` when ``backward`` is given -- returning ``xl.grad``.
    """
    if mode == "fwd":
        def make(f):
            def call():
                with torch.no_grad():
                    return f(x, *args)
            return call
    elif mode == "fwd+bwd":
        def make(f):
            def call():
                xl = x.detach().requires_grad_()
                out = f(xl, *args)
                if backward is None:
                    out.backward(grad)
                else:
                    backward(out)
                return xl.grad
            return call
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return {name: make(f) for name, f in funcs.items()}


# --------------------------------------------------------------------------
# Dtypes and correctness checks
# --------------------------------------------------------------------------

def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float64`` -> ``"float64"``."""
    return str(dtype).replace("torch.", "")


def as_dtype(d: Any) -> torch.dtype:
    """A torch dtype from its name (``"float32"``) or itself."""
    return getattr(torch, d) if isinstance(d, str) else d


def rel_fro(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max over the batch of ||a - ref||_F / ||ref||_F, in float64 on ``ref``'s device.

    NaN if a ratio is not finite (e.g. ``a`` has a NaN); 0.0 for an empty batch.
    """
    a64 = a.detach().to(device=ref.device, dtype=torch.float64)
    ref64 = ref.detach().to(torch.float64)
    r = torch.linalg.matrix_norm(a64 - ref64) / torch.linalg.matrix_norm(ref64).clamp_min(
        torch.finfo(torch.float64).tiny)
    if r.numel() == 0:
        return 0.0
    if not torch.isfinite(r).all():
        return float("nan")
    return r.max().item()


def nonfinite_count(grad: torch.Tensor) -> int:
    """How many matrices of the batch (dim 0) have a non-finite entry."""
    return int((~torch.isfinite(grad.reshape(grad.shape[0], -1))).any(dim=1).sum())


def finite_text(grad: torch.Tensor, *, finite: str = "finite", inf: str = "inf") -> str:
    """``finite`` if every entry is finite, else 'NaN in k/B' (``inf`` in k/B when no entry is NaN)."""
    k = nonfinite_count(grad)
    if k == 0:
        return finite
    kind = "NaN" if torch.isnan(grad).any() else inf
    return f"{kind} in {k}/{grad.shape[0]}"


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


def fmt_err(v: Any) -> str:
    """An error or difference as ``1.2e-15``; None as ``-``, NaN as ``NaN``, ±inf as ``inf``; text as is."""
    if isinstance(v, str):
        return v
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.1e}"


def fmt_ok(v: Any) -> str:
    return "ok" if v else "WRONG"


def fmt_iqr(v: Sequence[float]) -> str:
    return f"{v[0]:.2f}-{v[1]:.2f}"


_STANDARD_COLUMNS = {c.key: c for c in (
    Column("shape", "shape", align="left"),
    Column("fn", "fn", align="left"),
    Column("batch", "B"),
    Column("dtype", "dtype", align="left"),
    Column("mode", "mode", align="left"),
    Column("repeats", "reps"),
    Column("ratio", "matbp/torch", ".3f"),
    Column("ratio_iqr", "ratio IQR", fmt_iqr),
    Column("status", "status", align="left"),
    Column("correct", "correct", fmt_ok, align="left"),
)}


def standard_columns(*keys: str) -> list[Column]:
    """The columns most tables share, by row key.

    ``shape``, ``fn``, ``dtype``, ``mode``, ``status`` (left-aligned text),
    ``batch`` ("B"), ``repeats`` ("reps"), ``ratio`` ("matbp/torch", .3f),
    ``ratio_iqr`` ("ratio IQR", 0.12-0.34), ``correct`` ("ok" / "WRONG");
    any other key (``m``, ``n``, ``d``, ``k``, ...) is a plain column
    headed by its key.
    """
    return [_STANDARD_COLUMNS.get(k) or Column(k) for k in keys]


def columns(fmt: str | Callable[[Any], str] | None = None, *, align: str = "right",
            **headers: str) -> list[Column]:
    """One column per keyword ``key="header"``, all with the same ``fmt`` and ``align``."""
    return [Column(key, header, fmt, align) for key, header in headers.items()]


def timing_columns(names: Sequence[str], fmt: str) -> list[Column]:
    """``<name> ms`` for each competitor (``fmt``), then ``ratio`` and ``ratio_iqr``."""
    return [Column(f"{n}_ms", f"{n} ms", fmt) for n in names] + standard_columns("ratio", "ratio_iqr")


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


def add_note(notes: list[str], label: str, items: Sequence[str], sep: str = ", ") -> list[str]:
    """Append ``label + sep.join(items)`` to ``notes`` when ``items`` is not empty; returns ``notes``."""
    if items:
        notes.append(label + sep.join(items))
    return notes


# The first sentences of the notes of the two-competitor tables (svd, projector, sym_fn).
PAIRED_TIMES_NOTE = (
    "Times: medians (ms) over interleaved repetitions (order rotated each repetition), after one "
    "untimed warm-up call of each competitor; ratio = median(matbp) / median(torch); ratio IQR = "
    "quartiles of the per-repetition paired ratios.")


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def add_standard_arguments(parser, device: str | None = None) -> None:
    """The options every benchmark script takes: --seed, --threads, --out,
    --no-write, --strict; and --device (default ``device``) when it is given."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before running")
    parser.add_argument("--out", default=DEFAULT_RESULTS_DIR, help="results directory")
    parser.add_argument("--no-write", action="store_true", help="print only; write no files")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a performance target is missed")
    if device is not None:
        parser.add_argument("--device", default=device, help=f"cpu or cuda (default {device})")


def add_case_arguments(parser, *, min_repeats: int, max_repeats: int, budget_s: float,
                       dtypes: Iterable[str] | None = None, default_dtypes: Sequence[str] = (),
                       modes: Sequence[str] | None = None, quick: str | None = None) -> None:
    """The options of a benchmark over cases: --dtypes (choices ``dtypes``,
    default ``default_dtypes``; when ``dtypes`` is given), --modes (choices and
    default ``modes``; when given), --repeats and --budget (adaptive
    repetitions; --budget stays None unless given), and --quick with the help
    text ``quick`` (when given)."""
    if dtypes is not None:
        parser.add_argument("--dtypes", nargs="+", choices=sorted(dtypes), default=list(default_dtypes),
                            help=f"dtypes (default {' '.join(default_dtypes)})")
    if modes is not None:
        parser.add_argument("--modes", nargs="+", choices=modes, default=list(modes),
                            help="modes (default both)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed repetitions per case (default adaptive, {min_repeats}..{max_repeats})")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds per case for adaptive repeats (default {budget_s:g})")
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)


def quick_help(sizes: str, budget_s: float, name: str) -> str:
    """The help of --quick: what it makes smaller (``sizes``), its time per case and its files."""
    return f"demo-sized run: {sizes}, about {budget_s:g} s per case; writes {name}_<device>_quick.*"


def parse_standard_arguments(parser, argv=None, **quick_defaults: tuple[Any, Any]):
    """parser.parse_args, then applies --threads.

    Each ``name=(quick, full)`` fills an option left unset (``args.name`` is
    None or empty): ``quick`` with --quick, ``full`` without.
    """
    args = parser.parse_args(argv)
    for name, (quick, full) in quick_defaults.items():
        if not getattr(args, name):
            setattr(args, name, quick if args.quick else full)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args


def repeats_config(repeats: int | None, budget_s: float, min_repeats: int, max_repeats: int) -> Any:
    """The ``repeats`` entry of a result's config: the count, or how it was chosen."""
    if repeats is not None:
        return repeats
    return f"adaptive ({budget_s:g} s per case, {min_repeats}..{max_repeats})"


def timing_config(args, min_repeats: int, max_repeats: int, config: Mapping[str, Any]) -> dict:
    """``config``, then how the repetitions were chosen (``repeats``, from
    ``args.repeats`` and ``args.budget``), ``seed`` and ``interleaved``."""
    return {**config, "repeats": repeats_config(args.repeats, args.budget, min_repeats, max_repeats),
            "seed": args.seed, "interleaved": True}


def print_header(title: str, device: Any = "cpu") -> dict:
    """Print the title and the :func:`environment` record; returns the record."""
    env = environment(device)
    print(f"{title}\n{format_env(env)}", flush=True)
    return env


def run_and_print(title: str, device: Any, run: Callable[[], Any], print_rows: Callable[[Any], None], *,
                  elapsed: bool = True) -> tuple[dict, Any]:
    """The body of a script's main(): :func:`print_header`, ``result = run()``
    (which prints its progress lines), a blank line, ``print_rows(result)``
    and, with ``elapsed``, the seconds it all took.  Returns ``(env, result)``."""
    env = print_header(title, device)
    t_start = time.perf_counter()
    result = run()
    print()
    print_rows(result)
    if elapsed:
        print(f"[{time.perf_counter() - t_start:.0f} s]", flush=True)
    return env, result


def result_name(name: str, device: Any = "cpu", quick: bool = False) -> str:
    """``<name>_<device tag>``, plus ``_quick`` for a --quick run."""
    return f"{name}_{device_tag(device)}" + ("_quick" if quick else "")


def print_written(paths: Iterable[str]) -> None:
    print("wrote " + ", ".join(os.path.relpath(x) for x in paths))


def save(args, name: str, rows: Sequence[Mapping[str, Any]], columns: Iterable[Any], **kwargs: Any) -> None:
    """Unless --no-write: :func:`write_results` under ``args.out``, then print the paths."""
    if not args.no_write:
        print_written(write_results(name, rows, columns, out_dir=args.out, **kwargs))


def exit_status(rows: Iterable[Mapping[str, Any]], strict: bool = False) -> int:
    """1 if a row is not ``correct`` or, with ``strict``, a row's ``status`` is FAIL; else 0."""
    rows = list(rows)
    if not all(r["correct"] for r in rows):
        return 1
    if strict and any(r.get("status") == "FAIL" for r in rows):
        return 1
    return 0


def finish(args, name: str, rows: Sequence[Mapping[str, Any]], columns: Iterable[Any], **kwargs: Any) -> int:
    """The end of a one-table script: :func:`save` as ``<name>_<device>[_quick]``
    (``args.device``, ``args.quick``), then the :func:`exit_status` (``args.strict``)."""
    save(args, result_name(name, args.device, args.quick), rows, columns, **kwargs)
    return exit_status(rows, args.strict)


def run_table(args, name: str, title: str, columns: Sequence[Any], run: Callable[[], list[dict]],
              notes_for: Callable[[list[dict]], list[str]], *, config: Mapping[str, Any],
              elapsed: bool = True) -> int:
    """main() of a one-table script, after parsing: :func:`run_and_print` the
    rows of ``run()`` (table ``columns``, notes ``notes_for(rows)``), then
    :func:`finish`.  Returns the exit status."""
    env, rows = run_and_print(title, args.device, run, lambda rows: print_table(
        rows, columns, title=title, notes=notes_for(rows)), elapsed=elapsed)
    return finish(args, name, rows, columns, env=env, title=title, config=config, notes=notes_for(rows))
