"""Mixed precision: float16/bfloat16 inputs and torch.autocast.

Outside autocast a half/bfloat16 input is computed exactly as its float32
value is (in float64 inside) and the result and the gradient come back in the
input's dtype. Under autocast every op runs as one of autocast's float32
list: half/bfloat16 in, float32 out. Both on the CPU and, where present, CUDA
(float16 there).
"""

import pytest
import torch

import matbp
from conftest import F32, F64, random_spd, randn

LOW = [torch.float16, torch.bfloat16]


def spd(dtype, device, n=6):
    return random_spd((3,), n, seed=3).to(device, dtype)


def labels_for(m, device):
    return (torch.arange(m, device=device) * 3 // m).expand(2, m)


# Each case: (name, fn(input) -> a tensor, input(dtype, device)). The outputs
# are what each op returns in its input's dtype.
#
# sym_eig and svd save their outputs for the backward, as torch.linalg does,
# so from a half/bfloat16 input their gradient is formed from factors rounded
# to that dtype: equal to the float32 gradient to the dtype's precision. The
# others save a float64 decomposition, and their gradient is the float32
# gradient rounded once.
ROUNDED_FACTORS = {"sym_eig", "svd"}
CASES = [
    ("sym_eig", lambda A: matbp.sym_eig(A)[0], spd),
    ("svd", lambda X: matbp.svd(X)[1], lambda dt, dev: randn(3, 7, 4, seed=4).to(dev, dt)),
    ("sym_fn", lambda A: matbp.sym_fn(A, "log"), spd),
    ("projector", lambda A: matbp.projector(A, rtol=0.3), spd),
    ("o2p_log_cols", lambda X: matbp.o2p_log(X), lambda dt, dev: randn(3, 9, 4, seed=5).to(dev, dt)),
    ("o2p_log_rows", lambda X: matbp.o2p_log(X), lambda dt, dev: randn(3, 4, 9, seed=6).to(dev, dt)),
    ("ncut_j2", lambda X: matbp.ncut_j2(X, labels_for(X.shape[-2], X.device)),
     lambda dt, dev: randn(2, 12, 3, seed=7).abs().to(dev, dt)),
    ("ncut_j1", lambda X: matbp.ncut_j1(X, labels_for(X.shape[-2], X.device)),
     lambda dt, dev: (randn(2, 12, 3, seed=8).abs() + 0.1).to(dev, dt)),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("dtype", LOW, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name,fn,make", CASES, ids=IDS)
def test_low_precision_input_is_its_float32_value_computed_and_returned_in_its_dtype(name, fn, make, dtype,
                                                                                     device):
    x = make(dtype, device).requires_grad_()
    x32 = x.detach().float().requires_grad_()
    out, out32 = fn(x), fn(x32)
    assert out.dtype == dtype
    # The same float32 computation, rounded once to the input's dtype.
    assert torch.equal(out, out32.detach().to(dtype))
    # An upstream gradient the low dtype holds exactly, so both runs get the same one.
    g = randn(*out.shape, seed=9).to(device, dtype).float()
    (out.float() * g).sum().backward()
    (out32 * g).sum().backward()
    assert x.grad.dtype == dtype
    assert torch.isfinite(x.grad.float()).all()
    if name in ROUNDED_FACTORS:
        tol = 10 * x.shape[-1] * torch.finfo(dtype).eps
        err = (x.grad.float() - x32.grad).norm() / x32.grad.norm()
        assert err <= tol, (err, tol)
    else:
        torch.testing.assert_close(x.grad.float(), x32.grad.to(dtype).float(), rtol=0, atol=0)


def test_low_precision_operators_keep_saved_decompositions_in_float64():
    A = spd(torch.bfloat16, "cpu")
    F, L, V = torch.ops.matbp.sym_fn_with_eig(A, "log", 1.0)
    assert (F.dtype, L.dtype, V.dtype) == (torch.bfloat16, F64, F64)
    gA = torch.ops.matbp.sym_fn_backward(torch.ones_like(F), L, V, "log", 1.0)
    assert gA.dtype == torch.bfloat16


@pytest.mark.parametrize("name,fn,make", CASES, ids=IDS)
def test_autocast_runs_each_op_in_float32(name, fn, make, device):
    amp_dtype = torch.bfloat16 if device == "cpu" else torch.float16
    x = make(amp_dtype, device).requires_grad_()
    x32 = x.detach().float()
    with torch.autocast(device, dtype=amp_dtype):
        out = fn(x)
        out64 = fn(x32.double())  # float64 is left alone by autocast
    assert out.dtype == F32
    assert out64.dtype == F64
    assert torch.equal(out, fn(x32))
    out.sum().backward()
    assert x.grad.dtype == amp_dtype and torch.isfinite(x.grad.float()).all()


def test_autocast_registration_covers_every_forward_kernel():
    for name in ("sym_eig", "svd", "sym_fn_with_eig", "o2p_log_with_eig", "projector_with_eig",
                 "ncut_projector_distance_with_basis"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"matbp::{name}", "AutocastCPU"), name


class SmallO2PNet(torch.nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 6, 3, padding=1))
        self.pool = matbp.nn.SecondOrderPooling()
        self.head = torch.nn.Linear(36, classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def _amp_dtype(device):
    return torch.bfloat16 if device == "cpu" else torch.float16


def test_autocast_trains_a_cnn_with_second_order_pooling(device):
    torch.manual_seed(0)
    net = SmallO2PNet().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.randn(8, 3, 10, 10, device=device)
    y = torch.arange(8, device=device) % 3
    scaler = torch.amp.GradScaler(device, enabled=device == "cuda")
    losses = []
    for _ in range(5):
        opt.zero_grad()
        with torch.autocast(device, dtype=_amp_dtype(device)):
            feats = net.features(x)
            pooled = net.pool(feats)
            logits = net.head(pooled.flatten(1))
            loss = torch.nn.functional.cross_entropy(logits, y)
        assert feats.dtype == _amp_dtype(device)  # the convolutions ran in low precision
        assert pooled.dtype == F32                # the O2P layer in float32
        scaler.scale(loss).backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_autocast_trains_with_the_normalized_cuts_loss(device):
    torch.manual_seed(1)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).to(device)
    loss_fn = matbp.nn.NormalizedCutsLoss("j2")
    opt = torch.optim.SGD(conv.parameters(), lr=0.05)
    image = torch.rand(2, 3, 8, 8, device=device)
    labels = (torch.arange(64, device=device) // 22).expand(2, 64)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        with torch.autocast(device, dtype=_amp_dtype(device)):
            feats = conv(image).flatten(2).mT  # (2, 64, 8), low precision
            loss = loss_fn(feats, labels)
        assert feats.dtype == _amp_dtype(device) and loss.dtype == F32
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))


def test_autocast_compiles_without_graph_breaks():
    X = randn(2, 9, 4, seed=11).to(torch.bfloat16)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(X):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return matbp.o2p_log(X)

    out = f(X)
    assert out.dtype == F32
    assert torch.equal(out, matbp.o2p_log(X.float()))


@pytest.mark.parametrize("op,args", [
    ("sym_eig", lambda: (spd(torch.bfloat16, "cpu"),)),
    ("o2p_log_with_eig", lambda: (randn(2, 5, 3, seed=12).half(), 1e-3)),
    ("sym_fn_with_eig", lambda: (spd(torch.float16, "cpu"), "sqrt", 1.0)),
], ids=["sym_eig", "o2p_log_with_eig", "sym_fn_with_eig"])
def test_opcheck_low_precision(op, args):
    torch.library.opcheck(getattr(torch.ops.matbp, op).default, args())
