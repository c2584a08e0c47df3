"""train.compile, train.amp and the device helpers of suhmo.speed, on the CPU.

The compile tests use cheap torch.compile backends (aot_eager traces forward and backward
like inductor but runs aten ops; a raising backend stands for a missing C compiler); inductor
itself is timed by benchmarks/compile_cost.py and run on a GPU by benchmarks/device_check.sh.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from suhmo import speed
from suhmo.config import make_config
from suhmo.models import build_discriminator, build_generator
from suhmo.models.discriminators import lstm_window_states, projected_window_states, window_tracks
from suhmo.train import Trainer


def _metrics(sample_fn, step):
    refs = np.full((2, 68, 2), 0.5, np.float32) + np.linspace(-0.2, 0.2, 68, dtype=np.float32)[None, :, None]
    return {"speed": float(np.abs(np.diff(sample_fn(refs, 6, 0), axis=1)).mean())}


def _train(tmp_path, name, **overrides):
    cfg = make_config("tiny", overrides={"train.iterations": 3, "train.eval_every": 3, **overrides})
    tr = Trainer(cfg, tmp_path / name, metrics_fn=_metrics)
    metrics = tr.fit()
    return tr, metrics


def test_config_fields_default_off():
    cfg = make_config("paper")
    assert cfg.train.compile is False and cfg.train.amp is False
    assert make_config("tiny", overrides=["train.compile=true", "train.amp=true"]).train.compile is True


@pytest.mark.parametrize("variant", ["rnn", "transformer"])
def test_compile_failure_warns_once_and_trains_as_eager(tmp_path, monkeypatch, variant):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C compiler found")

    monkeypatch.setattr(speed, "BACKEND", broken_backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr, m = _train(tmp_path, "c", **{"model.variant": variant, "train.compile": True})
    msgs = [str(w.message) for w in caught if "train.compile" in str(w.message)]
    assert len(msgs) == 1 and "continues uncompiled" in msgs[0] and "no C compiler" in msgs[0], msgs
    assert tr.compile_seconds is None
    assert all(getattr(mod, "_compiled_call_impl", None) is None for mod in speed.step_modules(tr.G, tr.D))
    ref, m_ref = _train(tmp_path, "e", **{"model.variant": variant})
    assert m == m_ref  # the failed probe left weights, buffers and RNG states as they were
    for a, b in zip(tr.G.state_dict().values(), ref.G.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("variant", ["rnn", "transformer"])
def test_compiled_training_matches_eager(tmp_path, monkeypatch, variant):
    torch._dynamo.reset()
    monkeypatch.setattr(speed, "BACKEND", "aot_eager")
    tr, m = _train(tmp_path, "c", **{"model.variant": variant, "train.compile": True})
    assert tr.compile_seconds is not None and tr.compile_seconds > 0
    mods = speed.step_modules(tr.G, tr.D)
    assert all(mod._compiled_call_impl is not None for mod in mods)
    ref, m_ref = _train(tmp_path, "e", **{"model.variant": variant})
    assert tr.G.state_dict().keys() == ref.G.state_dict().keys()  # checkpoints keep their names
    for a, b in zip(tr.G.state_dict().values(), ref.G.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert m["speed"] == pytest.approx(m_ref["speed"], rel=1e-4)
    ck = torch.load(tmp_path / "c" / "last.pt", weights_only=True)
    assert ck["G"].keys() == ref.G.state_dict().keys()
    torch._dynamo.reset()


@pytest.mark.parametrize("variant", ["rnn", "transformer"])
def test_amp_trains_on_cpu_in_bf16_with_fp32_weights(tmp_path, variant, monkeypatch):
    monkeypatch.setattr(speed, "cpu_native_bf16", lambda: True)  # the bf16 path, whatever this CPU's speed at it
    tr, m = _train(tmp_path, "a", **{"model.variant": variant, "train.amp": True})
    assert tr.amp is True
    assert all(np.isfinite(v) for v in m.values())
    assert all(p.dtype == torch.float32 for p in list(tr.G.parameters()) + list(tr.D.parameters()))
    assert all(torch.isfinite(p).all() for p in tr.G.parameters())


def test_amp_autocasts_the_forward_but_not_the_positions():
    cfg = make_config("tiny", overrides={"model.variant": "transformer"})
    G = build_generator(cfg)
    obs = torch.rand(4, 3, 68, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what speed.autocast enters where bf16 is native
        out = G(obs, 5)
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert out.future.dtype == torch.float32  # x_t = x_(t-1) + v_t in fp32 (eq. 4)
    out.future.sum().backward()  # the cached attention's backward takes bf16 gradients
    assert all(torch.isfinite(p.grad).all() for p in G.parameters() if p.grad is not None)
    with speed.autocast(torch.device("cpu"), False):
        assert not torch.is_autocast_enabled("cpu")


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


_PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise"}


class _Products(TorchDispatchMode):
    """Records every matrix product run inside (forward and backward) with its operands' dtypes."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in _PRODUCTS:
            self.seen.append((func._schema.name, {a.dtype for a in args if isinstance(a, torch.Tensor)},
                              tuple(a.shape for a in args if isinstance(a, torch.Tensor))))
        return func(*args, **(kwargs or {}))


