#!/usr/bin/env bash
# What `make gpu-check` runs on a GPU machine that already has torch (and
# pytest, hypothesis, mpmath, numpy, scipy) and no network:
#
#   1. build matbp with the CUDA backend into $PYTHON
#      (MATBP_CUDA=1 pip install --no-build-isolation --no-deps -v .);
#   2. print nvidia-smi and the torch / CUDA versions;
#   3. run the CUDA tests (tests/test_cuda.py, -m cuda) and the fast suites
#      that run on the CPU and CUDA builds alike (tests/test_sym_eig.py,
#      tests/test_o2p_log.py, tests/test_double_backward.py);
#   4. run the GPU benchmark (bench/bench_gpu.py).
#
# A failing test step does not stop the benchmark; the exit status is
# non-zero at the end if any step failed. A failed build stops the run (the
# tests would test a stale install).
#
# Results go to $OUT when it is set, else bench/results/gpu-<UTC date>; at
# most 8 files:
#   build.log        pip's verbose build output
#   tests.log        the output of both pytest runs
#   tests_cuda.xml   JUnit XML of tests/test_cuda.py
#   tests_fast.xml   JUnit XML of tests/test_sym_eig.py and tests/test_o2p_log.py
#   bench.log        the benchmark's output
#   bench_gpu.json, bench_gpu.md   the benchmark tables (bench_gpu_quick.* with --quick)
#   summary.md       GPU, versions, the result of every step, test counts,
#                    failing tests, benchmark targets (rewritten after each step)
#
# Environment:
#   PYTHON        the interpreter that has torch (default python3)
#   MAX_JOBS      parallel compile jobs (default 16)
#   SKIP_BUILD=1  test the matbp already installed in $PYTHON
#   SKIP_TESTS=1, SKIP_BENCH=1   skip those steps
#   BENCH_ARGS    extra arguments for bench_gpu.py (e.g. "--quick", "--strict")
#   PYTEST_ARGS   extra arguments for both pytest runs (e.g. "-x")
#   BUILD_TIMEOUT, TEST_TIMEOUT, BENCH_TIMEOUT   seconds per step
#                 (defaults 1500, 900 per pytest run, 900)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PYTHON=${PYTHON:-python3}
export MAX_JOBS=${MAX_JOBS:-16}
export PYTHONUNBUFFERED=1
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# An interpreter marked externally managed (PEP 668) would refuse the install.
export PIP_BREAK_SYSTEM_PACKAGES=1

STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS=${OUT:-$ROOT/bench/results/gpu-$STAMP}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)

BUILD_LOG=$RESULTS/build.log
TESTS_LOG=$RESULTS/tests.log
BENCH_LOG=$RESULTS/bench.log
SUMMARY=$RESULTS/summary.md
CUDA_XML=$RESULTS/tests_cuda.xml
FAST_XML=$RESULTS/tests_fast.xml

BUILD_TIMEOUT=${BUILD_TIMEOUT:-1500}
TEST_TIMEOUT=${TEST_TIMEOUT:-900}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-900}

# Step results: "-" (not run yet), "ok", "skipped", "FAILED (...)".
R_BUILD="-" R_CUDA="-" R_FAST="-" R_BENCH="-"
D_BUILD="" D_CUDA="" D_FAST="" D_BENCH=""
FAILED=0

log() { printf '\n== %s\n' "$*"; }

# run_logged LOG SECONDS TEE(0|1) CMD...: run CMD with a time limit, output
# appended to LOG (and shown when TEE=1); returns CMD's status (124: timed out).
run_logged() {
  local logfile=$1 seconds=$2 show=$3 rc
  shift 3
  local limit=()
  if command -v timeout >/dev/null 2>&1; then
    limit=(timeout --kill-after=30 "$seconds")
  fi
  set +e
  if [ "$show" = 1 ]; then
    ${limit[@]+"${limit[@]}"} "$@" 2>&1 | tee -a "$logfile"
    rc=${PIPESTATUS[0]}
  else
    ${limit[@]+"${limit[@]}"} "$@" >>"$logfile" 2>&1
    rc=$?
  fi
  set -e
  return "$rc"
}

status_text() {  # status_text RC
  case "$1" in
    0) echo "ok" ;;
    124|137) echo "FAILED (timed out)" ;;
    *) echo "FAILED (exit $1)" ;;
  esac
}

# junit_counts XML: "P passed, F failed, E errors, S skipped (of N)" and, on
# a second line, "PASSED=P". Failing test ids go to stderr.
junit_counts() {
  if [ ! -f "$1" ]; then
    echo "no JUnit report"
    echo "PASSED=0"
    return 0
  fi
  "$PYTHON" - "$1" <<'PYEOF' || { echo "unreadable JUnit report"; echo "PASSED=0"; }
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
passed = t["tests"] - t["failures"] - t["errors"] - t["skipped"]
print(f"{passed} passed, {t['failures']} failed, {t['errors']} errors, {t['skipped']} skipped (of {t['tests']})")
print(f"PASSED={passed}")
for case in root.iter("testcase"):
    if case.find("failure") is not None or case.find("error") is not None:
        print(f"{case.get('classname', '')}::{case.get('name', '')}", file=sys.stderr)
PYEOF
}

