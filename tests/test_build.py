"""The build is what was asked for: with MATBP_CUDA=1 (what `make` sets when a
CUDA toolkit is on PATH) every tensor operator has a CUDA kernel, so CI, which
has no GPU, still proves that the CUDA backend compiles, links and registers."""

import os
import subprocess
import sys

import pytest
import torch

import matbp


def _matbp_ops():
    return sorted(op for op in torch._C._dispatch_get_all_op_names() if op.startswith("matbp::"))


@pytest.mark.skipif(os.environ.get("MATBP_CUDA") != "1", reason="the CUDA backend was not requested")
def test_cuda_build_registers_a_cuda_kernel_for_every_operator():
    assert matbp.built_with_cuda()
    missing = []
    for op in _matbp_ops():
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
        composite = torch._C._dispatch_has_kernel_for_dispatch_key(op, "CompositeImplicitAutograd")
        if not (has_cuda or composite):
            missing.append(op)
    assert not missing, f"operators without a CUDA kernel: {missing}"


def test_sync_checks_setting_round_trips():
    previous = matbp.set_sync_checks(True)
    try:
        assert matbp.set_sync_checks(False) is True
        with matbp.sync_checks():
            assert matbp.set_sync_checks(True) is True
        assert matbp.set_sync_checks(False) is False
    finally:
        matbp.set_sync_checks(previous)


def test_cpu_kernels_raise_whatever_the_sync_checks_setting():
    A = torch.eye(3, dtype=torch.float64)
    A[1, 1] = float("nan")
    with matbp.sync_checks(False):
        with pytest.raises(RuntimeError, match=r"matbp\.sym_eig: argument 'A' contains NaN or Inf"):
            matbp.sym_eig(A)


def test_import_refuses_a_torch_of_another_series():
    # The mismatch is simulated: a fresh interpreter whose torch reports
    # another version before matbp loads _C.
    script = "import torch; torch.__version__ = '2.13.1+cu130'; import matbp"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: matbp ")
    assert "built against torch " + matbp.build_info()["torch"] in last
    assert "torch 2.13.1+cu130" in last and "pip install --no-build-isolation" in last
    assert "undefined symbol" not in res.stderr


def test_build_info_names_the_torch_it_was_built_for():
    info = matbp.build_info()
    assert info["torch"].split("+")[0].split(".")[:2] == torch.__version__.split("+")[0].split(".")[:2]
    assert info["cuda_kernels"] == matbp.built_with_cuda()
    assert (info["cuda"] is None) == (not info["cuda_kernels"])
    # A CUDA build under a CPU-only torch of the same series is refused too.
    with pytest.raises(ImportError, match="no CUDA"):
        matbp._check_torch(dict(info, cuda="13.0"), torch.__version__, None)
