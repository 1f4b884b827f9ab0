"""Hypothesis property tests: random shapes, ranks and scales for the fused
layers, checked against independent float64 references."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import matbp

SETTINGS = settings(max_examples=30, deadline=None)


def features(seed, m, d, rank, scale):
    g = torch.Generator().manual_seed(seed)
    r = max(1, min(rank, m, d))
    return scale * torch.randn(m, r, generator=g, dtype=torch.float64) @ torch.randn(r, d, generator=g, dtype=torch.float64) / d**0.5


@SETTINGS
@given(
    seed=st.integers(0, 2**16),
    m=st.integers(1, 12),
    d=st.integers(1, 12),
    rank=st.integers(1, 12),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    eps=st.sampled_from([1e-2, 0.1, 1.0]),
)
def test_o2p_log_matches_eigh_reference_and_gradient_is_finite(seed, m, d, rank, scale, eps):
    X = features(seed, m, d, rank, scale).requires_grad_()
    C = matbp.o2p_log(X, eps)
    L, V = torch.linalg.eigh(X.detach().mT @ X.detach() + eps * torch.eye(d, dtype=torch.float64))
    ref = (V * L.log()) @ V.mT
    # eps >= 1e-2 keeps the eigh-based reference itself accurate.
    assert (C.detach() - ref).abs().max() <= 1e-10 * max(1.0, ref.abs().max().item())
    assert torch.equal(C.detach(), C.detach().mT)
    C.square().sum().backward()
    assert torch.isfinite(X.grad).all()


@SETTINGS
@given(seed=st.integers(0, 2**16), n=st.integers(1, 10), rank=st.integers(0, 10))
def test_projector_is_an_orthogonal_projector_of_the_right_rank(seed, n, rank):
    g = torch.Generator().manual_seed(seed)
    r = min(rank, n)
    F = torch.randn(n, r, generator=g, dtype=torch.float64)
    P = matbp.projector(F @ F.mT)
    assert torch.allclose(P, P.mT, atol=1e-12)
    assert torch.allclose(P @ P, P, atol=1e-10)
    assert round(P.trace().item()) == r
    if r:
        assert torch.allclose(P @ F, F, atol=1e-9 * max(1.0, F.abs().max().item()))


@SETTINGS
@given(
    seed=st.integers(0, 2**16),
    m=st.integers(8, 40),
    d=st.integers(1, 6),
    segments=st.integers(1, 6),
)
def test_ncut_objectives_are_bounded_and_finite(seed, m, d, segments):
    g = torch.Generator().manual_seed(seed)
    X = (torch.rand(m, d, generator=g, dtype=torch.float64) + 0.05).requires_grad_()
    labels = torch.randint(0, segments, (m,), generator=g) * 7
    k = len(torch.unique(labels))
    J1 = matbp.ncut_j1(X, labels)
    J2, rank = matbp.ncut_j2(X, labels, return_rank=True)
    # ½‖P − P′‖² lies in [|rank P − rank P′| / 2, (rank P + rank P′) / 2].
    for J in (J1, J2):
        assert abs(int(rank) - k) / 2 - 1e-9 <= J.item() <= (int(rank) + k) / 2 + 1e-9
    (J1 + J2).backward()
    assert torch.isfinite(X.grad).all()
