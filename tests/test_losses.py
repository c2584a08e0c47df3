"""Losses: hinge (eq. 12), G adversarial terms (eq. 8-10), L2 (eq. 11), lambda schedule, MLE."""

import math

import pytest
import torch

from suhmo import losses, objectives
from suhmo.config import ConfigError, LossConfig, make_config
from suhmo.models import WindowSampler, build_discriminator, build_generator, multiscale_score, num_feature_frames


def test_hinge_known_values():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, .5, 2] -> 5/6 ; relu(1 + fake) = [0, 1, 2] -> 1
    assert math.isclose(float(losses.hinge_d(real, fake)), 5 / 6 + 1, rel_tol=1e-6)
    assert float(losses.hinge_d(torch.full((3,), 1.5), torch.full((3,), -1.5))) == 0.0


@pytest.mark.parametrize("mode,step,expected", [
    ("none", 10**6, 1e-2), ("step", 99, 1e-2), ("step", 100, 1e-4), ("linear", 50, 0.5 * (1e-2 + 1e-4)),
    ("linear", 500, 1e-4), ("exp", 50, 1e-3), ("exp", 0, 1e-2),
])
def test_lambda_schedule(mode, step, expected):
    c = LossConfig(lam=1e-2, lam_final=1e-4, lam_decay=mode, lam_decay_iters=100)
    assert math.isclose(losses.lambda_at(c, step), expected, rel_tol=1e-9)


def test_lambda_exp_needs_positive_ends():
    with pytest.raises(ConfigError, match="lam_final"):
        losses.lambda_at(LossConfig(lam_decay="exp", lam_final=0.0), 1)


def setup(**over):
    cfg = make_config("tiny", overrides={"data.seq_len": 12, "windows.tau_max": 12, **over})
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    O, S = cfg.data.obs_len, cfg.data.seq_len
    real = 0.5 + 0.05 * torch.randn(4, O + S, 68, 2)
    out = G(real[:, :O], S)
    fake = torch.cat([real[:, :O], out.future], 1)
    plan = WindowSampler(cfg.windows, S).plan(num_feature_frames(O + S), torch.Generator().manual_seed(0))
    return cfg, G, D, real, out, fake, plan


def test_discriminator_loss_equals_separate_real_and_fake_passes():
    cfg, G, D, real, out, fake, plan = setup()
    D.eval()  # fixed spectral-norm state so that the two computations see the same weights
    loss, logs = objectives.d_step_loss(D, real, fake, plan, cfg)
    fr, ff = losses.sequence_features(real, cfg.model), losses.sequence_features(fake.detach(), cfg.model)
    S = cfg.data.seq_len
    ref = (losses.hinge_d(multiscale_score(D.seq, fr, plan), multiscale_score(D.seq, ff, plan))
           + losses.hinge_d(multiscale_score(D.joint, fr, plan), multiscale_score(D.joint, ff, plan))
           + losses.hinge_d(D.frame(fr[:, -S:]), D.frame(ff[:, -S:])))
    assert torch.allclose(loss, ref, atol=1e-5)
    assert set(logs) >= {"d_seq", "d_joint", "d_frame", "d_real_seq", "d_fake_frame", "d_loss"}
    loss.backward()
    assert all(p.grad is None for p in G.parameters()), "the D loss must not reach G"


def test_r1_penalty_on_the_frame_discriminator():
    """``loss.r1_frame``: gamma / 2 x mean |grad D_F|^2 at the real frames joins the D loss."""
    cfg, G, D, real, out, fake, plan = setup(**{"loss.r1_frame": 4.0})
    D.eval()
    loss, logs = objectives.d_step_loss(D, real, fake, plan, cfg)
    base, base_logs = objectives.d_step_loss(D, real, fake, plan, setup()[0])
    assert "d_r1_frame" in logs and "d_r1_frame" not in base_logs and logs["d_r1_frame"] > 0
    assert math.isclose(float(loss) - float(base), 2.0 * logs["d_r1_frame"], rel_tol=1e-4)
    # the penalty trains D_F (second-order gradient): D_F's gradients differ from the unpenalised ones
    grads = []
    for total in (loss, base):
        D.zero_grad()
        total.backward(retain_graph=True)
        grads.append([p.grad.clone() for p in D.frame.parameters()])
    assert any(not torch.allclose(a, b) for a, b in zip(*grads))
    # by hand: the squared input gradient of D_F's summed score over the real frames
    x = losses.sequence_features(real, cfg.model)[:, -cfg.data.seq_len:].detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D.frame(x).sum(), x)
    assert math.isclose(logs["d_r1_frame"], float(g.pow(2).sum(-1).mean()), rel_tol=1e-4)
    assert all(p.grad is None for p in G.parameters()), "the D loss must not reach G"


