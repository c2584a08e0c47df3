"""The fast implementations (suhmo/models/kernels/, geometry.CentreScale) against autograd: gradcheck in float64."""

import torch

from suhmo.models import WindowPlan
from suhmo.models.discriminators import lstm_window_states, window_tracks
from suhmo.models.kernels import CachedAttention
from suhmo.models.layers import causal_mask


def _plan(groups):
    return WindowPlan([(tau, torch.tensor(starts)) for tau, starts in groups])


def test_cached_attention_backward_passes_gradcheck():
    torch.manual_seed(0)
    B, h, T, dh = 2, 2, 5, 3
    q, k, v = (torch.randn(B, h, T, dh, dtype=torch.float64, requires_grad=True) for _ in range(3))

    def run(q, k, v):  # 3 tokens in one masked call, then 2 one-token steps (window 3) reading the cache
        store = [torch.zeros(B, h, T, dh, dtype=torch.float64) for _ in range(4)]
        outs = [CachedAttention.apply(q[:, :, :3], k[:, :, :3], v[:, :, :3], store, 0, 0, causal_mask(3, 0, "cpu"))]
        for t in (3, 4):
            outs.append(CachedAttention.apply(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], store, t,
                                              max(0, t - 2), None))
        return torch.cat(outs, 2)

    assert torch.autograd.gradcheck(run, (q, k, v))


def test_window_lstm_backward_passes_gradcheck():
    torch.manual_seed(0)
    T, B, H = 7, 2, 3
    xp = torch.randn(T, B, 4 * H, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(4 * H, H, dtype=torch.float64, requires_grad=True)
    tracks = window_tracks(_plan([(2, [0, 4]), (5, [0, 1]), (3, [1])]), T)
    assert torch.autograd.gradcheck(lambda x, w: lstm_window_states(x, w, tracks), (xp, w_hh))
    # one input at a time, as in the D step (w only matters through xp's producer) and the G step
    assert torch.autograd.gradcheck(lambda x: lstm_window_states(x, w_hh.detach(), tracks), (xp,))
    assert torch.autograd.gradcheck(lambda w: lstm_window_states(xp.detach(), w, tracks), (w_hh,))


def _projected_inputs(dtype, S=2, T=9, B=4, F=5, H=3):
    torch.manual_seed(0)
    x = torch.randn(T, B, F, dtype=dtype, requires_grad=True)
    w_ih = torch.randn(S, 4 * H, F, dtype=dtype, requires_grad=True)
    bias = torch.randn(S, 4 * H, dtype=dtype, requires_grad=True)
    w_hh = (0.5 * torch.randn(S, 4 * H, H, dtype=dtype)).requires_grad_(True)
    return x, w_ih, bias, w_hh


def _projected_by_autograd(x, w_ih, bias, w_hh, tracks):
    """The straightforward form: the projection by an autograd product, then the recurrence."""
    T, B, F = x.shape
    xp = torch.baddbmm(bias.unsqueeze(1), x.reshape(1, T * B, F).expand(w_ih.shape[0], -1, -1), w_ih.transpose(1, 2))
    return lstm_window_states(xp.view(w_ih.shape[0], T, B, -1), w_hh, tracks)


def test_window_lstm_with_its_projection_passes_gradcheck():
    from suhmo.models.discriminators import projected_window_states

    tracks = window_tracks(_plan([(2, [0, 4]), (5, [0, 1]), (3, [1, 6])]), 9)
    x, w_ih, bias, w_hh = _projected_inputs(torch.float64)
    assert torch.autograd.gradcheck(lambda *a: projected_window_states(*a, tracks), (x, w_ih, bias, w_hh))
    # the D step (no gradient for the features) and the G step (D frozen)
    assert torch.autograd.gradcheck(lambda *a: projected_window_states(x.detach(), *a, tracks), (w_ih, bias, w_hh))
    assert torch.autograd.gradcheck(lambda a: projected_window_states(a, w_ih.detach(), bias.detach(), w_hh.detach(),
                                                                      tracks), (x,))


def test_window_lstm_with_its_projection_equals_the_projection_by_autograd(monkeypatch):
    """float32, where the projection and its gradients are oneDNN's products (kernels.linear) on a
    CPU that has them (sizes above kernels.ops._LINEAR_MIN_MACS: the features' 410 values, 64 units):
    the same values and gradients as the autograd product before the recurrence, within float
    rounding."""
    from suhmo.models.kernels import ops
    from suhmo.models.discriminators import projected_window_states

    calls = []
    if ops._LINEAR is not None:
        monkeypatch.setattr(ops, "_LINEAR", lambda *a, _f=ops._LINEAR: calls.append(1) or _f(*a))
    for S in (1, 2):
        tracks = window_tracks(_plan([(3, [0, 5, 5]), (7, [0, 13]), (12, [5, 2]), (1, [19])]), 20)
        inputs = _projected_inputs(torch.float32, S=S, T=20, B=16, F=410, H=64)
        new = projected_window_states(*inputs, tracks)
        ref = _projected_by_autograd(*inputs, tracks)
        assert new.shape == ref.shape == (S, 8, 16, 64) and torch.allclose(new, ref, rtol=1e-5, atol=1e-5)
        w = torch.randn_like(ref)
        for a, b in zip(torch.autograd.grad((new * w).sum(), inputs), torch.autograd.grad((ref * w).sum(), inputs)):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max())), (a - b).abs().max()
    assert bool(calls) == (ops._LINEAR is not None)


