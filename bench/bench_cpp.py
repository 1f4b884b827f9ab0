"""Benchmark: the C++ microbenchmarks (``bench/cpp/bench_ops.cpp``, Google
Benchmark) run, paired and written up.

The program times every matbp operator through the dispatcher beside its
ATen composition in one process (sym_eig, sym_fn log, projector, o2p_log on
both paths and the ncut J2 core; forward and backward), checks each pair's
results against each other after timing and reports items/s and GFLOP/s of
one flop model per operator (the same for both competitors). This script
runs it with repetitions in random interleaved order, takes the medians,
pairs matbp with ATen and writes ``bench/results/cpp_ops_cpu.{json,md}``.

Usage::

    make bench-cpp                                   # builds build/cmake with the benchmarks, then runs this
    python bench/bench_cpp.py --binary build/cmake/matbp_bench_bench_ops --repetitions 5
    python bench/bench_cpp.py --filter o2p_log --no-write
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import common

NAME = "cpp_ops"
TITLE = "C++ microbenchmarks: matbp operators vs their ATen compositions (float64)"
DEFAULT_BINARY = os.path.join(os.path.dirname(__file__), "..", "build", "cmake", "matbp_bench_bench_ops")
REPETITIONS = 5

COLUMNS = [
    ("op", "op", None, "left"),
    ("case", "case", None, "left"),
    ("matbp_ms", "matbp ms", ".3f"),
    ("aten_ms", "ATen ms", ".3f"),
    ("ratio", "matbp / ATen", ".3g"),
    ("matbp_items_s", "matbp items/s", ".4g"),
    ("matbp_gflops", "matbp GFLOP/s", ".3g"),
    ("aten_gflops", "ATen GFLOP/s", ".3g"),
    ("rel_diff", "rel diff", common.fmt_err),
    ("aten_nonfinite", "ATen non-finite", None),
    ("correct", "ok", common.fmt_ok),
]


def run_binary(binary: str, repetitions: int, filter_: str | None, threads: int | None) -> dict:
    """Run the program; its JSON report (medians of ``repetitions``) as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "report.json")
        cmd = [binary, f"--benchmark_repetitions={repetitions}", "--benchmark_enable_random_interleaving=true",
               "--benchmark_report_aggregates_only=true", f"--benchmark_out={out}", "--benchmark_out_format=json"]
        if filter_:
            cmd.append(f"--benchmark_filter={filter_}")
        env = dict(os.environ)
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        subprocess.run(cmd, check=True, env=env)
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def registration_order(binary: str, filter_: str | None) -> list[str]:
    """The program's cases ("<op>/<shape>") in the order it registers them."""
    cmd = [binary, "--benchmark_list_tests=true"] + ([f"--benchmark_filter={filter_}"] if filter_ else [])
    names = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    return list(dict.fromkeys(n.removesuffix("/real_time").rsplit("/", 1)[0] for n in names))


def pair_rows(report: dict, order: list[str]) -> list[dict]:
    """One row per operation: the median run of matbp beside ATen's.

    A benchmark that stopped with an error (results that disagree) has no
    median; its row is marked not correct."""
    medians, errors = {}, {}
    for b in report["benchmarks"]:
        name = b["run_name"].removesuffix("/real_time")
        if b.get("error_occurred"):
            errors[name] = b.get("error_message", "error")
        elif b.get("aggregate_name") == "median":
            medians[name] = b
    rows = []
    for case in order:
        op, shape = case.split("/", 1)
        mine, ref = medians.get(case + "/matbp"), medians.get(case + "/aten")
        error = errors.get(case + "/matbp") or errors.get(case + "/aten")
        row = {"op": op, "case": shape, "error": error, "correct": error is None and mine is not None}
        if mine is not None and ref is not None:
            row.update(matbp_ms=mine["real_time"], aten_ms=ref["real_time"],
                       ratio=mine["real_time"] / ref["real_time"], matbp_items_s=mine["items/s"],
                       matbp_gflops=mine["GFLOP/s"], aten_gflops=ref["GFLOP/s"],
                       rel_diff=mine.get("rel_diff"), aten_nonfinite=int(ref["nonfinite"]))
        rows.append(row)
    return rows


def notes_for(rows: list[dict], repetitions: int) -> list[str]:
    notes = [
        f"Times: medians (ms, wall clock) of {repetitions} repetitions run in random interleaved order "
        "(Google Benchmark), each repetition as many iterations as fill its minimum time; ratio = "
        "median(matbp) / median(ATen). One process, the same inputs for both; float64.",
        "matbp calls the operators of csrc/matbp.h (fwd: the op; bwd: its _backward op from the saved "
        "decomposition). ATen: at::linalg_eigh compositions (sym_fn: V log(L) Vᵀ; projector: V_r V_rᵀ; "
        "o2p_log: log of XᵀX + eps I through eigh; ncut J2: the dense m × m W = Y Yᵀ and the segment "
        "projector), their backward by autograd through a retained graph.",
        "GFLOP/s: one flop model per op, charged alike to both (eigendecomposition 9n³; sym_eig bwd 6n³; "
        "sym_fn and projector fwd 11n³, bwd 8n³; o2p_log cols fwd 2md² + 11d³, bwd 8d³ + 2md²; rows fwd "
        "4m²d + 9m³ + 2md², bwd 2md² + 6m²d; ncut J2 fwd 4md² + 9d³, bwd 4md²).",
        "rel diff: ||matbp - ATen||_F / ||ATen||_F after timing (gauge-invariant: sym_eig compares "
        "V diag(L) Vᵀ; gradients of symmetric inputs their symmetric parts). o2p_log bwd rows: the ATen "
        "gradient is NaN (eigh's backward divides by the zero gaps of the d - m eigenvalues equal to eps), "
        "so matbp's is checked as a directional derivative against central differences of its forward.",
    ]
    return common.add_note(notes, "DISAGREEMENT OR ERROR: ",
                           [f"{r['op']} {r['case']} ({r['error']})" for r in rows if not r["correct"]], sep="; ")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=DEFAULT_BINARY, help="the built bench/cpp program")
    p.add_argument("--repetitions", type=int, default=REPETITIONS)
    p.add_argument("--filter", default=None, help="Google Benchmark's --benchmark_filter regex")
    common.add_standard_arguments(p)
    args = p.parse_args(argv)
    if not os.path.exists(args.binary):
        p.error(f"{args.binary} does not exist: build it with `make bench-cpp`")

    env = common.print_header(TITLE)
    report = run_binary(args.binary, args.repetitions, args.filter, args.threads)
    context = report["context"]
    env.update(num_threads=int(context.get("torch_threads", env["num_threads"])),
               cpu_mhz=context.get("mhz_per_cpu"), caches=[f"L{c['level']} {c['type']} {c['size'] // 1024} KiB"
                                                            for c in context.get("caches", [])],
               google_benchmark_build=context.get("library_build_type"))
    rows = pair_rows(report, registration_order(args.binary, args.filter))
    notes = notes_for(rows, args.repetitions)
    print()
    common.print_table(rows, COLUMNS, title=TITLE, notes=notes)
    common.save(args, common.result_name(NAME), rows, COLUMNS, env=env, title=TITLE, notes=notes,
                config={"repetitions": args.repetitions, "filter": args.filter, "binary": os.path.basename(args.binary)})
    return common.exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