def test_generator_loss_reaches_g_not_d_and_weights_streams():
    cfg, G, D, real, out, fake, plan = setup(**{"loss.w_joint": 0.0, "loss.w_frame": 2.0})
    loss, logs = objectives.g_step_loss(D, fake, real, out, plan, cfg, lam=0.5)
    assert "g_adv_joint" not in logs and "g_adv_frame" in logs
    expected = logs["g_adv_seq"] + 2.0 * logs["g_adv_frame"] + 0.5 * logs["g_l2"]
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-5, abs_tol=1e-6)
    loss.backward()
    assert all(p.grad is None for p in D.parameters())
    assert all(p.requires_grad for p in D.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())


def test_l2_is_zero_on_the_truth_and_positive_otherwise():
    cfg, G, D, real, out, fake, plan = setup(**{"loss.adversarial": False, "loss.reco": 1.0})
    S = cfg.data.seq_len
    perfect = out._replace(future=real[:, -S:], recon=real[:, 1:cfg.data.obs_len])
    loss, logs = objectives.g_step_loss(None, real, real, perfect, plan, cfg, lam=1.0)
    assert float(loss.detach()) == 0.0 and logs["g_l2"] == 0.0 and logs["g_reco"] == 0.0
    shifted = real.clone()
    shifted[:, -1] += 0.1  # one frame 0.1 off in x and y: pos, vel and acc all change
    _, logs = objectives.g_step_loss(None, shifted, real, perfect, plan, cfg, lam=1.0)
    # last frame: pos error 0.02, vel error 0.02, acc error 0.02 (squared 2-D distances), over 3*S terms
    assert math.isclose(logs["g_l2"], 3 * 0.02 / (3 * S), rel_tol=1e-4)


def test_mle_baseline_needs_no_discriminator():
    cfg, G, D, real, out, fake, plan = setup(**{"loss.adversarial": False})
    assert not objectives.needs_discriminator(cfg)
    loss, logs = objectives.g_step_loss(None, fake, real, out, plan, cfg, lam=1e-2)
    assert not any(k.startswith("g_adv") for k in logs)
    assert math.isclose(float(loss.detach()), 1e-2 * logs["g_l2"], rel_tol=1e-6)


def test_motion_statistics_match_the_batch_not_the_sample():
    """loss.w_motion: zero when the batch moves as the real one does (even sample by sample
    differently), positive when it moves at half the speed, and its gradient speeds G up."""
    torch.manual_seed(0)
    B, T = 8, 30
    real = torch.cumsum(0.01 * torch.randn(B, T, 68, 2), 1) + 0.5
    perm = real[torch.randperm(B)]  # other samples, the same batch statistics
    assert float(losses.motion_stats_loss(perm, real, T - 1, 5)) < 1e-10
    slow = real[:, :1] + 0.5 * (real - real[:, :1])  # every displacement halved
    ms = losses.motion_stats_loss(slow, real, T - 1, 5)
    assert math.isclose(float(ms), math.log(0.25) ** 2, rel_tol=1e-4)  # both lags, every coordinate
    gain = torch.tensor(0.5, requires_grad=True)
    losses.motion_stats_loss(real[:, :1] + gain * (real - real[:, :1]), real, T - 1, 5).backward()
    assert float(gain.grad) < 0  # descending the loss makes the head move more
    # only the generated frames count: the observed ones may differ freely
    obs_changed = slow.clone()
    obs_changed[:, :5] = 0.0
    assert math.isclose(float(losses.motion_stats_loss(obs_changed, real, T - 6, 5)),
                        float(losses.motion_stats_loss(slow, real, T - 6, 5)), rel_tol=1e-6)


