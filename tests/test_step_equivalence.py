"""The training step's speed changes leave the trained result unchanged: a few tiny iterations
with a fixed seed, through the trainer as it runs, against the step written the earlier way
(features of the fakes formed again in the G step, landmark features from ``motion_features``).
Bit-for-bit where the arithmetic is the same; where it is reordered, within float rounding."""

import pytest
import torch

from suhmo import losses, objectives
from suhmo.config import make_config
from suhmo.train import Trainer

RECIPE = {  # the cpu preset's recipe at the tiny size
    "model.space": "semantic", "model.semantic_k": 4, "model.revert": True, "model.noise_g": 4,
    "windows.family": "texp", "windows.texp_mean": 6.0, "data.seq_len": 12, "windows.tau_max": 12,
    "optim.grad_clip": 1.0, "optim.ema_g": 0.999, "train.iterations": 3, "train.eval_every": 10**6,
}


def earlier_step(self, batch, it):
    """``AdversarialObjective.step`` before the fakes' features were shared between the D and the
    G step, and before ``sequence_features`` built the landmark features in one concatenation."""
    cfg, G, D = self.cfg, self.G, self.D
    obs_len, seq_len = cfg.data.obs_len, cfg.data.seq_len
    space = getattr(G, "space", None)
    k = obs_len
    if cfg.data.random_obs and obs_len > 1:
        k = int(torch.randint(1, obs_len + 1, (1,), generator=self.rng))
    obs = batch[:, :k]
    out = G(obs, obs_len + seq_len - k)
    fake = torch.cat([obs, out.future], dim=1)
    plan = self.windows.sample(fake.shape[1] - 2, self.rng)
    real_m = losses.motion_features(batch)
    fake_m = losses.motion_features(fake.detach())
    both = torch.cat([batch, fake.detach()], 0)
    feats = losses.sequence_features(both, cfg.model, torch.cat([real_m, fake_m], 0), space)
    loss_d, _ = objectives.d_step_loss(D, batch, fake.detach(), plan, cfg, space, feats[batch.shape[0]:])
    objectives.optimiser_step(D, self.opt_d, loss_d, cfg.optim.grad_clip)
    fake_feats = losses.sequence_features(fake, cfg.model, losses.motion_features(fake), space)
    loss_g, _ = objectives.g_step_loss(D, fake, batch, out, plan, cfg, losses.lambda_at(cfg.loss, it), space,
                                       fake_feats)
    objectives.optimiser_step(G, self.opt_g, loss_g, cfg.optim.grad_clip)
    objectives.ema_update(self.G_ema, G, cfg.optim.ema_g, it)
    return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach())}


def _centre_scale_by_autograd(x):
    """``geometry.centre_scale_t``'s reference expression (what TorchScript runs), not ``CentreScale``."""
    c = x.mean(-2)
    xc = x - c.unsqueeze(-2)
    s = xc.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-9)
    return c, s, xc / s.unsqueeze(-1).unsqueeze(-1)


def _earlier_code(monkeypatch):
    """The training step as it was written earlier: ``earlier_step``, and the semantic encoding's
    shape normalisation by autograd. (The earlier step with the new encoding is a third code path,
    whose float rounding Adam amplifies differently: measured, 3 iterations of it agree with the
    new code within 5e-5, the earlier code within 2e-6.)"""
    from suhmo import geometry

    monkeypatch.setattr(objectives.AdversarialObjective, "step", earlier_step)
    monkeypatch.setattr(geometry, "_centre_scale_fast", _centre_scale_by_autograd)


def _train(tmp_path, name, over, monkeypatch=None):
    cfg = make_config("tiny", overrides={**RECIPE, **over})
    tr = Trainer(cfg, tmp_path / name, metrics_fn=lambda sample_fn, step: {}, resume=False)
    tr.fit()
    return tr


def _assert_close_after_adam(a: dict, b: dict) -> None:
    """Weights of two 3-iteration runs whose gradients differ by float rounding. Adam divides each
    update by the gradient's own scale, so an entry whose gradient is near 0 can move by a good
    part of a step (lr 5e-5 to 1e-4 here) from a rounding difference: allow up to one step (1e-4) in at
    most a quarter of the entries of a tensor, 1e-6 in the others (on an AMD CPU at the same
    commit, an entry of G's or D's weights moved 2.3e-5 to 5.1e-5 from run to run). A wrong
    gradient moves most entries by ~lr."""
    assert a.keys() == b.keys()
    for k in a:
        diff = (a[k] - b[k]).abs()
        assert float(diff.max()) <= 1e-4, (k, float(diff.max()))
        off = int((diff > 1e-6 + 1e-5 * b[k].abs()).sum())
        assert off <= max(2, 0.25 * diff.numel()), (k, off, diff.numel(), float(diff.max()))


def _states(tr, nets=("G", "D", "G_ema")):
    """The weights of ``nets``; not the spectral norm's power-iteration vectors (``..._u``,
    ``..._v``): unit vectors that follow the weights, whose rounding is not Adam's (a third of
    one's 32 entries off by up to 1.2e-5 on an AMD CPU); equal weights give equal vectors."""
    return {f"{net}.{k}": v.float() for net in nets for k, v in getattr(tr, net).state_dict().items()
            if not (".parametrizations." in k and k.rsplit(".", 1)[-1] in ("_u", "_v"))}


