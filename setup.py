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
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import cuda_paths  # noqa: E402  the toolkit and cuSOLVER discovery CMake also runs
CUDA_DIR = os.path.join("csrc", "ops", "cuda")


def sources(*patterns):
    found = set()
    for pattern in patterns:
        found.update(glob.glob(os.path.join(ROOT, pattern), recursive=True))
    return sorted(os.path.relpath(p, ROOT) for p in found)


def cusolver_paths(cuda_home):
    """(include dirs, library dirs, link args) for cuSOLVER, found as CMake
    finds it (scripts/cuda_paths.py)."""
    try:
        include_dirs, lib = cuda_paths.cusolver(cuda_home, os.path.join(ROOT, "build", "matbp_cuda_include"))
    except cuda_paths.NotFound as exc:
        raise RuntimeError(f"matbp: {exc}; or set MATBP_CUDA=0 for a CPU-only build") from None
    lib_dir = os.path.dirname(lib)
    if re.search(r"libcusolver\.so\.\d+$", lib):  # the wheel's
        # Found at run time next to torch's own CUDA libraries
        # (site-packages/nvidia/<cu>/lib), or where it was at build time.
        rel = os.path.relpath(lib_dir, os.path.dirname(os.path.dirname(lib_dir)))
        link_args = ["-l:" + os.path.basename(lib), "-Wl,-rpath,$ORIGIN/../nvidia/" + rel.replace(os.sep, "/"),
                     "-Wl,-rpath," + lib_dir]
    else:
        link_args = ["-lcusolver"]
    return include_dirs, [lib_dir], link_args


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


def torch_series(torch):
    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


def local_version(torch, use_cuda):
    """The build's local version label: the torch series and CUDA version it
    is for, e.g. 0.1.0+pt214cu130 (0.1.0+pt214cpu for the CPU backend only)."""
    cuda = "cu" + torch.version.cuda.replace(".", "") if use_cuda else "cpu"
    return f"{VERSION}+pt{torch_series(torch).replace('.', '')}{cuda}"


def write_build_info(torch, use_cuda):
    """python/matbp/_build_info.py: the torch (and CUDA) this build is for,
    read by matbp before it loads _C (a mismatch raises a clear ImportError
    instead of an undefined-symbol error)."""
    info = {"matbp": local_version(torch, use_cuda), "torch": torch.__version__,
            "cuda": torch.version.cuda if use_cuda else None}
    with open(os.path.join(ROOT, "python", "matbp", "_build_info.py"), "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"BUILD_INFO = {info!r}\n")


def extension():
    import torch

    cuda_home = cuda_paths.find_cuda_home() if torch.version.cuda else None
    use_cuda = want_cuda(torch.version.cuda is not None, cuda_home)
    write_build_info(torch, use_cuda)
    if use_cuda:
        # cpp_extension reads CUDA_HOME when it is imported.
        os.environ["CUDA_HOME"] = cuda_home
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    # -fno-math-errno, as torch itself builds: sqrt and division vectorise
    # (sym_eig_ql's SIMD lanes) only when they need not set errno.
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-fvisibility=hidden", "-fno-math-errno"]
    cuda_dir = os.path.join(ROOT, CUDA_DIR)
    cpp_sources = [s for s in sources("csrc/**/*.cpp") if not os.path.join(ROOT, s).startswith(cuda_dir)]
    include_dirs = [os.path.join(ROOT, "csrc")]
    if not use_cuda:
        print("matbp: building the CPU-only extension", file=sys.stderr)
        ext = CppExtension(
            name="matbp._C",
            sources=cpp_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
        return ext, local_version(torch, False), torch_series(torch)
    print(f"matbp: building the CUDA extension with the toolkit in {cuda_home}", file=sys.stderr)
    solver_includes, solver_lib_dirs, solver_link = cusolver_paths(cuda_home)
    cuda_sources = sources(os.path.join(CUDA_DIR, "*.cpp"), os.path.join(CUDA_DIR, "*.cu"))
    ext = CUDAExtension(
        name="matbp._C",
        sources=cpp_sources + cuda_sources,
        include_dirs=include_dirs + solver_includes,
        library_dirs=solver_lib_dirs,
        extra_compile_args={
            "cxx": cxx_flags,
            "nvcc": ["-O3", "-std=c++20", "--expt-relaxed-constexpr"],
        },
        extra_link_args=["-fopenmp"] + solver_link,
    )
    return ext, local_version(torch, True), torch_series(torch)


# The wheel's version names the torch series (and CUDA) it is for, and it
# requires that series: the extension's C++ ABI is that torch's.
EXTENSION, PACKAGE_VERSION, TORCH_SERIES = extension()
from torch.utils.cpp_extension import BuildExtension  # noqa: E402  after CUDA_HOME is settled

setup(
    name="matbp",
    version=PACKAGE_VERSION,
    description="Matrix backpropagation for deep networks with structured layers (PyTorch extension)",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[EXTENSION],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=[f"torch=={TORCH_SERIES}.*", "numpy", "scipy", "pillow"],
    # The training commands (matbp.models, matbp.datasets, matbp.train):
    # torchvision's architectures, progress bars, figures, COCO annotations,
    # and the packages whose bundled images are the built-in real data.
    extras_require={"train": ["torchvision", "tqdm", "matplotlib", "pycocotools", "scikit-image", "scikit-learn"]},
    entry_points={"console_scripts": ["matbp-train = matbp.train:cli", "matbp-evaluate = matbp.evaluate:cli"]},
)
