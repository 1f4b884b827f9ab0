"""The CPU eigensolver choice (csrc/ops/cpu/sym_eig_solver.h): the batched
small-matrix QL solver below the crossover, LAPACK above, and
MATBP_QL_MAX_N moving it. Both must meet LAPACK's accuracy on the
adversarial spectra: eigenvalue error <= 10 n eps ||A||, orthogonality <=
10 n eps (the solver's own unit test, tests/cpp/test_math_sym_eig_ql.cpp,
checks residuals and packs lane by lane)."""

import mpmath
import pytest
import torch

import matbp
from conftest import adversarial, assert_lapack_accuracy, random_symmetric, with_spectrum



@pytest.mark.parametrize("n", [1, 2, 3, 8, 17, 32, 33, 64, 65])
@pytest.mark.parametrize("solver", ["default", "lapack"])
def test_adversarial_spectra(n, solver, monkeypatch):
    if solver == "lapack":
        monkeypatch.setenv("MATBP_QL_MAX_N", "0")
    A = adversarial(n)
    L, V = matbp.sym_eig(A)
    assert_lapack_accuracy(A, L, V, torch.linalg.eigvalsh(A))


@pytest.mark.parametrize(
    "dtype,n,kappa,count",
    [(torch.float64, 16, 1e12, 48), (torch.float64, 24, 1e12, 32),
     (torch.float32, 16, 1e4, 64), (torch.float32, 48, 1e4, 32)],
    ids=["f64-16", "f64-24", "f32-16", "f32-48"])
def test_graded_spectra_keep_lapacks_relative_accuracy(dtype, n, kappa, count):
    # The small eigenvalues of a rotated graded spectrum carry absolute error
    # ~ eps ||A||, so their relative error reaches eps kappa at worst; how
    # much of that a solver incurs depends on which end its QL deflates from.
    # The QL solver orients each matrix as LAPACK's dsteqr does. Without that,
    # its median relative error on these four cases was 2.6 to 7 times
    # LAPACK's; with it, 1.0 to 1.7 times (Intel Xeon, MKL).
    i = torch.arange(n, dtype=torch.float64)
    lam = kappa ** (-i / (n - 1))
    A = with_spectrum(lam.expand(count, n), seed=5)[0].to(dtype)
    if dtype == torch.float64:
        # The exact eigenvalues of the float64 matrix (its rounding moves the
        # smallest by ~ eps kappa relative to the constructed ones).
        with mpmath.workdps(40):
            exact = torch.tensor([[float(x) for x in mpmath.eigsy(mpmath.matrix(a.tolist()),
                                                                   eigvals_only=True)]
                                  for a in A], dtype=torch.float64).sort(-1).values
    else:
        exact = torch.linalg.eigvalsh(A.double())
    compute = {} if dtype == torch.float64 else {"compute_dtype": torch.float32}

    def median_relative_error(L):
        return ((L.double() - exact).abs() / exact.abs()).amax(-1).median()

    ours = median_relative_error(matbp.sym_eig(A, **compute)[0])
    lapack = median_relative_error(torch.linalg.eigh(A)[0])
    assert ours <= 2 * lapack, (ours, lapack)


def test_both_solvers_agree(monkeypatch):
    # Distinct eigenvalues: the eigenvectors agree up to sign.
    A = random_symmetric((21,), 24, seed=3)
    L_ql, V_ql = matbp.sym_eig(A)
    monkeypatch.setenv("MATBP_QL_MAX_N", "0")
    L_lapack, V_lapack = matbp.sym_eig(A)
    torch.testing.assert_close(L_ql, L_lapack, atol=1e-13, rtol=0)
    signs = torch.sign((V_ql * V_lapack).sum(-2, keepdim=True))
    torch.testing.assert_close(V_ql * signs, V_lapack, atol=1e-10, rtol=0)


def test_nonfinite_matrix_inside_a_pack_is_named():
    A = random_symmetric((11,), 6)
    A[9, 2, 1] = float("nan")
    with pytest.raises(RuntimeError, match=r"matbp\.sym_eig.*matrix 9 "):
        matbp.sym_eig(A)


def test_float32_input_through_the_small_solver():
    A, _ = with_spectrum([[1e-7, 1e-6, 0.5, 1.0]] * 9)
    L, V = matbp.sym_eig(A.float())
    assert L.dtype == V.dtype == torch.float32
    torch.testing.assert_close(L.double(), torch.linalg.eigvalsh(A.float().double()).float().double(),
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("value", ["-1", "many", "5000"])
def test_bad_crossover_setting_is_an_error(value, monkeypatch):
    monkeypatch.setenv("MATBP_QL_MAX_N", value)
    with pytest.raises(RuntimeError, match="MATBP_QL_MAX_N must be an integer in"):
        matbp.sym_eig(random_symmetric((2,), 4))