failing_tests() {  # failing_tests XML...: one "- id" line per failing test (at most 40)
  local xml
  for xml in "$@"; do
    if [ -f "$xml" ]; then
      junit_counts "$xml" 2>&1 >/dev/null | sed 's/^/- /' || true
    fi
  done | head -n 40 || true
}

GPU_LINE="unknown"
VERSIONS="unknown"
MATBP_LINE="not checked"
NINJA="unknown"

write_summary() {
  {
    echo "# matbp GPU check ($STAMP UTC)"
    echo
    echo "- GPU: $GPU_LINE"
    echo "- versions: $VERSIONS"
    echo "- matbp: $MATBP_LINE"
    echo "- git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ' (dirty)')"
    echo "- results: $RESULTS"
    echo
    echo "| step | result | details |"
    echo "|---|---|---|"
    echo "| build (MATBP_CUDA=1, MAX_JOBS=$MAX_JOBS) | $R_BUILD | $D_BUILD |"
    echo "| CUDA tests (tests/test_cuda.py -m cuda) | $R_CUDA | $D_CUDA |"
    echo "| fast suites (tests/test_sym_eig.py tests/test_o2p_log.py tests/test_double_backward.py) | $R_FAST | $D_FAST |"
    echo "| benchmark (bench/bench_gpu.py ${BENCH_ARGS:-}) | $R_BENCH | $D_BENCH |"
    echo
    local failing
    failing=$(failing_tests "$CUDA_XML" "$FAST_XML")
    if [ -n "$failing" ]; then
      echo "## Failing tests"
      echo
      echo "$failing"
      echo
    fi
    if [ -f "$BENCH_LOG" ] && grep -q '^TARGET\|^CORRECTNESS' "$BENCH_LOG"; then
      echo "## Benchmark targets"
      echo
      grep '^TARGET\|^CORRECTNESS' "$BENCH_LOG" | sed 's/^/- /'
      echo
    fi
    local tables
    tables=$(cd "$RESULTS" && ls bench_gpu*.md bench_gpu*.json 2>/dev/null | tr '\n' ' ' || true)
    if [ -n "$tables" ]; then
      echo "Benchmark tables: $tables"
      echo
    fi
    if [ "$FAILED" = 0 ]; then echo "Overall: PASS (so far)"; else echo "Overall: FAIL"; fi
  } >"$SUMMARY"
}

# ------------------------------------------------------------------ machine

log "results in $RESULTS"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "gpu_check: PYTHON=$PYTHON not found" >&2
  exit 1
fi

log "nvidia-smi"
nvidia-smi || echo "(nvidia-smi failed)"
GPU_LINE=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1 || true)
GPU_LINE=${GPU_LINE:-"nvidia-smi unavailable"}

log "python, torch, CUDA"
VERSIONS=$("$PYTHON" - <<'PYEOF' 2>&1 || true
import platform
import torch
line = f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
if torch.cuda.is_available():
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    p = torch.cuda.get_device_properties(0)
    line += f", {len(names)} device(s): {', '.join(names)} (sm_{p.major}{p.minor})"
else:
    line += ", torch.cuda.is_available() = False"
print(line)
PYEOF
)
VERSIONS=$(echo "$VERSIONS" | tail -n 1)
echo "$VERSIONS"
NVCC=$(nvcc --version 2>/dev/null | grep -i release | head -n 1 || true)
NINJA=$("$PYTHON" -c "import torch.utils.cpp_extension as c; print('ninja' if c.is_ninja_available() else 'no ninja (slow serial build)')" 2>/dev/null || echo "unknown")
VERSIONS="$VERSIONS; nvcc: ${NVCC:-not found}; $NINJA"
echo "nvcc: ${NVCC:-not found}; $NINJA"
write_summary

# -------------------------------------------------------------------- build

if [ "${SKIP_BUILD:-0}" = 1 ]; then
  R_BUILD="skipped"
  D_BUILD="SKIP_BUILD=1: the installed matbp"
else
  log "build: MATBP_CUDA=1 MAX_JOBS=$MAX_JOBS $PYTHON -m pip install --no-build-isolation --no-deps -v . (log: build.log)"
  : >"$BUILD_LOG"
  t0=$SECONDS
  rc=0
  run_logged "$BUILD_LOG" "$BUILD_TIMEOUT" 0 \
    env MATBP_CUDA=1 "$PYTHON" -m pip install --no-build-isolation --no-deps --no-index -v . || rc=$?
  R_BUILD=$(status_text "$rc")
  D_BUILD="$((SECONDS - t0)) s, build.log"
  if [ "$rc" != 0 ]; then
    FAILED=1
    echo "build failed ($R_BUILD); the end of build.log:"
    tail -n 60 "$BUILD_LOG"
  fi
  echo "build: $R_BUILD ($D_BUILD)"
fi

