"""Generators and discriminators: shapes, pair operators (eq. 13-17), causality, KV cache, export."""

import pytest
import torch
from torch.nn.utils import parametrize

from suhmo.config import make_config
from suhmo.models import (
    GenOutput,
    WindowSampler,
    batch_pool,
    build_discriminator,
    build_generator,
    num_feature_frames,
    pair_pool,
    pair_swap,
)
from suhmo.models.layers import FEATURE_DIM

VARIANTS = ["rnn", "transformer"]


def tiny(variant="rnn", **over):
    cfg = make_config("tiny", overrides={"model.variant": variant, **over})
    return cfg


def make_g(variant, seed=0, **over):
    torch.manual_seed(seed)
    g = build_generator(tiny(variant, **over))
    # make the velocity heads' outputs large enough that any dependence shows up clearly
    with torch.no_grad():
        for p in g.parameters():
            if p.dim() == 2 and p.shape[0] == 136:
                p.mul_(100.0)
    return g.eval()  # eval: spectral norm does no power-iteration step, so two passes see the same weights


def seqs(B=4, T=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 68, 2, generator=g)


# ------------------------------------------------------------------ pair operators
def test_batch_pool_symmetric_within_pair_and_no_mixing():
    x = torch.randn(6, 3, 5)
    y = batch_pool(x)
    assert y.shape == x.shape
    for n in range(3):
        expected = torch.maximum(x[2 * n], x[2 * n + 1])
        assert torch.equal(y[2 * n], expected) and torch.equal(y[2 * n + 1], expected)
    x2 = x.clone()
    x2[0] += 100.0  # a change in pair 0 cannot reach pairs 1 and 2
    y2 = batch_pool(x2)
    assert torch.equal(y2[2:], y[2:]) and not torch.equal(y2[:2], y[:2])
    assert torch.equal(pair_pool(x), y[0::2])
    assert torch.equal(pair_swap(x)[0], x[1]) and torch.equal(pair_swap(x)[1], x[0])
    assert torch.equal(pair_swap(pair_swap(x)), x)


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("variant", VARIANTS)
def test_generator_shapes(variant):
    g = build_generator(tiny(variant))
    obs = seqs(4, 5)
    out = g(obs, 7)
    assert isinstance(out, GenOutput)
    assert out.future.shape == (4, 7, 68, 2) and out.recon.shape == (4, 4, 68, 2)
    assert torch.isfinite(out.future).all()
    one = g(obs[:, :1], 3, init_vel=torch.full((4, 68, 2), 0.01))
    assert one.future.shape == (4, 3, 68, 2) and one.recon.shape == (4, 0, 68, 2)
    with pytest.raises(Exception, match="even"):
        g(seqs(3, 5), 2)


@pytest.mark.parametrize("form", VARIANTS)
def test_discriminator_shapes(form):
    cfg = tiny("rnn", **{"model.d_form": form})
    d = build_discriminator(cfg)
    w = torch.randn(6, 9, FEATURE_DIM)
    assert d.frame(w).shape == (6, 9)
    assert d.seq(w).shape == (6,)
    assert d.joint(w).shape == (3,)
    assert build_discriminator(tiny("rnn", **{"model.joint_d": False})).joint is None


@pytest.mark.parametrize("form", VARIANTS)
def test_joint_discriminator_scores_each_pair_once(form):
    torch.manual_seed(0)
    d = build_discriminator(tiny("rnn", **{"model.d_form": form})).eval()
    w = torch.randn(6, 9, FEATURE_DIM)
    s = d.joint(w)
    # swapping the two members of a pair leaves its score unchanged (BP is symmetric)
    assert torch.allclose(d.joint(pair_swap(w)), s, atol=1e-5)
    w2 = w.clone()
    w2[0] += 1.0
    s2 = d.joint(w2)
    assert not torch.allclose(s2[0], s[0]) and torch.allclose(s2[1:], s[1:], atol=1e-6)