def _bf16_rounded(t):
    return bool(torch.equal(t.to(torch.bfloat16).float(), t))


@pytest.mark.parametrize("projected", [False, True])
def test_window_lstm_under_autocast_takes_bf16_products_and_keeps_fp32_states(projected):
    """train.amp: every product of the window recurrence (forward and backward, the input
    projection's too) on bf16 operands; the window outputs fp32 (not bf16-rounded values), and
    within bf16's rounding of the fp32 node (relative 2^-8 per product); the gradients it returns
    fp32 (read raw, before autograd would convert them)."""
    torch.manual_seed(0)
    T, B, F, H, S = 16, 6, 20, 16, 2
    plan = [(5, torch.tensor([0, 4, 9])), (12, torch.tensor([0, 3])), (16, torch.tensor([0]))]
    tracks = window_tracks(plan, T)
    x = torch.randn(T, B, F, requires_grad=True)
    w_ih = (0.3 * torch.randn(S, 4 * H, F)).requires_grad_()
    bias = (0.1 * torch.randn(S, 4 * H)).requires_grad_()
    w_hh = (0.3 * torch.randn(S, 4 * H, H)).requires_grad_()
    if projected:
        inputs = (x, w_ih, bias, w_hh)

        def run():
            return projected_window_states(x, w_ih, bias, w_hh, tracks)
    else:  # the input projection in fp32, outside autocast: only the recurrence can round
        xp = torch.baddbmm(bias.unsqueeze(1), x.reshape(1, T * B, F).expand(S, -1, -1),
                           w_ih.transpose(1, 2)).view(S, T, B, 4 * H).detach().requires_grad_()
        inputs = (xp, w_hh)

        def run():
            return lstm_window_states(xp, w_hh, tracks)
    weights = torch.linspace(-1, 1, S * 6 * B * H).view(S, 6, B, H)
    ref = run()
    g_ref = torch.autograd.grad((ref * weights).sum(), inputs)
    with _Products() as rec:
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the numerics, whatever this CPU's bf16 speed
            got = run()
        with torch.no_grad():
            raw = got.grad_fn.apply(weights)  # what the node's backward returns, before autograd's checks
        g_got = torch.autograd.grad((got * weights).sum(), inputs)
    assert len(rec.seen) >= 2 * 15 and all(dt == {torch.bfloat16} for _, dt, _ in rec.seen), rec.seen
    assert got.dtype == torch.float32 and not _bf16_rounded(got)
    assert 1e-5 < _rel(got, ref) < 2e-2  # bf16 products: rounded, by about bf16's precision
    assert all(g is None or g.dtype == torch.float32 for g in raw) and sum(g is not None for g in raw) == len(inputs)
    for a, b in zip(g_got, g_ref):
        assert _rel(a, b) < 3e-2