def test_linear_equals_torch_products():
    """kernels.linear (oneDNN's product on the CPU in float32 outside autograd recording, else
    torch's) against torch.addmm / mm, contiguous and transposed operands."""
    from suhmo.models.kernels.ops import linear, streams_addmm_, streams_mm

    torch.manual_seed(0)
    a, w, b = torch.randn(200, 300), torch.randn(160, 300), torch.randn(160)  # 9.6M multiply-adds: oneDNN's
    with torch.no_grad():
        for x, y in ((a, w), (a.t().contiguous().t(), w.t().contiguous().t())):
            assert torch.allclose(linear(x, y, b), torch.addmm(b, x, y.t()), rtol=1e-5, atol=1e-4)
            assert torch.allclose(linear(x, y), x @ y.t(), rtol=1e-5, atol=1e-4)
        for n in (33, 130):  # torch's below _LINEAR_MIN_MACS, oneDNN's above
            p, q = torch.randn(2, n, 256), torch.randn(2, 256, 300)
            assert torch.allclose(streams_mm(p, q), torch.bmm(p, q), rtol=1e-5, atol=1e-4)
            out, w3 = torch.randn(2, n, 300), torch.randn(2, 300, 256)  # the window LSTM's forward step
            ref = torch.baddbmm(out, p, w3.transpose(1, 2))
            streams_addmm_(out, p, w3)
            assert torch.allclose(out, ref, rtol=1e-5, atol=1e-4)
    # bf16 operands (train.amp): oneDNN's product where the CPU has native bf16, the sums as torch's bf16 ones
    bf = torch.bfloat16
    with torch.no_grad():
        ab, wb = a.to(bf), w.to(bf)
        assert linear(ab, wb).dtype == bf
        assert torch.allclose(linear(ab, wb).float(), ab.float() @ wb.float().t(), rtol=1e-2, atol=5e-2)
        for n in (33, 130):
            p, q = torch.randn(2, n, 256).to(bf), torch.randn(2, 256, 300).to(bf)
            got = streams_mm(p, q, torch.float32)  # the backward step's dh, into fp32
            assert got.dtype == torch.float32
            assert torch.allclose(got, torch.bmm(p.float(), q.float()), rtol=1e-2, atol=5e-2)
            out, w3 = torch.randn(2, n, 300), torch.randn(2, 300, 256).to(bf)  # the forward step, fp32 gates
            ref = out + torch.bmm(p.float(), w3.float().transpose(1, 2))
            streams_addmm_(out, p, w3)
            assert out.dtype == torch.float32 and torch.allclose(out, ref, rtol=1e-2, atol=5e-2)
    # recorded by autograd (a plain torch product), and float64 as it is
    a.requires_grad_(True)
    assert linear(a, w).grad_fn is not None
    assert torch.equal(linear(a.double(), w.double()), a.double() @ w.double().t())
    with torch.no_grad():  # an empty sum (a one-step plan's W_hh gradient): zeros, as torch's
        assert torch.equal(linear(torch.ones(3, 0), torch.ones(4, 0)), torch.zeros(3, 4))