if [ "$R_BUILD" = "ok" ] || [ "$R_BUILD" = "skipped" ]; then
  MATBP_LINE=$("$PYTHON" -c "
import torch, matbp
cuda = torch._C._dispatch_has_kernel_for_dispatch_key('matbp::sym_eig', 'CUDA')
built = getattr(matbp, 'built_with_cuda', lambda: 'n/a')()
print(f'{matbp.__version__} from {matbp.__file__}, built_with_cuda() = {built}, CUDA kernels registered: {cuda}')
" 2>&1 | tail -n 1 || true)
  echo "matbp: $MATBP_LINE"
  if ! echo "$MATBP_LINE" | grep -q "CUDA kernels registered: True"; then
    FAILED=1
    if [ "$R_BUILD" = "ok" ]; then R_BUILD="FAILED (no CUDA kernels)"; fi
    D_BUILD="$D_BUILD; matbp has no CUDA kernels: $MATBP_LINE"
  fi
fi
write_summary

if [ "$FAILED" != 0 ]; then
  R_CUDA="not run" R_FAST="not run" R_BENCH="not run"
  D_CUDA="the build failed" D_FAST="the build failed" D_BENCH="the build failed"
  write_summary
  echo "gpu_check: FAIL (build); see $SUMMARY"
  exit 1
fi

# -------------------------------------------------------------------- tests

# PYTEST_ARGS is split on spaces on purpose.
# shellcheck disable=SC2206
EXTRA_PYTEST=(${PYTEST_ARGS:-})
PYTEST_COMMON=(-q -rfEs -p no:cacheprovider -o faulthandler_timeout=300)

if [ "${SKIP_TESTS:-0}" = 1 ]; then
  R_CUDA="skipped" R_FAST="skipped"
else
  : >"$TESTS_LOG"
  log "CUDA tests: pytest -m cuda tests/test_cuda.py (log: tests.log)"
  t0=$SECONDS
  rc=0
  run_logged "$TESTS_LOG" "$TEST_TIMEOUT" 1 "$PYTHON" -m pytest "${PYTEST_COMMON[@]}" -m cuda \
    --junitxml="$CUDA_XML" tests/test_cuda.py ${EXTRA_PYTEST[@]+"${EXTRA_PYTEST[@]}"} || rc=$?
  counts=$(junit_counts "$CUDA_XML" 2>/dev/null)
  passed=$(echo "$counts" | sed -n 's/^PASSED=//p')
  D_CUDA="$(echo "$counts" | head -n 1), $((SECONDS - t0)) s, tests_cuda.xml"
  R_CUDA=$(status_text "$rc")
  if [ "$rc" = 0 ] && [ "${passed:-0}" -lt 10 ]; then
    rc=1
    R_CUDA="FAILED (almost everything skipped: no GPU or no CUDA build?)"
  fi
  [ "$rc" = 0 ] || FAILED=1
  write_summary

  log "fast suites: pytest tests/test_sym_eig.py tests/test_o2p_log.py tests/test_double_backward.py"
  t0=$SECONDS
  rc=0
  run_logged "$TESTS_LOG" "$TEST_TIMEOUT" 1 "$PYTHON" -m pytest "${PYTEST_COMMON[@]}" \
    --junitxml="$FAST_XML" tests/test_sym_eig.py tests/test_o2p_log.py tests/test_double_backward.py \
    ${EXTRA_PYTEST[@]+"${EXTRA_PYTEST[@]}"} || rc=$?
  counts=$(junit_counts "$FAST_XML" 2>/dev/null)
  D_FAST="$(echo "$counts" | head -n 1), $((SECONDS - t0)) s, tests_fast.xml"
  R_FAST=$(status_text "$rc")
  [ "$rc" = 0 ] || FAILED=1
fi
write_summary

# ---------------------------------------------------------------- benchmark

if [ "${SKIP_BENCH:-0}" = 1 ]; then
  R_BENCH="skipped"
else
  # shellcheck disable=SC2206
  EXTRA_BENCH=(${BENCH_ARGS:-})
  log "benchmark: bench/bench_gpu.py --out $RESULTS ${BENCH_ARGS:-} (log: bench.log)"
  : >"$BENCH_LOG"
  t0=$SECONDS
  rc=0
  run_logged "$BENCH_LOG" "$BENCH_TIMEOUT" 1 "$PYTHON" bench/bench_gpu.py --out "$RESULTS" ${EXTRA_BENCH[@]+"${EXTRA_BENCH[@]}"} || rc=$?
  R_BENCH=$(status_text "$rc")
  case "$rc" in
    1) R_BENCH="FAILED (a matbp correctness check or call failed, or --strict and a target missed)" ;;
    2) R_BENCH="FAILED (no CUDA device or no CUDA build)" ;;
  esac
  D_BENCH="$((SECONDS - t0)) s, bench.log"
  [ "$rc" = 0 ] || FAILED=1
fi
write_summary

echo
cat "$SUMMARY"
if [ "$FAILED" != 0 ]; then
  echo "gpu_check: FAIL; see $SUMMARY"
  exit 1
fi
sed -i 's/^Overall: PASS (so far)$/Overall: PASS/' "$SUMMARY"
echo "gpu_check: PASS"