# ------------------------------------------------------------------ pairs in G
def test_rnn_batch_pool_couples_only_the_partner():
    obs = seqs(4, 5)
    for pair, partner_changes in ((True, True), (False, False)):
        g = make_g("rnn", **{"model.pair_g": pair})
        base = g.generate(obs, 6).future
        obs2 = obs.clone()
        obs2[0] += 0.05
        new = g.generate(obs2, 6).future
        assert not torch.allclose(new[0], base[0])
        assert torch.allclose(new[2:], base[2:], atol=0), "a pair leaked into another pair"
        assert (not torch.allclose(new[1], base[1], atol=1e-6)) == partner_changes


def test_bxa_attends_only_to_partner_past():
    g = make_g("transformer")
    T, k = 12, 6
    x = seqs(4, T)
    base = g(x, 1).recon  # teacher forcing over all T frames: recon[t] predicts frame t+1 from frames <= t
    x2 = x.clone()
    x2[1, k:] += 0.05  # change the partner of row 0 from frame k on
    new = g(x2, 1).recon
    assert torch.allclose(new[0, :k], base[0, :k], atol=1e-6), "row 0 saw its partner's future"
    assert not torch.allclose(new[0, k:], base[0, k:], atol=1e-5), "row 0 ignores its partner's past"
    assert torch.allclose(new[2:], base[2:], atol=1e-6), "BXA mixed different pairs"
    g1 = make_g("transformer", **{"model.pair_g": False})
    assert torch.allclose(g1(x2, 1).recon[0], g1(x, 1).recon[0], atol=1e-6), "one-sample G still mixes pairs"


def test_bxa_is_independent_of_joint_d_flag():
    g = make_g("transformer", **{"model.joint_d": False})
    assert all(hasattr(b, "bxa") for b in g.core.blocks)


# ------------------------------------------------------------------ causality
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("delta", [False, True])
def test_generator_causality(variant, delta):
    g = make_g(variant, **{"model.delta": delta})
    T, k = 12, 5
    x = seqs(4, T)
    base = g(x, 1).recon
    x2 = x.clone()
    x2[:, k:] += 0.05
    new = g(x2, 1).recon
    assert torch.allclose(new[:, :k], base[:, :k], atol=1e-6), "output before t depends on inputs after t"
    assert not torch.allclose(new[:, k], base[:, k], atol=1e-5)


# ------------------------------------------------------------------ KV cache
@pytest.mark.parametrize("over", [{}, {"model.heads_g": 2, "model.blocks_g": 2}, {"model.delta": True},
                                  {"model.pair_g": False}, {"model.g_centred": True}])
def test_cached_generation_matches_uncached(over):
    g = make_g("transformer", **over)
    obs = seqs(4, 3)
    v0 = 0.01 * torch.randn(4, 68, 2)
    gen = g.generate(obs, 9, init_vel=v0)
    # uncached reference: one causal pass (no cache, no buffers) over the whole generated trajectory
    full = torch.cat([obs, gen.future], 1)
    with torch.no_grad():
        ref = g(full, 1, init_vel=v0).recon
    assert torch.allclose(ref[:, 2:], gen.future, atol=1e-5)
    assert torch.allclose(ref[:, :2], gen.recon, atol=1e-5)
    # and the training path (list caches, autograd) agrees with the buffered one
    assert torch.allclose(g(obs, 9, init_vel=v0).future, gen.future, atol=1e-5)


@pytest.mark.parametrize("over", [{}, {"model.heads_g": 2, "model.blocks_g": 2}, {"model.attn_window_g": 2}])
def test_training_cache_gradients_match_re_encoding(over):
    """The training pass writes keys and values in place and carries their gradients back to
    the step that wrote them (kernels.CachedAttention); the reference re-encodes the whole prefix at
    every step with one masked call, so no gradient crosses calls there."""
    g = make_g("transformer", **over).double().train()  # float64: compare to 1e-9, not to float32 rounding
    for m in g.modules():  # keep the weights fixed between the two passes (no power-iteration step)
        if hasattr(m, "parametrizations"):
            m.eval()
    obs = seqs(4, 3).double().requires_grad_(True)
    v0 = 0.01 * torch.randn(4, 68, 2, dtype=torch.float64)
    w = torch.randn(4, 6, 68, 2, dtype=torch.float64)
    params = [p for p in g.parameters() if p.requires_grad]

    fut = g(obs, 6, init_vel=v0).future
    grads = torch.autograd.grad((fut * w).sum(), [obs] + params)
    prefix = obs
    for _ in range(6):
        prefix = torch.cat([prefix, g(prefix, 1, init_vel=v0).future], 1)
    assert torch.allclose(prefix[:, 3:], fut, atol=1e-10)
    ref = torch.autograd.grad((prefix[:, 3:] * w).sum(), [obs] + params)
    for a, b in zip(grads, ref):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-9), (a - b).abs().max()