def _features_by_autograd(seq, z, vs, va):
    """The autograd expression ``SequenceFeatures`` replaces (losses.sequence_features before it)."""
    vel = seq[:, 1:] - seq[:, :-1]
    pos, vel, acc = seq[:, 2:], vel[:, 1:], vel[:, 1:] - vel[:, :-1]
    centroid = pos.mean(-2)
    f = torch.cat([pos - centroid.unsqueeze(-2), vel * vs, acc * va], -1)
    parts = [f.reshape(f.shape[0], f.shape[1], -1), centroid - 0.5]
    if z is not None:
        parts += [z[:, 2:], vs * (z[:, 2:] - z[:, 1:-1])]
    return torch.cat(parts, -1)


def test_sequence_features_equal_autograd_and_pass_gradcheck():
    from suhmo.models.kernels import SequenceFeatures

    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        seq = (0.5 + 0.05 * torch.randn(3, 8, 68, 2, dtype=dtype)).requires_grad_(True)
        z = torch.randn(3, 8, 6, dtype=dtype, requires_grad=True)
        for zz in (None, z):
            new = SequenceFeatures.apply(seq, zz, 25.0, 3.0)
            ref = _features_by_autograd(seq, zz, 25.0, 3.0)
            assert torch.equal(new, ref)  # the same float operations: bit for bit
            w = torch.randn_like(ref)
            ins = [seq] if zz is None else [seq, z]
            for a, b in zip(torch.autograd.grad((new * w).sum(), ins), torch.autograd.grad((ref * w).sum(), ins)):
                assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
    # train.amp: bf16 states beside fp32 positions, each gradient in its input's dtype
    s32, z16 = seq.detach().float().requires_grad_(True), z.detach().bfloat16().requires_grad_(True)
    out = SequenceFeatures.apply(s32, z16, 25.0, 3.0)
    assert out.dtype == torch.float32 and torch.equal(out[..., 410:416], z16[:, 2:].float())
    gs, gz = torch.autograd.grad(out.sum(), (s32, z16))
    assert gs.dtype == torch.float32 and gz.dtype == torch.bfloat16
    seq, z = seq[:2, :5].detach().requires_grad_(True), z[:2, :5].detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, zz: SequenceFeatures.apply(s, zz, 25.0, 3.0), (seq, z))
    assert torch.autograd.gradcheck(lambda s: SequenceFeatures.apply(s, None, 2.0, 3.0), (seq,))
    assert torch.autograd.gradcheck(lambda zz: SequenceFeatures.apply(seq.detach(), zz, 2.0, 3.0), (z,))


def test_motion_l2_equals_autograd_and_passes_gradcheck():
    from suhmo.data import motion_features
    from suhmo.losses import _point_sq
    from suhmo.models.kernels import MotionL2

    torch.manual_seed(0)
    real = torch.randn(3, 9, 68, 2, dtype=torch.float64)
    fake = (real + 0.1 * torch.randn_like(real)).requires_grad_(True)
    for n in (1, 4, 7):
        new = MotionL2.apply(fake, real, n)
        ref = _point_sq(motion_features(fake[:, -(n + 2):] - real[:, -(n + 2):]), None)
        assert torch.allclose(new, ref, rtol=1e-12)
        (g_new,), (g_ref,) = torch.autograd.grad(new, fake), torch.autograd.grad(ref, fake)
        assert torch.allclose(g_new, g_ref, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda f: MotionL2.apply(f, real[:2, :6], 3), (fake[:2, :6].detach().requires_grad_(True),))