def test_rnn_rollout_under_autocast_is_the_fused_node_with_bf16_cell_products(monkeypatch):
    """train.amp runs the RNN generator's training pass as its fused node (not the slower
    autograd loop), the cell's products on bf16 operands (forward, backward and its weight
    gradient), the head's in fp32; positions and gradients fp32."""
    from suhmo.models import kernels

    cfg = make_config("tiny", overrides={"model.hidden_g": 32, "model.mlp_g": 32})
    torch.manual_seed(0)
    G = build_generator(cfg)
    obs = torch.rand(4, 3, 68, 2)
    used = []
    monkeypatch.setattr(kernels.RNNRollout, "apply", lambda *a, _f=kernels.RNNRollout.apply: used.append(a[-1][-1]) or _f(*a))
    params = [p for p in G.parameters() if p.requires_grad]
    outs, cell = {}, {}
    four_h = 4 * cfg.model.hidden_g
    for amp in (False, True):
        torch.manual_seed(1)
        with _Products() as rec:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = G(obs, 6)
            w = torch.linspace(-1, 1, out.future.numel()).view_as(out.future)
            outs[amp] = (out.future.detach(), torch.autograd.grad((out.future * w).sum(), params, allow_unused=True))
        # the cell's products: an operand with 4H columns or rows (its gates); 8 steps forward, 8 back, 1 weight gradient
        cell[amp] = [dt for _, dt, shapes in rec.seen if any(four_h in sh[-2:] for sh in shapes)]
    assert used == [None, torch.bfloat16]
    assert len(cell[True]) >= 2 * 8 + 1 and all(dt == {torch.bfloat16} for dt in cell[True])
    assert all(dt == {torch.float32} for dt in cell[False])
    (f0, g0), (f1, g1) = outs[False], outs[True]
    assert f1.dtype == torch.float32 and 0 < _rel(f1 - obs[:, -1:], f0 - obs[:, -1:]) < 2e-2
    for a, b in zip(g1, g0):
        if b is not None and b.abs().max() > 0:
            assert a.dtype == torch.float32 and _rel(a, b) < 5e-2


def test_check_amp_without_bf16_device_warns_and_turns_off():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.warns(UserWarning, match="train.amp: cuda does not support bf16; training continues in fp32"):
        assert speed.check_amp(torch.device("cuda"), True) is False
    assert speed.check_amp(torch.device("cpu"), False) is False
    if speed.cpu_native_bf16():
        assert speed.check_amp(torch.device("cpu"), True) is True
    else:  # emulated bf16 products would be slower than fp32
        with pytest.warns(UserWarning, match="train.amp: cpu has no native bf16 products"):
            assert speed.check_amp(torch.device("cpu"), True) is False


def test_native_bf16_is_what_the_cpu_flags_say():
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else None
    if flags is None or "avx512f" not in flags and "avx2" not in flags:
        pytest.skip("not an x86 Linux machine")
    if "avx512_bf16" in flags:
        assert speed.cpu_native_bf16() is True
    elif "amx_bf16" not in flags:  # (AMX alone also needs the kernel's permission: not judged here)
        assert speed.cpu_native_bf16() is False


def test_native_bf16_on_arm_is_onednns_answer(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    expect = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert speed.cpu_native_bf16() is expect
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    assert speed.cpu_native_bf16() is False


def test_to_device_and_eager_stance():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = speed.to_device(a, torch.device("cpu"))
    assert torch.equal(t, torch.from_numpy(a))
    cfg = make_config("tiny")
    mods = speed.step_modules(build_generator(cfg), build_discriminator(cfg))
    assert len(mods) == 2  # RNN velocity head, D_F
    with speed.eager():
        pass