def test_motion_statistics_of_the_windows_see_how_much_windows_differ():
    """loss.motion_stat=window: matched on the distribution over windows of each window's log
    mean squared displacement (its mean and sd). Real heads here differ (log-normal activity per
    sample). A batch where one sample in eight carries all the motion passes the batch statistic
    (msd) and not this one; so does a batch where every sample moves at the same speed (the
    typical speed right, the spread between windows gone). Both are zero for the real batch's own
    samples, their gradients speed a slow head up, and ``both`` is the mean of the two terms."""
    torch.manual_seed(3)
    B, T = 64, 30
    activity = torch.exp(0.7 * torch.randn(B, 1, 1, 1))  # calm beside lively heads
    walk = torch.cumsum(0.01 * torch.randn(B, T, 68, 2), 1)
    real = 0.5 + activity * walk
    gain = torch.full((B, 1, 1, 1), 0.01)  # seven samples in eight almost still ...
    gain[::8] = (8 * (1 - 7 / 8 * 0.01 ** 2)) ** 0.5  # ... one in eight moves for all: mean gain^2 = 1
    few = 0.5 + gain * (real - 0.5)
    alike = 0.5 + torch.exp(torch.log(activity).mean()) * walk  # every sample at the typical activity
    ms = {k: float(losses.motion_stats_loss(few, real, T - 1, 5, stat=k)) for k in ("msd", "window", "both")}
    assert ms["window"] > 5.0 and ms["window"] > 10 * ms["msd"]
    assert math.isclose(ms["both"], (ms["msd"] + ms["window"]) / 2, rel_tol=1e-5)
    assert float(losses.motion_stats_loss(alike, real, T - 1, 5, stat="window")) > 0.5
    perm = real[torch.randperm(B)]
    for k in ("msd", "window", "both"):
        assert float(losses.motion_stats_loss(perm, real, T - 1, 5, stat=k)) < 1e-10
        gain = torch.tensor(0.5, requires_grad=True)
        losses.motion_stats_loss(0.5 + gain * (real - 0.5), real, T - 1, 5, stat=k).backward()
        assert float(gain.grad) < 0  # descending the loss makes the heads move more
    cfg = make_config("tiny", overrides={"loss.w_motion": 1.0, "loss.motion_stat": "window"})
    assert cfg.loss.motion_stat == "window"
    with pytest.raises(ConfigError, match="loss.motion_stat"):
        make_config("tiny", overrides={"loss.motion_stat": "median"})


def test_motion_statistics_long_lag_sees_a_state_that_walks_off():
    """loss.motion_lag_long: a batch with the real speed over 1 and 5 frames but twice the
    spread over 20 frames (slow wandering added) passes the two short lags almost unseen;
    the long lag sees it."""
    torch.manual_seed(1)
    B, T = 64, 41
    jitter = 0.01 * torch.randn(B, T, 68, 2)
    real = 0.5 + jitter
    walk = torch.linspace(0, 1, T).view(1, T, 1, 1) * 0.1 * torch.randn(B, 1, 68, 2)  # slow, far
    wander = real[torch.randperm(B)] + walk
    short = float(losses.motion_stats_loss(wander, real, T - 1, 5))
    long = float(losses.motion_stats_loss(wander, real, T - 1, 5, lag_long=20))
    assert short < 0.2 * long  # mean over 2 and over 3 lags: the long one dominates
    assert float(losses.motion_stats_loss(real[torch.randperm(B)], real, T - 1, 5, lag_long=20)) < 0.05
    with pytest.raises(ConfigError, match="loss.motion_lag_long=5"):
        make_config("tiny", overrides={"loss.motion_lag_long": 5})
    with pytest.raises(ConfigError, match="shorter than the training windows"):
        make_config("tiny", overrides={"loss.motion_lag_long": 400})