def test_centre_scale_equals_autograd_and_passes_gradcheck():
    from suhmo.geometry import CentreScale

    def ref(x):  # geometry.centre_scale_t's reference expression (what TorchScript runs)
        c = x.mean(-2)
        xc = x - c.unsqueeze(-2)
        s = xc.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-9)
        return c, s, xc / s.unsqueeze(-1).unsqueeze(-1)

    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = (0.5 + 0.1 * torch.randn(3, 5, 68, 2, dtype=dtype))
        x[0, 0] = 0.3  # a degenerate frame: all points at one place, s clamped
        x.requires_grad_(True)
        new, old = CentreScale.apply(x), ref(x)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        for a, b in zip(new, old):  # the degenerate frame's unit shape is its rounding noise / 1e-9: not compared
            assert a.shape == b.shape and torch.allclose(a.flatten(0, 1)[1:], b.flatten(0, 1)[1:], rtol=tol, atol=tol)
        assert torch.equal(new[1][0, 0], old[1][0, 0])
        ws = [torch.randn_like(b) for b in old]
        (g_new,) = torch.autograd.grad(sum((a * w).sum() for a, w in zip(new, ws)), x)
        (g_old,) = torch.autograd.grad(sum((b * w).sum() for b, w in zip(old, ws)), x)
        # the degenerate frame: autograd's sqrt backward at 0 gives NaN (0 * inf), the kernel a finite value
        assert torch.isfinite(g_new).all()
        g_new, g_old = g_new.flatten(0, 1)[1:], g_old.flatten(0, 1)[1:]
        assert torch.allclose(g_new, g_old, rtol=tol, atol=tol * float(g_old.abs().max()))
    assert torch.autograd.gradcheck(CentreScale.apply, (x[1:, :2, :5].detach().requires_grad_(True),))


def test_tanh_by_sigmoid_equals_tanh():
    """kernels.ops.tanh_sigmoid (``tanh(y) = 2 sigmoid(2 y) - 1``, the recurrences' tanh) on pre-activations
    doubled by kernels.ops.double_g (the g gate's weight rows times 2, exactly) against torch.tanh."""
    from suhmo.models.kernels.ops import double_g, tanh_sigmoid

    torch.manual_seed(0)
    for dtype, tol in ((torch.float32, 2.5e-7), (torch.float64, 1e-15)):
        y = torch.cat([torch.linspace(-20, 20, 100001, dtype=dtype), torch.randn(10000, dtype=dtype) * 1e-6])
        one, neg1 = y.new_ones(()), y.new_full((), -1.0)
        assert (tanh_sigmoid(torch.sigmoid(2 * y), one, neg1) - torch.tanh(y)).abs().max() <= tol
    H, S, F = 3, 2, 5
    w, b, x = torch.randn(S, 4 * H, F), torch.randn(S, 4 * H), torch.randn(7, F)
    w2, b2 = double_g(w, 1), double_g(b, 1)
    assert torch.equal(w2[:, 2 * H:3 * H], 2 * w[:, 2 * H:3 * H]) and torch.equal(w2[:, :2 * H], w[:, :2 * H])
    assert torch.equal(w2[:, 3 * H:], w[:, 3 * H:]) and torch.equal(b2[:, 2 * H:3 * H], 2 * b[:, 2 * H:3 * H])
    y, y2 = torch.baddbmm(b.unsqueeze(1), x.expand(S, -1, -1), w.transpose(1, 2)), \
        torch.baddbmm(b2.unsqueeze(1), x.expand(S, -1, -1), w2.transpose(1, 2))
    assert torch.equal(y2[..., 2 * H:3 * H], 2 * y[..., 2 * H:3 * H])  # bit for bit: a power of two


def _lstm_by_autograd(x, w_ih, bias, w_hh, plan):
    """The plainest form of the window recurrence: every window by itself, an LSTM step loop with torch's
    sigmoid and tanh, recorded by autograd -> ``[S, n_windows, B, H]``."""
    outs = []
    for j in range(w_ih.shape[0]):
        per = []
        for tau, starts in plan:
            for t in starts.tolist():
                h = c = None
                for k in range(t, t + int(tau)):
                    g = x[k] @ w_ih[j].t() + bias[j] + (h @ w_hh[j].t() if h is not None else 0)
                    i, f, gg, o = g.chunk(4, -1)
                    i, f, gg, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(gg), torch.sigmoid(o)
                    c = i * gg if c is None else f * c + i * gg
                    h = o * torch.tanh(c)
                per.append(h)
        outs.append(torch.stack(per))
    return torch.stack(outs)