# ------------------------------------------------------------------ bounded attention window
@pytest.mark.parametrize("over", [{}, {"model.heads_g": 2, "model.blocks_g": 2}, {"model.delta": True},
                                  {"model.pair_g": False}])
def test_windowed_cached_generation_matches_parallel_pass(over):
    g = make_g("transformer", **{"model.attn_window_g": 3, **over})
    obs = seqs(4, 5)  # more observed frames than the window: the teacher-forced pass needs the windowed mask
    v0 = 0.01 * torch.randn(4, 68, 2)
    gen = g.generate(obs, 9, init_vel=v0)
    full = torch.cat([obs, gen.future], 1)
    with torch.no_grad():
        ref = g(full, 1, init_vel=v0).recon  # one parallel pass, window as a mask
    assert torch.allclose(ref[:, 4:], gen.future, atol=1e-5)
    assert torch.allclose(ref[:, :4], gen.recon, atol=1e-5)
    assert torch.allclose(g(obs, 9, init_vel=v0).future, gen.future, atol=1e-5)
    # and the window does change the model (else the tests below would prove nothing)
    g_full = make_g("transformer", **over)
    assert not torch.allclose(g_full(full, 1, init_vel=v0).recon[:, 6:], ref[:, 6:], atol=1e-4)


@pytest.mark.parametrize("pair, blocks", [(False, 1), (True, 1), (False, 2)])
def test_window_ignores_tokens_older_than_w(pair, blocks):
    W, T, k = 3, 16, 2
    g = make_g("transformer", **{"model.attn_window_g": W, "model.pair_g": pair, "model.blocks_g": blocks})
    x = seqs(4, T)
    x2 = x.clone()
    x2[:, :k + 1] += 0.05  # frames 0..k of every row: tokens 0..k+1 change (token k+1 holds x_{k+1} - x_k)
    base, new = g(x, 1).recon, g(x2, 1).recon  # recon[i] is read from tokens <= i
    # each attention reaches W-1 tokens back: output i reads tokens >= i - hops*(W-1), where hops
    # counts the attentions chained per path (SA, then BXA over the partner's SA outputs, per block)
    reach = blocks * (2 if pair else 1) * (W - 1)
    first_blind = k + 2 + reach
    assert torch.allclose(new[:, first_blind:], base[:, first_blind:], atol=0), "read a token outside the window"
    assert not torch.allclose(new[:, first_blind - 1], base[:, first_blind - 1], atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, as in the export tests below
def test_export_keeps_the_window():
    g = make_g("transformer", **{"model.attn_window_g": 3})
    obs, v0 = seqs(4, 2), 0.01 * torch.randn(4, 68, 2)
    expected = g.generate(obs, 10, init_vel=v0).future
    assert not torch.allclose(make_g("transformer").generate(obs, 10, init_vel=v0).future, expected, atol=1e-4)
    assert torch.allclose(torch.jit.script(g.export_module())(obs, v0, 10), expected, atol=1e-5)


@pytest.mark.parametrize("window", [14, 15, 1000])
def test_window_at_least_the_length_is_full_attention(window):
    g = make_g("transformer", **{"model.heads_g": 2})
    gw = make_g("transformer", **{"model.heads_g": 2, "model.attn_window_g": window})
    obs, v0 = seqs(4, 3), 0.01 * torch.randn(4, 68, 2)
    x = seqs(4, 14)
    assert torch.equal(gw(x, 1).recon, g(x, 1).recon)
    assert torch.equal(gw.generate(obs, 12, init_vel=v0).future, g.generate(obs, 12, init_vel=v0).future)
    assert torch.equal(gw(obs, 12, init_vel=v0).future, g(obs, 12, init_vel=v0).future)


# ------------------------------------------------------------------ export
def test_centred_step_input_separates_shape_from_position():
    from suhmo.models.step import step_input

    pos, vel = 0.3 + 0.4 * torch.rand(3, 5, 136), 0.01 * torch.randn(3, 5, 136)
    plain, centred = step_input(pos, vel, 25.0, False), step_input(pos, vel, 25.0, True)
    assert plain.shape == (3, 5, 272) and centred.shape == (3, 5, 274)
    torch.testing.assert_close(plain, torch.cat([pos, 25.0 * vel], -1))
    pts = pos.reshape(3, 5, 68, 2)
    torch.testing.assert_close(centred[..., :136], (pts - pts.mean(-2, keepdim=True)).reshape(3, 5, 136))
    torch.testing.assert_close(centred[..., 136:272], 25.0 * vel)
    torch.testing.assert_close(centred[..., 272:], pts.mean(-2) - 0.5)
    # a translated face has the same shape block; only the centroid moves
    moved = step_input(pos + torch.tensor([0.1, -0.05]).repeat(68), vel, 25.0, True)
    torch.testing.assert_close(moved[..., :272], centred[..., :272])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated but still the portable format
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("centred", [False, True])
def test_export_script_roundtrip(variant, centred, tmp_path):
    g = build_generator(tiny(variant, **{"model.g_centred": centred}))
    g.train()
    g(seqs(4, 5), 3)  # a training pass updates the spectral-norm state
    obs, v0 = seqs(4, 2), 0.01 * torch.randn(4, 68, 2)
    expected = g.generate(obs, 8, init_vel=v0).future
    scripted = torch.jit.script(g.export_module())
    torch.jit.save(scripted, str(tmp_path / "g.pt"))
    loaded = torch.jit.load(str(tmp_path / "g.pt"))
    got = loaded(obs, v0, 8)
    assert got.shape == (4, 8, 68, 2)
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_export_leaves_the_generator_usable(variant):
    # regression: export used to deepcopy + remove parametrizations, which deleted the ``weight``
    # property from torch's parametrized class shared with the original ("'ParametrizedLinear'
    # object has no attribute 'weight'" on the next generate)
    g = build_generator(tiny(variant))
    g.train()
    g(seqs(4, 5), 3)
    obs, v0 = seqs(4, 2), 0.01 * torch.randn(4, 68, 2)
    before = g.generate(obs, 6, init_vel=v0).future
    parametrized = [m for m in g.modules() if parametrize.is_parametrized(m)]
    assert (len(parametrized) > 0) == (variant == "rnn")  # the RNN's deep output is spectrally normalised
    exported = g.export_module()
    assert not any(parametrize.is_parametrized(m) for m in exported.modules())
    assert all(parametrize.is_parametrized(m) for m in parametrized)
    after = g.generate(obs, 6, init_vel=v0).future
    assert torch.equal(before, after)
    assert torch.allclose(exported(obs, v0, 6), before, atol=1e-6)
    out = g(seqs(4, 5), 3)  # training still works, and a second export too
    out.future.sum().backward()
    assert torch.allclose(g.export_module()(obs, v0, 6), g.generate(obs, 6, init_vel=v0).future, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_generator_velocity_input_is_scaled(variant):
    g = build_generator(tiny(variant, **{"model.vel_scale": 4.0}))
    seen = []
    target = g.core.cell if variant == "rnn" else g.core.embed
    handle = target.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    obs, v0 = seqs(4, 5), 0.01 * torch.randn(4, 68, 2)
    g.generate(obs, 2, init_vel=v0)  # the RNN's training pass calls the cell's weights, not the module
    handle.remove()
    x = obs.reshape(4, 5, 136)
    if variant == "rnn":  # one call per step: [pos | 4 * vel | BP(h)]
        vel = torch.stack([s[:, 136:272] for s in seen[:5]], 1)
        pos = torch.stack([s[:, :136] for s in seen[:5]], 1)
    else:  # the observed frames in one causal pass: [pos | 4 * vel]
        vel, pos = seen[0][..., 136:], seen[0][..., :136]
    assert torch.allclose(pos, x)
    assert torch.allclose(vel[:, 1:], 4.0 * (x[:, 1:] - x[:, :-1]), atol=1e-6)
    assert torch.allclose(vel[:, 0], 4.0 * v0.reshape(4, 136), atol=1e-6)


def test_generate_has_no_side_effects():
    g = build_generator(tiny("rnn"))
    g.train()
    state = {k: v.clone() for k, v in g.state_dict().items()}
    a = g.generate(seqs(2, 2), 4).future
    b = g.generate(seqs(2, 2), 4).future
    assert torch.equal(a, b) and g.training
    assert all(torch.equal(state[k], v) for k, v in g.state_dict().items())


# ------------------------------------------------------------------ baselines and ablations
SWITCHES = [
    {},
    {"model.delta": True},
    {"loss.adversarial": False},
    {"model.joint_d": False},
    {"model.pair_g": False},
    {"windows.single_scale": True},
    {"windows.starts": "grid", "windows.family": "fixed", "windows.scales": [5, 10, 20]},
    {"windows.family": "texp", "loss.reco": 1e-3},
    {"model.d_form": "rnn"},
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
def test_switch_trains_one_step(variant, switch):
    from suhmo import losses, objectives

    over = {"model.variant": variant, "data.seq_len": 20, "windows.tau_max": 20, **switch}
    cfg = make_config("tiny", overrides=over)
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3)
    O, S = cfg.data.obs_len, cfg.data.seq_len
    real = 0.5 + 0.05 * torch.randn(4, O + S, 68, 2)
    plan = WindowSampler(cfg.windows, S).plan(num_feature_frames(O + S), torch.Generator().manual_seed(0))
    out = G(real[:, :O], S)
    fake = torch.cat([real[:, :O], out.future], 1)
    d_before = [p.detach().clone() for p in D.parameters()]
    if objectives.needs_discriminator(cfg):
        ld, dlogs = objectives.d_step_loss(D, real, fake, plan, cfg)
        opt_d.zero_grad()
        ld.backward()
        opt_d.step()
        assert torch.isfinite(ld) and "d_loss" in dlogs
        assert any(not torch.equal(a, b) for a, b in zip(d_before, D.parameters()))
    g_before = [p.detach().clone() for p in G.parameters()]
    lg, glogs = objectives.g_step_loss(D, fake, real, out, plan, cfg, losses.lambda_at(cfg.loss, 0))
    opt_g.zero_grad()
    lg.backward()
    assert all(p.grad is None for p in D.parameters() if not objectives.needs_discriminator(cfg))
    opt_g.step()
    assert torch.isfinite(lg)
    assert any(not torch.equal(a, b) for a, b in zip(g_before, G.parameters()))
    assert ("g_adv_seq" in glogs) == objectives.needs_discriminator(cfg)


# ------------------------------------------------------------------ fused window LSTM (RNN sequence D)
def _plan(groups):
    from suhmo.models import WindowPlan

    return WindowPlan([(tau, torch.tensor(starts)) for tau, starts in groups])


def test_window_tracks_share_prefixes():
    from suhmo.models.discriminators import window_tracks

    plan = _plan([(3, [0, 5, 5]), (7, [0, 13]), (12, [5, 2])])
    tr = window_tracks(plan, 20)
    assert tr.starts == [2, 5, 0, 13] and tr.lengths == [12, 12, 7, 7]
    assert tr.active == [4] * 7 + [2] * 5 and tr.steps == 38  # 7 windows, 3 + 3 + 3 + 7 + 7 + 12 + 12 = 47 steps alone
    assert sorted(w for e in tr.ends for w, _ in e) == list(range(7))
    assert (1, 1) in tr.ends[2] and (2, 1) in tr.ends[2]  # both (3, 5) windows read track 1 (start 5) at step 2
    with pytest.raises(ValueError, match="leaves"):
        window_tracks(_plan([(7, [14])]), 20)


def test_used_frames_moves_windows_onto_covered_frames():
    from suhmo.models.discriminators import used_frames

    frames, moved = used_frames(_plan([(3, [1, 9]), (4, [9, 15]), (2, [17])]), 20)
    assert frames.tolist() == [1, 2, 3, 9, 10, 11, 12, 15, 16, 17, 18]
    assert [(tau, s.tolist()) for tau, s in moved] == [(3, [0, 3]), (4, [3, 7]), (2, [9])]
    for (tau, s), (_, s0) in zip(moved, _plan([(3, [1, 9]), (4, [9, 15]), (2, [17])])):
        for a, b in zip(s.tolist(), s0.tolist()):  # each window reads the same frames
            assert frames[a:a + tau].tolist() == list(range(b, b + tau))
    assert used_frames(_plan([(20, [0])]), 20)[0] is None  # all covered: nothing to select
    with pytest.raises(ValueError, match="leaves"):
        used_frames(_plan([(7, [14])]), 20)


@pytest.mark.parametrize("groups", [[(3, [0, 5, 5]), (7, [0, 13]), (12, [5, 2]), (1, [19])],
                                    [(3, [1, 9]), (4, [9, 15]), (2, [17])]])
def test_rnn_seq_discriminators_together_match_each_alone(groups):
    """D_s and D_s^j as two streams of one recurrence (what the losses run) against each one's
    own window_scores: the same values, every gradient within float rounding."""
    from suhmo.models.discriminators import RNNSeqDiscriminator, rnn_window_scores_together

    torch.manual_seed(0)
    nets = [RNNSeqDiscriminator(16).eval(), RNNSeqDiscriminator(16, joint=True).eval()]  # eval: fixed sigma(W)
    feats = torch.randn(4, 20, FEATURE_DIM, requires_grad=True)
    plan = _plan(groups)
    together = rnn_window_scores_together(nets, feats, plan)
    alone = [net.window_scores(feats, plan) for net in nets]
    weights = [torch.randn_like(a) for a in alone]
    inputs = [feats] + [p for net in nets for p in net.parameters()]
    g_together = torch.autograd.grad(sum((t * w).sum() for t, w in zip(together, weights)), inputs)
    g_alone = torch.autograd.grad(sum((a * w).sum() for a, w in zip(alone, weights)), inputs)
    for t, a in zip(together, alone):
        assert t.shape == a.shape and torch.allclose(t, a, atol=1e-6)
    for t, a in zip(g_together, g_alone):
        assert torch.allclose(t, a, rtol=1e-5, atol=1e-6), (t - a).abs().max()
    assert rnn_window_scores_together(nets[:1], feats, plan) is None  # one net: its own call
    assert rnn_window_scores_together([nets[0], RNNSeqDiscriminator(8)], feats, plan) is None  # widths differ


@pytest.mark.parametrize("groups", [[(3, [0, 5, 5]), (7, [0, 13]), (12, [5, 2]), (1, [19])],  # every frame
                                    [(3, [1, 9]), (4, [9, 15]), (2, [17])]])  # frames 0, 4-8, 13-14, 19 unused
@pytest.mark.parametrize("form", ["rnn", "transformer"])
@pytest.mark.parametrize("joint", [False, True])
def test_window_scores_match_per_window_forward(joint, form, groups):
    """RNN: one recurrence over the plan (only the covered frames projected) vs nn.LSTM per
    window batch; Transformer: frames embedded once vs each window embedded; values and every
    gradient agree."""
    from suhmo.models.discriminators import RNNSeqDiscriminator, TransformerSeqDiscriminator
    from suhmo.models.windows import window_batch

    torch.manual_seed(0)
    net = (RNNSeqDiscriminator(16, joint=joint) if form == "rnn"
           else TransformerSeqDiscriminator(8, heads=2, blocks=2, ff=16, joint=joint)).eval()
    feats = torch.randn(4, 20, FEATURE_DIM, requires_grad=True)
    plan = _plan(groups)
    fused = net.window_scores(feats, plan)
    ref = torch.cat([net(window_batch(feats, t, s)).reshape(len(s), -1) for t, s in plan])
    assert fused.shape == (plan.num_windows(), 2 if joint else 4)
    assert torch.allclose(fused, ref, atol=1e-5)
    weights = torch.randn_like(ref)  # an arbitrary upstream gradient
    inputs = [feats] + list(net.parameters())
    g_fused = torch.autograd.grad((fused * weights).sum(), inputs)
    g_ref = torch.autograd.grad((ref * weights).sum(), inputs)
    for a, b in zip(g_fused, g_ref):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