def test_motion_bias_sees_a_batch_that_moves_one_way_together():
    """loss.w_motion_mean: a batch whose samples each move as real ones do costs nothing (other
    samples, the same mean), nor does its second moment see a push that every sample shares
    when their own motion dominates; the first moment does, and its gradient removes the push."""
    torch.manual_seed(2)
    B, T = 64, 41
    real = torch.cumsum(0.01 * torch.randn(B, T, 68, 2), 1) + 0.5
    assert float(losses.motion_bias_loss(real[torch.randperm(B)], real, T - 1)) < 1e-10
    push = torch.linspace(0, 1, T).view(1, T, 1, 1) * 0.02 * torch.randn(1, 1, 68, 2)  # the same for all
    pushed = real[torch.randperm(B)] + push
    bias = float(losses.motion_bias_loss(pushed, real, T - 1))
    assert bias > 0.05
    assert bias > 3 * float(losses.motion_stats_loss(pushed, real, T - 1, 5))
    gain = torch.tensor(1.0, requires_grad=True)
    losses.motion_bias_loss(real[torch.randperm(B)] + gain * push, real, T - 1).backward()
    assert float(gain.grad) > 0  # descending the loss shrinks the shared push
    # in units of the real states' spread (loss.motion_mean_scale=state): the same zero and push
    assert float(losses.motion_bias_loss(real[torch.randperm(B)], real, T - 1, scale="state")) < 1e-10
    assert float(losses.motion_bias_loss(pushed, real, T - 1, scale="state")) > 0.01
    # only the generated span counts: a shared offset of the observed frames alone costs nothing
    obs_moved = real.clone()
    obs_moved[:, :5] += 0.05
    assert float(losses.motion_bias_loss(obs_moved, real, T - 6)) < 1e-10


def test_motion_spread_sees_heads_that_slide_to_the_mean_pose():
    """loss.w_motion_spread: real heads from different start poses keep their distance (they
    move about their own start); a batch that moves as fast but slides halfway to the batch's
    mean pose costs more than the real batch's own samples, the motion statistics hardly see it,
    and the gradient of the slide removes it. A shared push of every sample (the first moment's
    concern) leaves the spread and the regression on the start unchanged."""
    torch.manual_seed(4)
    B, T = 64, 41
    start = 0.5 + 0.05 * torch.randn(B, 1, 68, 2)  # different people and poses
    real = start + torch.cumsum(0.003 * torch.randn(B, T, 68, 2), 1) - 0.003 * torch.randn(B, 1, 68, 2)
    real[:, :1] = start
    perm_real = real.clone()
    assert float(losses.motion_spread_loss(perm_real, real, T - 1)) < 1e-10
    ramp = torch.linspace(0, 1, T).view(1, T, 1, 1)
    mean0 = start.mean(0, keepdim=True)

    def slid(a):
        return real - a * ramp * (start - mean0)  # each head moves towards the mean pose

    spread = float(losses.motion_spread_loss(slid(0.5), real, T - 1))
    assert spread > 0.05
    assert spread > 3 * float(losses.motion_stats_loss(slid(0.5), real, T - 1, 5))
    gain = torch.tensor(0.5, requires_grad=True)
    losses.motion_spread_loss(slid(gain), real, T - 1).backward()
    assert float(gain.grad) > 0  # descending the loss undoes the slide
    push = ramp * 0.02 * torch.randn(1, 1, 68, 2)
    assert float(losses.motion_spread_loss(real + push, real, T - 1)) < 1e-8


def test_motion_spread_term_is_weighted_into_the_generator_loss():
    cfg, G, D, real, out, fake, plan = setup(**{"loss.w_motion_spread": 0.5})
    loss, logs = objectives.g_step_loss(D, fake, real, out, plan, cfg, lam=0.5)
    expected = (logs["g_adv_seq"] + logs["g_adv_joint"] + logs["g_adv_frame"] + 0.5 * logs["g_l2"]
                + 0.5 * logs["g_motion_spread"])
    assert "g_motion" not in logs and "g_motion_mean" not in logs
    assert logs["g_motion_spread"] > 0 and math.isclose(float(loss.detach()), expected, rel_tol=1e-5, abs_tol=1e-6)
    with pytest.raises(ConfigError, match="loss.motion_dims=pose with model.space='landmarks'"):
        make_config("tiny", overrides={"loss.w_motion_spread": 1.0, "loss.motion_dims": "pose"})