def test_window_lstm_equals_the_lstm_by_autograd():
    """float32 at the widths of the small size (256 units, 410 features: oneDNN's products), with
    and without weight gradients (the D and the G step): the window recurrence (its tanh as
    2 sigmoid(2 y) - 1) against the step loop with torch.tanh, values and gradients."""
    from suhmo.models.discriminators import projected_window_states

    plan = _plan([(3, [0, 5, 5]), (7, [0, 9]), (12, [5, 2]), (1, [13])])
    tracks = window_tracks(plan, 18)
    x, w_ih, bias, w_hh = _projected_inputs(torch.float32, S=2, T=18, B=8, F=410, H=256)
    with torch.no_grad():
        w_ih.mul_(0.05), w_hh.mul_(0.1)
    ref = _lstm_by_autograd(x, w_ih, bias, w_hh, plan)
    wgt = torch.randn_like(ref)
    for inputs in ((x, w_ih, bias, w_hh), (x,)):
        args = [a if any(a is b for b in inputs) else a.detach() for a in (x, w_ih, bias, w_hh)]
        new = projected_window_states(*args, tracks)
        assert torch.allclose(new, ref, rtol=1e-5, atol=2e-6), (new - ref).abs().max()
        for a, b in zip(torch.autograd.grad((new * wgt).sum(), inputs), torch.autograd.grad((ref * wgt).sum(), inputs,
                                                                                          retain_graph=True)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max())), (a - b).abs().max()


def test_the_switch_runs_the_window_lstm_reference_which_agrees_and_passes_gradcheck():
    """``kernels.reference()``: the window LSTM by its autograd reference
    (``discriminators.reference_window_states``), equal to the fast ``WindowLSTM`` and to the
    plainest per-window loop within float rounding, values and gradients; the switch is restored after."""
    from suhmo.models import kernels
    from suhmo.models.discriminators import projected_window_states

    plan = _plan([(2, [0, 4]), (5, [0, 1]), (3, [1, 6])])
    tracks = window_tracks(plan, 9)
    x, w_ih, bias, w_hh = _projected_inputs(torch.float64)
    inputs = (x, w_ih, bias, w_hh)
    fast = projected_window_states(*inputs, tracks)
    with kernels.reference():
        assert not kernels.fast_enabled()
        ref = projected_window_states(*inputs, tracks)
        assert torch.autograd.gradcheck(lambda *a: projected_window_states(*a, tracks), inputs)
    assert kernels.fast_enabled()
    plain = _lstm_by_autograd(x, w_ih, bias, w_hh, plan)
    assert torch.allclose(fast, ref, rtol=1e-12, atol=1e-12) and torch.allclose(ref, plain, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((fast * w).sum(), inputs), torch.autograd.grad((ref * w).sum(), inputs)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_rnn_rollout_backward_passes_gradcheck():
    """kernels.RNNRollout (the RNN generator's fast training pass) in float64, every input that takes
    a gradient at once: initial state, reversion rates, the cell's joined weights, the head's."""
    from suhmo.models.kernels import RNNRollout
    from suhmo.models.rnn import RNNCore

    torch.manual_seed(0)
    D, H, M = 4, 3, 5
    for pair in (True, False):
        core = RNNCore(H, M, pair=pair, delta=False, spectral=False, frame_dim=D, vel_scale=2.0, revert=True).double()
        x, v0 = torch.randn(4, 3, D, dtype=torch.float64), 0.1 * torch.randn(4, D, dtype=torch.float64)
        h0, c0 = (0.5 * torch.randn(4, H, dtype=torch.float64) for _ in range(2))
        w, b = core._joined_weights()
        l1, n1, a1, l2, n2, _, l3 = core.head.net
        weights = [core.integrate.rate(), w, b, l1.weight, l1.bias, n1.weight, n1.bias, l2.weight, l2.bias,
                   n2.weight, n2.bias, l3.weight, l3.bias]
        ins = [t.detach().clone().requires_grad_(True) for t in [h0, c0] + weights]
        meta = (3, 2.0, pair, core._next_noise, 0, n1.eps, n2.eps, float(a1.negative_slope), None)
        assert torch.autograd.gradcheck(lambda *a: RNNRollout.apply(x, v0, *a, meta), ins)
