# Two commands on a fresh machine:
#   make test   builds matbp into .venv and runs the whole suite (Python + C++)
#   make demo   builds matbp into .venv and runs the tour
# Each creates .venv when missing and installs torch and the build and test
# dependencies; matbp is built against that torch (no build isolation).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export MAX_JOBS ?= 2
# The CUDA backend is built whenever a CUDA toolkit is on PATH (torch's wheel
# here is a CUDA build); asking for it explicitly makes a broken toolkit fail
# the build instead of silently producing a CPU-only extension. Override with
# MATBP_CUDA=0.
export MATBP_CUDA ?= $(shell command -v nvcc >/dev/null 2>&1 && echo 1 || echo 0)

DEPS_STAMP := $(VENV)/.matbp-deps
BUILD_STAMP := $(VENV)/.matbp-build
SOURCES := $(shell find csrc python -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.py') setup.py pyproject.toml
CMAKE_BUILD := build/cmake
CMAKE_INSTALL := build/install
CMAKE_EXAMPLE := build/example

.PHONY: all demo test test-python test-cpp test-sanitize cpp-deps test-wheel wheel bench bench-cpp build deps clean gpu-check

all: build

$(DEPS_STAMP): requirements-dev.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_SPEC) -r requirements-dev.txt
	touch $@

deps: $(DEPS_STAMP)

$(BUILD_STAMP): $(DEPS_STAMP) $(SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps .
	touch $@

build: $(BUILD_STAMP)

test: test-python test-cpp test-wheel

test-python: $(BUILD_STAMP)
	$(PY) -m pytest -q tests

# GoogleTest and Google Benchmark come from Debian's libgtest-dev and
# libbenchmark-dev; installed when missing.
CPP_TEST_DEPS := /usr/include/gtest/gtest.h:libgtest-dev /usr/include/benchmark/benchmark.h:libbenchmark-dev
cpp-deps:
	@missing="$(foreach d,$(CPP_TEST_DEPS),$$(test -f $(word 1,$(subst :, ,$(d))) || echo $(word 2,$(subst :, ,$(d)))))"; \
	if [ -n "$$(echo $$missing)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "make: install Debian's $$missing" >&2; exit 1; fi; fi

CMAKE_CONFIGURE = $(VENV)/bin/cmake -G Ninja -DPython3_EXECUTABLE=$(abspath $(PY))

# The library with the C++ tests and the microbenchmarks (built, not run:
# that is make bench-cpp), the tests run; the CMake package installed, then
# found and used by examples/cpp; then the C++ tests again under ASan+UBSan.
test-cpp: $(DEPS_STAMP) cpp-deps
	$(CMAKE_CONFIGURE) -S . -B $(CMAKE_BUILD) -DCMAKE_BUILD_TYPE=Release -DMATBP_BUILD_BENCHMARKS=ON \
	  -DMATBP_WITH_CUDA=$(if $(filter 1,$(MATBP_CUDA)),ON,OFF)
	$(VENV)/bin/cmake --build $(CMAKE_BUILD) -j $(MAX_JOBS)
	cd $(CMAKE_BUILD) && $(abspath $(VENV))/bin/ctest --output-on-failure
	rm -rf $(CMAKE_INSTALL) && $(VENV)/bin/cmake --install $(CMAKE_BUILD) --prefix $(abspath $(CMAKE_INSTALL))
	$(VENV)/bin/cmake -S examples/cpp -B $(CMAKE_EXAMPLE) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$(abspath $(CMAKE_INSTALL));$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
	  -DCUDA_TOOLKIT_ROOT_DIR="$$($(PY) scripts/cuda_paths.py toolkit)" -DTORCH_CUDA_ARCH_LIST=9.0
	$(VENV)/bin/cmake --build $(CMAKE_EXAMPLE)
	$(CMAKE_EXAMPLE)/matbp_example
	$(MAKE) test-sanitize

# The C++ tests of the CPU library under AddressSanitizer and
# UndefinedBehaviorSanitizer (and LeakSanitizer at exit); any report fails.
CMAKE_SANITIZE := build/cmake-sanitize
test-sanitize: $(DEPS_STAMP) cpp-deps
	$(CMAKE_CONFIGURE) -S . -B $(CMAKE_SANITIZE) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMATBP_SANITIZE=ON
	$(VENV)/bin/cmake --build $(CMAKE_SANITIZE) -j $(MAX_JOBS)
	cd $(CMAKE_SANITIZE) && ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(abspath $(VENV))/bin/ctest --output-on-failure

# The C++ microbenchmarks, run and written to bench/results/cpp_ops_cpu.{json,md}.
bench-cpp: $(DEPS_STAMP) cpp-deps
	$(CMAKE_CONFIGURE) -S . -B $(CMAKE_BUILD) -DCMAKE_BUILD_TYPE=Release -DMATBP_BUILD_BENCHMARKS=ON \
	  -DMATBP_WITH_CUDA=$(if $(filter 1,$(MATBP_CUDA)),ON,OFF)
	$(VENV)/bin/cmake --build $(CMAKE_BUILD) -j $(MAX_JOBS) --target matbp_bench_bench_ops
	$(PY) bench/bench_cpp.py --binary $(CMAKE_BUILD)/matbp_bench_bench_ops

# A binary wheel against the installed torch (dist/): tagged for this
# platform and Python, its version names the torch series and CUDA
# (0.1.0+pt214cu130), and it requires that torch series.
wheel: $(BUILD_STAMP)
	rm -rf dist && $(PY) -m build --wheel --no-isolation --outdir dist .

# The wheel installed into a fresh virtual environment that sees the same
# torch (.venv's site-packages through a .pth, after its own), imported and
# run from outside the source tree.
WHEEL_VENV := build/wheel-venv
test-wheel: wheel
	rm -rf $(WHEEL_VENV) && $(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -c "import site, sys; open(site.getsitepackages()[0] + '/matbp-test-torch.pth', 'w').write(sys.argv[1])" \
	  "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	$(WHEEL_VENV)/bin/python -m pip install -q --no-deps --no-index --ignore-installed dist/matbp-*.whl
	cd /tmp && $(abspath $(WHEEL_VENV))/bin/python -c "import sys, torch, matbp; \
	  assert matbp.__file__.startswith(sys.prefix), matbp.__file__; \
	  C = matbp.o2p_log(torch.randn(2, 20, 6, dtype=torch.float64)); \
	  print('wheel', matbp.build_info(), 'o2p_log', tuple(C.shape), 'from', matbp.__file__)"

demo: $(BUILD_STAMP)
	$(PY) bench/demo.py

bench: $(BUILD_STAMP)
	$(PY) bench/bench_sym_eig.py
	$(PY) bench/bench_sym_fn.py
	$(PY) bench/bench_svd.py
	$(PY) bench/bench_projector.py
	$(PY) bench/bench_o2p_log.py
	$(PY) bench/bench_ncut.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_ncuts_train.py

# On a GPU machine with torch already installed (no network): builds matbp
# with CUDA against that torch, runs the CUDA tests and the GPU benchmarks,
# and writes logs and results to $$OUT (else bench/results/gpu-<date>).
gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build *.egg-info python/*.egg-info $(BUILD_STAMP)
