"""One end-to-end torch.compile with the default (inductor) backend through
every op: the fake kernels, autograd registration and generated code together.
The per-op compile tests use the faster aot_eager backend."""

import torch

import matbp


def test_inductor_fullgraph_all_ops():
    def f(A, X):
        L, V = matbp.sym_eig(A + A.mT)
        U, S, W = matbp.svd(X)
        C = matbp.sym_fn(X.mT @ X + torch.eye(X.shape[-1], dtype=X.dtype), "log")
        return ((V * L.unsqueeze(-2)) @ V.mT).sum() + S.sum() + ((U * S.unsqueeze(-2)) @ W.mT).pow(2).sum() + C.sum()

    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    X = torch.randn(3, 7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    out = torch.compile(f, fullgraph=True)(A, X)
    gA, gX = torch.autograd.grad(out, (A, X))
    A2, X2 = A.detach().clone().requires_grad_(), X.detach().clone().requires_grad_()
    ref = f(A2, X2)
    rA, rX = torch.autograd.grad(ref, (A2, X2))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gA, rA)
    torch.testing.assert_close(gX, rX)
