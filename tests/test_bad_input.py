"""Bad input gets a clear exception naming the op, the argument and what was
expected: never a crash, a hang or silent NaN (docs/design.md §6)."""

import re

import pytest
import torch

import matbp
from conftest import random_spd, random_symmetric

SQUARE_OPS = [
    ("matbp.sym_eig", lambda A: matbp.sym_eig(A)),
    ("matbp.sym_fn", lambda A: matbp.sym_fn(A, "exp")),
]
ALL_OPS = SQUARE_OPS + [("matbp.svd", lambda X: matbp.svd(X))]


@pytest.mark.parametrize("name,call", ALL_OPS, ids=[n for n, _ in ALL_OPS])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex128])
def test_wrong_dtype(name, call, dtype):
    A = torch.eye(3).to(dtype)
    with pytest.raises(RuntimeError, match=rf"{name}: argument '[AX]' must be a floating-point tensor"):
        call(A)


@pytest.mark.parametrize("name,call", ALL_OPS, ids=[n for n, _ in ALL_OPS])
@pytest.mark.parametrize("shape", [(), (3,)])
def test_too_few_dims(name, call, shape):
    with pytest.raises(RuntimeError, match=rf"{name}: argument '[AX]' must be a batch of matrices"):
        call(torch.ones(shape, dtype=torch.float64))


@pytest.mark.parametrize("name,call", SQUARE_OPS, ids=[n for n, _ in SQUARE_OPS])
def test_non_square(name, call):
    with pytest.raises(RuntimeError, match=rf"{name}: argument 'A' must be a batch of square matrices"):
        call(torch.ones(2, 3, 4, dtype=torch.float64))


@pytest.mark.parametrize("name,call", ALL_OPS, ids=[n for n, _ in ALL_OPS])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite(name, call, bad, dtype):
    A = random_spd((3,), 4, dtype=dtype)
    A[2, 1, 3] = bad
    with pytest.raises(RuntimeError, match=rf"{name}: argument '[AX]' contains NaN or Inf \(matrix 2 of the flattened batch\)"):
        call(A)


@pytest.mark.parametrize(
    "name,call,n",
    [
        ("matbp.sym_eig", lambda A: matbp.sym_eig(A), 46341),  # n² > 2³¹ − 1
        ("matbp.sym_eig", lambda A: matbp.sym_eig(A), 33000),  # dsyevd workspace 2n² > 2³¹ − 1
        ("matbp.svd", lambda X: matbp.svd(X), 25000),
    ],
)
def test_sizes_beyond_32bit_lapack(name, call, n):
    A = torch.zeros((), dtype=torch.float64).expand(n, n)  # no memory behind it
    with pytest.raises(RuntimeError, match=rf"{name}: the LAPACK workspace .* more than 32-bit LAPACK integers"):
        call(A)


def test_backward_shape_mismatch():
    L, V = matbp.sym_eig(random_symmetric((2,), 3))
    with pytest.raises(RuntimeError, match=re.escape(
            "matbp.sym_eig_backward: argument 'gV' must have shape [2, 3, 3] to match 'V' of "
            "shape [2, 3, 3], got [2, 4, 4]")):
        torch.ops.matbp.sym_eig_backward(None, torch.zeros(2, 4, 4, dtype=torch.float64), L, V)
    with pytest.raises(RuntimeError, match="matbp.sym_eig_backward: argument 'L' must have shape"):
        torch.ops.matbp.sym_eig_backward(None, None, L[..., :2], V)
    U, S, W = matbp.svd(torch.randn(1000, 5, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="matbp.svd_backward: argument 'gS' must have shape"):
        torch.ops.matbp.svd_backward(None, torch.zeros(1000, 4, dtype=torch.float64), None, U, S, W)
    # The heap corruption: S of another batch than U.
    with pytest.raises(RuntimeError, match=re.escape(
            "matbp.svd_backward: argument 'S' must have shape [1000, 3] to match 'U'")):
        torch.ops.matbp.svd_backward(torch.ones_like(U), None, None, U, S[:1], W)
    with pytest.raises(RuntimeError, match="matbp.sym_fn_backward: argument 'L' must have shape"):
        torch.ops.matbp.sym_fn_backward(torch.ones(2, 3, 3, dtype=torch.float64), torch.ones(()), V, "log", 1.0)


def test_error_under_torch_compile_names_the_op():
    f = torch.compile(lambda A: matbp.sym_eig(A), fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="matbp.sym_eig: argument 'A' must be a batch of square matrices"):
        f(torch.ones(3, 4, dtype=torch.float64))
