"""Where the CUDA toolkit and cuSOLVER are: the one discovery that setup.py
(imports it) and CMakeLists.txt (runs it) both use. Standard library only.

- The toolkit: CUDA_HOME / CUDA_PATH, else the nvcc on PATH followed through
  symlinks and through a wrapper script that execs ``<toolkit>/bin/nvcc``
  (the build machines' /usr/local/bin/nvcc is one; taking the wrapper's
  parent folder would be wrong), else /usr/local/cuda(-*).
- cuSOLVER: the nvidia-cusolver wheel torch itself loads at run time, else
  the toolkit's. When the toolkit lacks cusolverDn.h, only the headers it
  lacks are staged (linked) from the wheel, so the wheel's copies of the
  runtime headers never shadow nvcc's own.

Command line (for CMake)::

    python scripts/cuda_paths.py toolkit
        prints the toolkit folder, or nothing when there is none
    python scripts/cuda_paths.py cusolver --toolkit DIR --stage-dir DIR
        prints two lines, ``include=<dirs;...>`` (folders to add, possibly
        none) and ``library=<file>``; exits 1 with the reason on stderr
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import sys
from typing import List, Optional, Tuple


def toolkit_of_nvcc(nvcc: str) -> Optional[str]:
    """The toolkit folder of an nvcc executable or of a wrapper script that
    execs one; None when it does not lead to a toolkit."""
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


def find_cuda_home() -> Optional[str]:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        toolkit = toolkit_of_nvcc(nvcc)
        if toolkit:
            return toolkit
    for candidate in ("/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)):
        if os.path.isfile(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    return None


def nvidia_wheel_dirs() -> Tuple[List[str], List[str]]:
    """Header folders with cusolverDn.h and libcusolver files of the nvidia-*
    wheels on sys.path (torch installs them)."""
    roots = []
    for path in sys.path:
        candidate = os.path.join(path, "nvidia")
        if os.path.isdir(candidate) and candidate not in roots:
            roots.append(candidate)
    includes, libs = [], []
    for root in roots:
        includes += [os.path.dirname(h) for h in glob.glob(os.path.join(root, "*", "include", "cusolverDn.h"))]
        libs += glob.glob(os.path.join(root, "*", "lib", "libcusolver.so*"))
    return includes, libs


class NotFound(RuntimeError):
    pass


def cusolver(cuda_home: str, stage_dir: str) -> Tuple[List[str], str]:
    """(include folders to add, the libcusolver file to link), preferring the
    wheel's library. Headers the toolkit lacks are linked into stage_dir."""
    wheel_includes, wheel_libs = nvidia_wheel_dirs()
    toolkit_include = os.path.join(cuda_home, "include")
    include_dirs = []
    if not os.path.isfile(os.path.join(toolkit_include, "cusolverDn.h")):
        if not wheel_includes:
            raise NotFound(
                "cuSOLVER headers (cusolverDn.h) found neither in the CUDA toolkit "
                f"{cuda_home} nor in an nvidia-cusolver wheel; install nvidia-cusolver")
        shutil.rmtree(stage_dir, ignore_errors=True)  # links of an earlier environment
        os.makedirs(stage_dir)
        source = wheel_includes[0]
        for header in os.listdir(source):
            if not os.path.exists(os.path.join(toolkit_include, header)):
                os.symlink(os.path.join(source, header), os.path.join(stage_dir, header))
        include_dirs.append(stage_dir)
    versioned = sorted(lib for lib in wheel_libs if re.search(r"libcusolver\.so\.\d+$", lib))
    if versioned:
        return include_dirs, versioned[-1]
    toolkit_lib = os.path.join(cuda_home, "lib64", "libcusolver.so")
    if os.path.exists(toolkit_lib):
        return include_dirs, toolkit_lib
    raise NotFound(f"libcusolver found neither in an nvidia-cusolver wheel nor in {cuda_home}/lib64")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("toolkit")
    p = sub.add_parser("cusolver")
    p.add_argument("--toolkit", required=True)
    p.add_argument("--stage-dir", required=True)
    args = parser.parse_args(argv)
    if args.what == "toolkit":
        print(find_cuda_home() or "")
        return 0
    try:
        includes, library = cusolver(args.toolkit, args.stage_dir)
    except NotFound as exc:
        print(f"matbp: {exc}", file=sys.stderr)
        return 1
    print("include=" + ";".join(includes))
    print("library=" + library)
    return 0


if __name__ == "__main__":
    sys.exit(main())