@pytest.mark.parametrize("d_semantic", [False, True])
def test_training_step_unchanged(tmp_path, monkeypatch, d_semantic):
    """Without model.d_semantic, D after one iteration is bit-for-bit the same (its features are
    the same values); with it, the semantic encoding of the fakes is a product over B rows
    instead of 2B, which may round differently. G's gradient reaches the positions through a
    differently ordered graph, so G (and from the second iteration on D, which sees G's fakes)
    agrees within float rounding, as Adam passes it on (_assert_close_after_adam)."""
    over = {"model.d_semantic": d_semantic}
    new1, new3 = _train(tmp_path, "new1", {**over, "train.iterations": 1}), _train(tmp_path, "new3", over)
    monkeypatch.setattr(objectives.AdversarialObjective, "step", earlier_step)
    old1, old3 = _train(tmp_path, "old1", {**over, "train.iterations": 1}), _train(tmp_path, "old3", over)
    a, b = _states(new1, ["D"]), _states(old1, ["D"])
    assert d_semantic or all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    a, b, moved = _states(new3), _states(old3), _states(new1)
    _assert_close_after_adam(a, b)
    assert any((a[k] - moved[k]).abs().max() > 1e-4 for k in a if k.startswith("G.")), "G must move"


@pytest.mark.parametrize("d_semantic", [False, True])
def test_training_unchanged_against_the_earlier_step_and_rollout(tmp_path, monkeypatch, d_semantic):
    """All of this file's changes at once: 3 iterations of the trainer as it runs against the
    earlier step with G's training pass as the step loop (nn.LSTMCell): within float rounding,
    as Adam passes it on (_assert_close_after_adam)."""
    from suhmo.models.rnn import RNNCore

    over = {"model.d_semantic": d_semantic}
    new = _train(tmp_path, "new", over)
    _earlier_code(monkeypatch)
    monkeypatch.setattr(RNNCore, "_training_pass", lambda self, obs, v, n: self.reference(obs, v, n, False))
    old = _train(tmp_path, "old", over)
    _assert_close_after_adam(_states(new), _states(old))


def test_sequence_features_one_concatenation_equals_motion_features_path():
    cfg = make_config("tiny")
    seq = (0.5 + 0.05 * torch.randn(4, 9, 68, 2)).requires_grad_(True)
    new = losses.sequence_features(seq, cfg.model)
    ref = losses.sequence_features(seq, cfg.model, losses.motion_features(seq))
    assert torch.equal(new, ref)
    w = torch.randn_like(ref)
    (g_new,) = torch.autograd.grad((new * w).sum(), seq)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), seq)
    assert torch.allclose(g_new, g_ref, rtol=1e-5, atol=1e-4)  # gradients of order 25 (vel_scale)


@pytest.mark.parametrize("path", ["fused", "autograd"])
@pytest.mark.parametrize("kw", [
    dict(pair=True, delta=False, noise=3, revert=True),  # the cpu preset's core
    dict(pair=True, delta=False, noise=2, rho=0.5, centred=True, frame_dim=136),
    dict(pair=False, delta=True),
    dict(pair=True, delta=False),
    dict(pair=False, delta=False, noise=2, revert=True),
])
def test_rnn_training_pass_equals_the_step_loop(kw, path, monkeypatch):
    """RNNCore's training pass (``_rollout_fused``: one autograd node with the backward written
    out, where it applies; else the reference with joined products, fewer operations per step)
    against the step loop that generation and the exported module run (nn.LSTMCell), on the
    same noise draws: outputs and every gradient agree within float rounding."""
    from suhmo.models import kernels
    from suhmo.models.rnn import RNNCore

    kw = dict(kw)
    fd = kw.pop("frame_dim", 6)
    torch.manual_seed(0)
    core = RNNCore(8, 8, spectral=True, frame_dim=fd, vel_scale=3.0, **kw).eval()  # eval: fixed sigma(W)
    z, v = torch.randn(6, 3, fd), 0.1 * torch.randn(6, fd)
    used = []
    monkeypatch.setattr(kernels.RNNRollout, "apply", lambda *a, _f=kernels.RNNRollout.apply: used.append(1) or _f(*a))
    torch.manual_seed(1)
    with kernels.reference(path == "autograd"):  # the switch: the reference recorded by autograd
        fused = core(z, v, 7, False)
    assert bool(used) == (path == "fused" and not kw.get("delta") and not kw.get("centred"))
    torch.manual_seed(1)
    loop = core(z, v, 7, True)
    for a, b in zip(fused, loop):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()
    w = torch.randn_like(loop[0])
    params = list(core.parameters())
    g_fused = torch.autograd.grad((fused[0] * w).sum() + fused[1].sum(), params)
    g_loop = torch.autograd.grad((loop[0] * w).sum() + loop[1].sum(), params)
    assert any(g.abs().max() > 0 for g in g_loop)
    for a, b, p in zip(g_fused, g_loop, params):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(b.abs().max()))), (a - b).abs().max()


def test_l2_of_the_difference_equals_l2_of_the_features():
    """Eq. 11's L2 from the features of (fake - real) equals the distance of the two feature
    sets (motion_features is linear), values and gradients within float rounding."""
    from suhmo.models.generators import GenOutput

    cfg = make_config("tiny")
    torch.manual_seed(0)
    real = 0.5 + 0.05 * torch.randn(4, 9, 68, 2)
    fake = (real + 0.01 * torch.randn_like(real)).requires_grad_(True)
    out = GenOutput(fake[:, 3:], fake[:, 1:3])
    loss, logs = objectives.g_step_loss(None, fake, real, out, None, cfg, lam=1.0)
    n = 6
    d = losses.motion_features(fake)[:, -n:] - losses.motion_features(real)[:, -n:]
    ref = d.reshape(4, n, 68, 3, 2).pow(2).sum(-1).mean()
    assert abs(logs["g_l2"] - float(ref)) <= 1e-5 * float(ref)
    (g_new,) = torch.autograd.grad(loss, fake)
    (g_ref,) = torch.autograd.grad(ref, fake)
    assert torch.allclose(g_new, g_ref, rtol=1e-4, atol=1e-4 * float(g_ref.abs().max()))
