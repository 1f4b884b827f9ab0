"""Fuzz of the operators' argument checks: every backward op (and the
normalized-cuts forward, the other op with several tensor arguments) is
called with each argument, and each pair of arguments, given an inconsistent
shape, dtype or device. Each call must raise a clear error naming the op and
an argument, before any kernel touches memory: never a crash, a hang or an
uninitialised result."""

import itertools
import re

import pytest
import torch

import matbp

ops = torch.ops.matbp
F64 = torch.float64


def _valid_calls():
    """(op name, callable, {argument: tensor}, shape-linked argument names,
    non-tensor arguments) of valid calls made from real forwards."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, 3, generator=g, dtype=F64)
    A = A @ A.mT + torch.eye(3, dtype=F64)
    L, V = matbp.sym_eig(A)
    U, S, W = matbp.svd(torch.randn(2, 5, 3, generator=g, dtype=F64))
    _, Lf, Vf = ops.sym_fn_with_eig(A, "log", 1.0)
    _, Lp, Vp = ops.projector_with_eig(A, None)
    Xr = torch.randn(2, 3, 5, generator=g, dtype=F64)  # m < d: the rows path
    _, So, Uo, Yo = ops.o2p_log_with_eig(Xr, 1e-3)
    Y = torch.rand(2, 40, 4, generator=g, dtype=F64)
    labels = torch.randint(0, 3, (2, 40), generator=g)
    weights = torch.ones(2, 40, dtype=F64)
    Lam = torch.eye(4, dtype=F64)
    _, _, Q, P0, mu_pinv, seg_index, seg_image, stats = ops.ncut_projector_distance_with_basis(
        Y, weights, labels, Lam, None)

    def grad_like(t):
        return torch.randn(t.shape, generator=g, dtype=F64)

    return [
        ("matbp.sym_eig_backward", lambda gL, gV, L, V: ops.sym_eig_backward(gL, gV, L, V),
         dict(gL=grad_like(L), gV=grad_like(V), L=L, V=V), ["gL", "gV", "L", "V"]),
        ("matbp.svd_backward", lambda gU, gS, gV, U, S, V: ops.svd_backward(gU, gS, gV, U, S, V),
         dict(gU=grad_like(U), gS=grad_like(S), gV=grad_like(W), U=U, S=S, V=W),
         ["gU", "gS", "gV", "U", "S", "V"]),
        ("matbp.sym_fn_backward", lambda gF, L, V: ops.sym_fn_backward(gF, L, V, "log", 1.0),
         dict(gF=grad_like(Vf), L=Lf, V=Vf), ["gF", "L", "V"]),
        ("matbp.projector_backward", lambda gP, L, V: ops.projector_backward(gP, L, V, None),
         dict(gP=grad_like(Vp), L=Lp, V=Vp), ["gP", "L", "V"]),
        ("matbp.sym_fn_second_derivative",
         lambda G, H, L, V: ops.sym_fn_second_derivative(G, H, L, V, "log", 1.0),
         dict(G=grad_like(Vf), H=grad_like(Vf), L=Lf, V=Vf), ["G", "H", "L", "V"]),
        ("matbp.projector_second_derivative",
         lambda G, H, L, V: ops.projector_second_derivative(G, H, L, V, None),
         dict(G=grad_like(Vp), H=grad_like(Vp), L=Lp, V=Vp), ["G", "H", "L", "V"]),
        ("matbp.o2p_log_backward",
         lambda gC, X, S, U, Y: ops.o2p_log_backward(gC, X, S, U, Y, 1e-3),
         dict(gC=grad_like(torch.empty(2, 5, 5)), X=Xr, S=So, U=Uo, Y=Yo),
         ["gC", "X", "S", "U", "Y"]),
        ("matbp.o2p_log_jvp",
         lambda dX, X, S, U, Y: ops.o2p_log_jvp(dX, X, S, U, Y, 1e-3),
         dict(dX=grad_like(Xr), X=Xr, S=So, U=Uo, Y=Yo),
         ["dX", "X", "S", "U", "Y"]),
        ("matbp.ncut_projector_distance_backward",
         lambda gJ, weights, Lambda, Q, P0, mu_pinv, segment_index, segment_image, segment_stats:
             ops.ncut_projector_distance_backward(gJ, weights, Lambda, Q, P0, mu_pinv,
                                                  segment_index, segment_image, segment_stats),
         dict(gJ=torch.ones(2, dtype=F64), weights=weights, Lambda=Lam, Q=Q, P0=P0, mu_pinv=mu_pinv,
              segment_index=seg_index, segment_image=seg_image, segment_stats=stats),
         ["gJ", "weights", "Q", "P0", "mu_pinv"]),
        ("matbp.ncut_projector_distance",
         lambda Y, weights, labels, Lambda: ops.ncut_projector_distance_with_basis(
             Y, weights, labels, Lambda, None),
         dict(Y=Y, weights=weights, labels=labels, Lambda=Lam), ["Y", "weights", "labels"]),
    ]


CALLS = _valid_calls()


def _devices():
    devices = ["meta"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


def _shape_mutations(t):
    """Tensors of the same dtype and device whose shape no longer fits."""
    out = {
        "0-d": t.reshape(-1)[:1].reshape(()) if t.numel() else t.new_zeros(()),
        "extra batch dim": t.unsqueeze(0).expand(3, *t.shape).contiguous(),
    }
    if t.dim() >= 1:
        out["batch shrunk"] = t[:1]
        out["last dim +1"] = torch.cat([t, t.narrow(-1, 0, 1) if t.shape[-1] else
                                        t.new_zeros((*t.shape[:-1], 1))], -1)
        out["last dim empty"] = t.narrow(-1, 0, 0)
        out["leading dim dropped"] = t[0]
    return out


def _dtype_mutations(arg, t):
    if t.dtype.is_floating_point:
        return {str(dt): t.to(dt) for dt in (torch.int64, torch.bool, torch.complex128)}
    # Labels may be any integer type; the saved segment numbers are int64.
    wrong = (torch.float64, torch.bool) + ((torch.int32,) if arg.startswith("segment") else ())
    return {str(dt): t.to(dt) for dt in wrong}


def _assert_clean_error(name, args, call, what):
    with pytest.raises((RuntimeError, ValueError, TypeError, IndexError), match=re.escape(name)) as info:
        call(**args)
    message = str(info.value)
    assert any(f"'{arg}'" in message for arg in args), (what, message)


@pytest.mark.parametrize("name,call,args,linked", CALLS, ids=[c[0] for c in CALLS])
def test_each_argument_inconsistent(name, call, args, linked):
    cases = 0
    for arg, t in args.items():
        mutations = {}
        if arg in linked or t.dtype.is_floating_point:
            mutations.update(_shape_mutations(t))
        mutations.update(_dtype_mutations(arg, t))
        mutations.update({d: t.to(d) for d in _devices()})
        for what, bad in mutations.items():
            if bad.shape == t.shape and bad.dtype == t.dtype and bad.device == t.device:
                continue
            _assert_clean_error(name, {**args, arg: bad}, call, f"{arg}: {what}")
            cases += 1
    assert cases >= 8 * len(args) - 8


@pytest.mark.parametrize("name,call,args,linked", CALLS, ids=[c[0] for c in CALLS])
def test_each_pair_of_arguments_inconsistent(name, call, args, linked):
    # The same change to two arguments keeps them consistent with each other
    # (S[:1] with V[:1]), so only the check of a third argument can catch it.
    cases = 0
    for a, b in itertools.combinations(linked, 2):
        changes = {
            "batch shrunk": lambda t: t[:1],
            "leading dim dropped": lambda t: t[0] if t.dim() else t,
            "extra batch dim": lambda t: t.unsqueeze(0).expand(3, *t.shape).contiguous(),
            **{d: (lambda t, d=d: t.to(d)) for d in _devices()},
        }
        for what, change in changes.items():
            _assert_clean_error(name, {**args, a: change(args[a]), b: change(args[b])}, call,
                                f"{a}, {b}: {what}")
            cases += 1
    assert cases >= len(linked) * (len(linked) - 1) // 2 * 4


@pytest.mark.parametrize("name,call,args,linked", CALLS, ids=[c[0] for c in CALLS])
def test_valid_call_still_works(name, call, args, linked):
    outputs = call(**args)
    for out in outputs if isinstance(outputs, (tuple, list)) else (outputs,):
        assert out.device.type == "cpu"
        if out.dtype.is_floating_point:
            assert torch.isfinite(out).all()


def test_empty_batches_allocate_nothing():
    huge = torch.zeros((), dtype=F64).expand(2**36, 0, 0)
    assert matbp.sym_fn(huge, "exp").shape == huge.shape
    assert matbp.projector(huge).shape == huge.shape
    L, V = matbp.sym_eig(huge)
    assert L.shape == (2**36, 0) and V.shape == huge.shape
    assert ops.sym_fn_backward(huge, L, V, "exp", 1.0).shape == huge.shape
    assert ops.projector_backward(huge, L, V, None).shape == huge.shape
    assert ops.sym_eig_backward(L, huge, L, V).shape == huge.shape
