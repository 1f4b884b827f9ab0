"""One end-to-end torch.compile(fullgraph=True) through every op: the fake
kernels, autograd registration and generated code together, with the default
(inductor) backend in float64 and with aot_eager in both dtypes, on every
device. The per-op compile tests use the faster aot_eager backend."""

import importlib.util

import pytest
import torch

import matbp
from conftest import F32, F64, assert_rel, randn, tols


def all_ops(A, X):
    L, V = matbp.sym_eig(A + A.mT)
    U, S, W = matbp.svd(X)
    d = X.shape[-1]
    eye = torch.eye(d, dtype=X.dtype, device=X.device)
    C = matbp.sym_fn(X.mT @ X + eye, "log")
    O = matbp.o2p_log(X.mT, 1e-3)  # the m < d path: (*, m, m)
    m = O.shape[-1]
    B = O @ O.mT / m + torch.eye(m, dtype=X.dtype, device=X.device)
    return (
        ((V * L.unsqueeze(-2)) @ V.mT).sum()
        + S.sum()
        + ((U * S.unsqueeze(-2)) @ W.mT).pow(2).sum()
        + C.sum()
        + matbp.sym_fn(B, "sqrt").sum()
        + matbp.sym_fn(B, "pow", -0.5).diagonal(dim1=-2, dim2=-1).sum()
        + matbp.projector(B).sum()
    )


@pytest.mark.parametrize("backend,dtype", [("inductor", F64), ("aot_eager", F32), ("aot_eager", F64)],
                         ids=["inductor-f64", "aot_eager-f32", "aot_eager-f64"])
def test_fullgraph_all_ops(backend, dtype, device):
    if backend == "inductor" and device == "cuda" and importlib.util.find_spec("triton") is None:
        pytest.skip("inductor on CUDA needs triton")
    A = randn(3, 5, 5, seed=1, dtype=dtype).to(device).requires_grad_()
    X = randn(3, 7, 4, seed=2, dtype=dtype).to(device).requires_grad_()
    out = torch.compile(all_ops, fullgraph=True, backend=backend)(A, X)
    gA, gX = torch.autograd.grad(out, (A, X))
    A2, X2 = A.detach().clone().requires_grad_(), X.detach().clone().requires_grad_()
    ref = all_ops(A2, X2)
    rA, rX = torch.autograd.grad(ref, (A2, X2))
    assert out.device.type == gA.device.type == gX.device.type == device
    tol = tols(dtype, 1e-10, 1e-5)
    assert_rel(out, ref, tol, "compiled output")
    assert_rel(gA, rA, tol, "compiled gradient w.r.t. A")
    assert_rel(gX, rX, tol, "compiled gradient w.r.t. X")
