"""Builds the matbp torch extension (matbp._C) with torch's cpp_extension.

Build against the torch you run with: ``pip install --no-build-isolation .``

The CUDA backend (csrc/ops/cuda) is built when torch has CUDA and a CUDA
toolkit (nvcc) is found; otherwise a CPU-only extension is built.

Environment:
  MATBP_CUDA=0|1        force the CPU-only (0) or the CUDA (1) extension; 1
                        fails with a clear message when torch or the
                        toolkit lacks CUDA.
  CUDA_HOME             the CUDA toolkit; by default resolved from the nvcc
                        on PATH (following wrapper scripts), then
                        /usr/local/cuda.
  TORCH_CUDA_ARCH_LIST  GPU architectures; defaults to the visible GPUs', or
                        to 9.0 alone when none is visible (one architecture
                        keeps CI builds quick).
  MAX_JOBS              parallel compile jobs (ninja).
"""

import glob
import os
import re
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CUDA_DIR = os.path.join("csrc", "ops", "cuda")


def sources(*patterns):
    found = set()
    for pattern in patterns:
        found.update(glob.glob(os.path.join(ROOT, pattern), recursive=True))
    return sorted(os.path.relpath(p, ROOT) for p in found)


def _toolkit_of_nvcc(nvcc):
    """The toolkit folder of an nvcc executable; follows symlinks and small
    wrapper scripts that exec the real nvcc (docs/design.md §8)."""
    nvcc = os.path.realpath(nvcc)
    try:
        with open(nvcc, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(b"#!"):
        match = re.search(rb"exec\s+[\"']?(/[^\s\"']*/bin/nvcc)\b", head)
        if not match:
            return None
        nvcc = os.path.realpath(match.group(1).decode())
    toolkit = os.path.dirname(os.path.dirname(nvcc))
    return toolkit if os.path.isfile(os.path.join(toolkit, "bin", "nvcc")) else None


def find_cuda_home():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        toolkit = _toolkit_of_nvcc(nvcc)
        if toolkit:
            return toolkit
    for candidate in ("/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)):
        if os.path.isfile(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    return None


def nvidia_wheel_dirs():
    """include/ and lib/ folders of the nvidia-* wheels torch installs
    (cuSOLVER and cuBLAS headers and libraries live there, not in a minimal
    toolkit)."""
    roots = []
    for path in sys.path:
        candidate = os.path.join(path, "nvidia")
        if os.path.isdir(candidate) and candidate not in roots:
            roots.append(candidate)
    includes, libs = [], []
    for root in roots:
        for header in glob.glob(os.path.join(root, "*", "include", "cusolverDn.h")):
            includes.append(os.path.dirname(header))
        for lib in glob.glob(os.path.join(root, "*", "lib", "libcusolver.so*")):
            libs.append(lib)
    return includes, libs


def cusolver_paths(cuda_home):
    """(include dirs, library dirs, link args) for cuSOLVER, preferring the
    wheel torch itself loads at run time."""
    wheel_includes, wheel_libs = nvidia_wheel_dirs()
    toolkit_include = os.path.join(cuda_home, "include")
    include_dirs, library_dirs, link_args = [], [], []
    if not os.path.isfile(os.path.join(toolkit_include, "cusolverDn.h")):
        if not wheel_includes:
            raise RuntimeError(
                "matbp: cuSOLVER headers (cusolverDn.h) found neither in the CUDA toolkit "
                f"{cuda_home} nor in an nvidia-cusolver wheel; install nvidia-cusolver or set "
                "MATBP_CUDA=0 for a CPU-only build")
        # Only the headers the toolkit lacks, so the wheel's copies of the
        # runtime headers never shadow nvcc's own.
        staged = os.path.join(ROOT, "build", "matbp_cuda_include")
        shutil.rmtree(staged, ignore_errors=True)  # links of an earlier environment
        os.makedirs(staged)
        source = wheel_includes[0]
        for header in os.listdir(source):
            if not os.path.exists(os.path.join(toolkit_include, header)):
                os.symlink(os.path.join(source, header), os.path.join(staged, header))
        include_dirs.append(staged)
    wheel_versioned = sorted(l for l in wheel_libs if re.search(r"libcusolver\.so\.\d+$", l))
    toolkit_lib = os.path.join(cuda_home, "lib64", "libcusolver.so")
    if wheel_versioned:
        lib = wheel_versioned[-1]
        lib_dir = os.path.dirname(lib)
        library_dirs.append(lib_dir)
        link_args.append("-l:" + os.path.basename(lib))
        # Found at run time next to torch's own CUDA libraries
        # (site-packages/nvidia/<cu>/lib), or where it was at build time.
        rel = os.path.relpath(lib_dir, os.path.dirname(os.path.dirname(lib_dir)))
        link_args += ["-Wl,-rpath,$ORIGIN/../nvidia/" + rel.replace(os.sep, "/"),
                      "-Wl,-rpath," + lib_dir]
    elif os.path.exists(toolkit_lib):
        library_dirs.append(os.path.dirname(toolkit_lib))
        link_args.append("-lcusolver")
    else:
        raise RuntimeError(
            "matbp: libcusolver found neither in an nvidia-cusolver wheel nor in "
            f"{cuda_home}/lib64; set MATBP_CUDA=0 for a CPU-only build")
    return include_dirs, library_dirs, link_args


def want_cuda(torch_has_cuda, cuda_home):
    flag = os.environ.get("MATBP_CUDA", "").strip()
    if flag == "0":
        return False
    if flag == "1":
        if not torch_has_cuda:
            raise RuntimeError("matbp: MATBP_CUDA=1 but the installed torch is a CPU-only build")
        if not cuda_home:
            raise RuntimeError(
                "matbp: MATBP_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME or put nvcc on PATH")
        return True
    if flag:
        raise RuntimeError(f"matbp: MATBP_CUDA must be 0 or 1, got {flag!r}")
    return torch_has_cuda and cuda_home is not None


def extension():
    import torch

    cuda_home = find_cuda_home() if torch.version.cuda else None
    use_cuda = want_cuda(torch.version.cuda is not None, cuda_home)
    if use_cuda:
        # cpp_extension reads CUDA_HOME when it is imported.
        os.environ["CUDA_HOME"] = cuda_home
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-fvisibility=hidden"]
    cuda_dir = os.path.join(ROOT, CUDA_DIR)
    cpp_sources = [s for s in sources("csrc/**/*.cpp") if not os.path.join(ROOT, s).startswith(cuda_dir)]
    include_dirs = [os.path.join(ROOT, "csrc")]
    if not use_cuda:
        print("matbp: building the CPU-only extension", file=sys.stderr)
        return CppExtension(
            name="matbp._C",
            sources=cpp_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    print(f"matbp: building the CUDA extension with the toolkit in {cuda_home}", file=sys.stderr)
    solver_includes, solver_lib_dirs, solver_link = cusolver_paths(cuda_home)
    cuda_sources = sources(os.path.join(CUDA_DIR, "*.cpp"), os.path.join(CUDA_DIR, "*.cu"))
    return CUDAExtension(
        name="matbp._C",
        sources=cpp_sources + cuda_sources,
        include_dirs=include_dirs + solver_includes,
        library_dirs=solver_lib_dirs,
        extra_compile_args={
            "cxx": cxx_flags + ["-DMATBP_WITH_CUDA=1"],
            "nvcc": ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-DMATBP_WITH_CUDA=1"],
        },
        extra_link_args=["-fopenmp"] + solver_link,
    )


EXTENSION = extension()
from torch.utils.cpp_extension import BuildExtension  # noqa: E402  after CUDA_HOME is settled

setup(
    name="matbp",
    version="0.1.0",
    description="Matrix backpropagation for deep networks with structured layers (PyTorch extension)",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[EXTENSION],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy", "scipy", "pillow"],
    # The training commands (matbp.models, matbp.datasets, matbp.train):
    # torchvision's architectures, progress bars, figures, COCO annotations,
    # and the packages whose bundled images are the built-in real data.
    extras_require={"train": ["torchvision", "tqdm", "matplotlib", "pycocotools", "scikit-image", "scikit-learn"]},
    entry_points={"console_scripts": ["matbp-train = matbp.train:cli", "matbp-evaluate = matbp.evaluate:cli"]},
)