def test_motion_bias_term_is_weighted_into_the_generator_loss():
    cfg, G, D, real, out, fake, plan = setup(**{"loss.w_motion_mean": 0.5})
    loss, logs = objectives.g_step_loss(D, fake, real, out, plan, cfg, lam=0.5)
    expected = (logs["g_adv_seq"] + logs["g_adv_joint"] + logs["g_adv_frame"] + 0.5 * logs["g_l2"]
                + 0.5 * logs["g_motion_mean"])
    assert "g_motion" not in logs
    assert logs["g_motion_mean"] > 0 and math.isclose(float(loss.detach()), expected, rel_tol=1e-5, abs_tol=1e-6)
    with pytest.raises(ConfigError, match="loss.motion_dims=pose with model.space='landmarks'"):
        make_config("tiny", overrides={"loss.w_motion_mean": 1.0, "loss.motion_dims": "pose"})


def test_motion_statistics_term_is_weighted_into_the_generator_loss():
    cfg, G, D, real, out, fake, plan = setup(**{"loss.w_motion": 0.25})
    loss, logs = objectives.g_step_loss(D, fake, real, out, plan, cfg, lam=0.5)
    expected = logs["g_adv_seq"] + logs["g_adv_joint"] + logs["g_adv_frame"] + 0.5 * logs["g_l2"] + 0.25 * logs["g_motion"]
    assert logs["g_motion"] > 0 and math.isclose(float(loss.detach()), expected, rel_tol=1e-5, abs_tol=1e-6)
    with pytest.raises(ConfigError, match="loss.motion_lag"):
        make_config("tiny", overrides={"loss.motion_lag": 1})
    with pytest.raises(ConfigError, match="loss.motion_dims=pose with model.space='landmarks'"):
        make_config("tiny", overrides={"loss.w_motion": 1.0, "loss.motion_dims": "pose"})


def test_motion_statistics_of_the_pose_alone():
    """loss.motion_dims=pose: a face whose expression freezes but whose head moves as the real
    one does costs nothing; all dimensions, it does."""
    from suhmo.models.space import SemanticSpace

    torch.manual_seed(0)
    cfg = make_config("tiny", overrides={"model.space": "semantic", "model.semantic_k": 4})
    space = SemanticSpace(cfg.model.semantic_k)
    real = torch.cumsum(0.004 * torch.randn(8, 30, 68, 2), 1) + 0.5
    space.fit(real[:, 0].numpy(), real.numpy(), cfg.model.vel_scale)
    z = space.encode(real)
    frozen_shape = space.decode(torch.cat([z[..., :4], z[:, :1, 4:].expand_as(z[..., 4:])], -1))
    assert float(losses.motion_stats_loss(frozen_shape, real, 29, 5, space, pose_only=True)) < 1e-6
    assert float(losses.motion_stats_loss(frozen_shape, real, 29, 5, space)) > 1.0


def _frame_inputs(D):
    """Record what D_F is given (its input is [..., 410] per frame)."""
    seen = []
    handle = D.frame.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    return seen, handle


def test_feature_scale_is_applied_to_real_and_fake_alike_and_not_to_l2():
    from suhmo.data import motion_features

    cfg, G, D, real, out, fake, plan = setup(**{"model.vel_scale": 3.0, "model.acc_scale": 7.0})
    S = cfg.data.seq_len
    scale = torch.tensor([1.0, 1.0, 3.0, 3.0, 7.0, 7.0])

    def expected(seq):  # [pos about the centroid | 3 vel | 7 acc | centroid - 0.5] of the last S feature frames
        f = motion_features(seq.detach()) * scale
        c = seq.detach()[:, 2:].mean(-2)
        f[..., :2] -= c.unsqueeze(-2)
        return torch.cat([f.reshape(seq.shape[0], -1, 408), c - 0.5], -1)[:, -S:]

    seen, handle = _frame_inputs(D)
    objectives.d_step_loss(D, real, fake, plan, cfg)
    objectives.g_step_loss(D, fake, real, out, plan, cfg, lam=1.0)
    handle.remove()
    d_in, g_in = seen  # D_F scores every feature frame; the losses keep the last S frames' scores
    d_in, g_in = d_in[:, -S:], g_in[:, -S:]
    assert torch.allclose(d_in[:4], expected(real), atol=1e-6)  # real half of the D step
    assert torch.allclose(d_in[4:], expected(fake), atol=1e-6)  # fake half of the D step
    assert torch.allclose(g_in, expected(fake), atol=1e-6)  # G step
    vel = d_in[:4, -1, :408].reshape(4, 68, 6)[..., 2:4]
    assert torch.allclose(vel, 3.0 * (real[:, -1] - real[:, -2]), atol=1e-6)
    # the sequence Ds see the same scaled features: the D loss matches a reference built on them
    feats = losses.sequence_features(real, cfg.model)
    assert torch.allclose(feats[:, -S:], expected(real), atol=1e-6)
    # L2 (eq. 11) stays in position units: independent of the scales
    cfg1, *_ = setup()
    l2 = objectives.g_step_loss(None, fake, real, out, plan, cfg, lam=1.0)[1]["g_l2"]
    l2_1 = objectives.g_step_loss(None, fake, real, out, plan, cfg1, lam=1.0)[1]["g_l2"]
    assert l2 == l2_1


