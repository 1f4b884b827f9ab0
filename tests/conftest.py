import pytest
import torch

import matbp  # noqa: F401  registers the operators


def random_symmetric(shape, n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*shape, n, n, generator=g, dtype=torch.float64)
    return (a + a.mT).to(dtype)


def random_spd(shape, n, dtype=torch.float64, seed=0, shift=1.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*shape, n, n, generator=g, dtype=torch.float64)
    return (a @ a.mT / max(n, 1) + shift * torch.eye(n, dtype=torch.float64)).to(dtype)


def with_spectrum(eigenvalues, seed=0):
    """Q diag(eigenvalues) Qᵀ with a random orthogonal Q (float64), and Q."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    n = lam.shape[-1]
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(*lam.shape[:-1], n, n, generator=g, dtype=torch.float64))
    return (q * lam.unsqueeze(-2)) @ q.mT, q


BATCH_SHAPES = [(), (0,), (2, 3)]


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param
