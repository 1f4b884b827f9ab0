"""Builds the matbp torch extension (matbp._C) with torch's cpp_extension.

Build against the torch you run with: ``pip install --no-build-isolation .``

Environment:
  MATBP_CUDA=0|1   force the CPU-only or the CUDA extension (this version
                   builds the CPU backend only).
  MAX_JOBS         parallel compile jobs (ninja).
"""

import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))


def extension():
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-fvisibility=hidden"]
    cpp_sources = sources("csrc/**/*.cpp")
    if os.environ.get("MATBP_CUDA") == "1":
        # The CUDA kernels come with the CUDA backend; until then the build
        # refuses rather than silently producing a CPU-only extension.
        raise RuntimeError("matbp: MATBP_CUDA=1 asked for the CUDA backend, which this version does not have yet")
    return CppExtension(
        name="matbp._C",
        sources=cpp_sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )


setup(
    name="matbp",
    version="0.1.0",
    description="Matrix backpropagation for deep networks with structured layers (PyTorch extension)",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy", "scipy", "pillow"],
)