def test_discriminator_features_are_invariant_to_translation_but_keep_the_centroid():
    """``model.d_centred``: a translated clip has the same shape/velocity features, only the
    appended centroid moves; with it off, the paper's raw input, whose positions move."""
    cfg, *_ = setup()
    seq = 0.3 + 0.4 * torch.rand(2, 8, 68, 2)
    shift = torch.tensor([0.05, -0.02])
    f, g = losses.sequence_features(seq, cfg.model), losses.sequence_features(seq + shift, cfg.model)
    assert f.shape == (2, 6, 410)
    torch.testing.assert_close(g[..., :408], f[..., :408], atol=1e-5, rtol=0)
    torch.testing.assert_close(g[..., 408:] - f[..., 408:], shift.expand(2, 6, 2), atol=1e-6, rtol=0)
    raw = setup(**{"model.d_centred": False})[0]
    f0, g0 = losses.sequence_features(seq, raw.model), losses.sequence_features(seq + shift, raw.model)
    assert f0.shape == (2, 6, 408)  # the paper's [pos | vel | acc], nothing appended
    pos0 = (g0 - f0).reshape(2, 6, 68, 6)
    torch.testing.assert_close(pos0[..., :2], shift.expand(2, 6, 68, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(pos0[..., 2:], torch.zeros(2, 6, 68, 4), atol=1e-5, rtol=0)


def test_the_discriminator_scores_and_the_losses_are_functions_of_scores():
    """Discriminator.forward returns each stream's raw scores; the D and G losses take scores and
    the loss section only: weights from loss.w_*, streams of weight 0 left out."""
    cfg, G, D, real, out, fake, plan = setup(**{"loss.w_joint": 0.0, "loss.w_frame": 2.0})
    D.eval()
    S = cfg.data.seq_len
    feats = losses.sequence_features(torch.cat([real, fake.detach()]), cfg.model)
    scores = D(feats, plan, S, losses.stream_weights(cfg.loss))
    assert list(scores) == ["seq", "frame"] and scores["seq"].shape == (8,) and scores["frame"].shape == (8, S)
    assert torch.allclose(scores["seq"], multiscale_score(D.seq, feats, plan), atol=1e-6)
    assert torch.equal(scores["frame"], D.frame(feats)[:, -S:])
    made = {"seq": torch.tensor([2.0, 0.5, -2.0, 0.0]), "frame": torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])}
    loss, logs = losses.discriminator_loss(made, 2, cfg.loss, torch.zeros(()))
    expect = losses.hinge_d(made["seq"][:2], made["seq"][2:]) + 2.0 * losses.hinge_d(made["frame"][:2], made["frame"][2:])
    assert torch.allclose(loss, expect) and set(logs) >= {"d_seq", "d_frame", "d_loss"}
    g, g_logs = losses.generator_loss({"seq": made["seq"][2:]}, fake, real, out, cfg.loss, lam=0.0)
    assert math.isclose(g_logs["g_adv_seq"], -float(made["seq"][2:].mean()), rel_tol=1e-6)
    assert math.isclose(float(g), g_logs["g_adv_seq"], rel_tol=1e-5)
