"""The semantic motion space (model.space), the generator's noise inputs (model.noise_g) and
mixing the synthetic speakers into real data (data.synth_mix)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from suhmo.config import ConfigError, make_config
from suhmo.models import build_generator
from suhmo.models.space import LandmarkSpace, SemanticSpace

from test_train import split  # noqa: F401 - the tiny synthetic train/eval split (fixture)
from test_train import tiny_cfg as _train_tiny_cfg


def tiny_cfg(**over):
    """The trainer tests' tiny config, 4 iterations evaluated every 2."""
    return _train_tiny_cfg(**{"train.iterations": 4, "train.eval_every": 2, **over})


def fitted_generator(split, **over):
    from suhmo.train import fit_space

    cfg = tiny_cfg(**{"model.space": "semantic", **over})
    g = build_generator(cfg)
    fit_space(g, split[0], cfg)
    return g, cfg


def eye_distance(x: torch.Tensor) -> torch.Tensor:
    """Outer eye corners 36 and 45 (iBUG): the yardstick of the detector's error (data/README.md)."""
    return (x[..., 36, :] - x[..., 45, :]).norm(dim=-1)


def test_decoder_round_trips_held_out_synthetic_frames(split):
    g, _ = fitted_generator(split)
    x = torch.as_tensor(np.concatenate(split[1].clips)[::5])
    rel = g.space.round_trip_error(x) / eye_distance(x)
    assert float(rel.median()) < 0.04  # the detector's own error on real clips is 4 % of this distance


@pytest.mark.realdata
def test_decoder_round_trips_real_frames_of_unseen_persons_within_detector_noise(dev_data):
    from suhmo.data import load_dataset
    from suhmo.data import SPLIT_SEED
    from suhmo.train import fit_space

    cfg = make_config("small", overrides={"data.path": str(dev_data), "model.space": "semantic"})
    train, test = load_dataset(cfg).split_by_person(cfg.data.test_fraction, SPLIT_SEED)
    g = build_generator(cfg)
    fit_space(g, train, cfg)
    x = torch.as_tensor(np.concatenate(test.clips))
    rel = g.space.round_trip_error(x) / eye_distance(x)
    # MediaPipe vs dlib on these clips: 4 % of the outer-eye-corner distance (data/README.md)
    assert float(rel.median()) < 0.04 and float(rel.quantile(0.9)) < 0.06


def test_fit_returns_the_encoded_windows(split):
    """SemanticSpace.fit hands back encode(windows) from the raw states it computed (fit_space
    feeds them to the reversion rates): bit for bit what a second encode gives."""
    from suhmo.data import BatchSampler
    from suhmo.data.windows import hflip

    cfg = tiny_cfg(**{"model.space": "semantic", "model.semantic_k": 6})
    frames = np.concatenate(split[0].clips).astype(np.float32)
    windows = BatchSampler(split[0], cfg, seed=3, batch_size=64).next()
    space = SemanticSpace(6)
    z = space.fit(np.concatenate([frames, hflip(frames)]), windows, cfg.model.vel_scale)
    assert z.shape == (64, windows.shape[1], space.dim)
    assert torch.equal(z, space.encode(torch.as_tensor(windows)))


def test_state_separates_pose_from_shape(split):
    g, _ = fitted_generator(split)
    s = g.space
    x = torch.as_tensor(split[1].clips[0][:10])
    z = s.encode(x)
    moved = s.encode(x + torch.tensor([0.05, -0.02]))
    assert torch.allclose((moved - z)[:, 2:], torch.zeros_like(z[:, 2:]), atol=1e-4)  # translation: dims 0-1
    c = x.mean(-2, keepdim=True)
    bigger = s.encode(c + 1.2 * (x - c))
    raw_z, raw_b = z * s.scale + s.offset, bigger * s.scale + s.offset
    assert torch.allclose(raw_b[:, 2] - raw_z[:, 2], torch.full((10,), float(np.log(1.2))), atol=1e-5)
    assert torch.allclose(raw_b[:, 3:], raw_z[:, 3:], atol=1e-4)
    th = torch.tensor(0.2)
    rot = torch.stack([torch.cos(th) * (x - c)[..., 0] - torch.sin(th) * (x - c)[..., 1],
                       torch.sin(th) * (x - c)[..., 0] + torch.cos(th) * (x - c)[..., 1]], -1) + c
    raw_r = s.encode(rot) * s.scale + s.offset
    assert torch.allclose(raw_r[:, 3] - raw_z[:, 3], torch.full((10,), 0.2), atol=1e-4)  # roll
    assert torch.allclose(raw_r[:, 4:], raw_z[:, 4:], atol=1e-4)


def test_decoded_faces_are_fixed_points_of_the_map(split):
    g, _ = fitted_generator(split)
    s = g.space
    z = s.encode(torch.as_tensor(np.concatenate(split[1].clips)[::7]))
    face = s.decode(z)
    # a decoded face re-encodes to itself up to the PCA's off-tangent part (< 1 % of the face width)
    assert torch.allclose(s.decode(s.encode(face)), face, atol=5e-3)
    z2 = s.encode(face)
    assert torch.allclose(z2[:, [0, 1, 3]], z[:, [0, 1, 3]], atol=1e-4)  # translation and roll exactly
    assert torch.allclose(z2, z, atol=0.1)  # scale and shape up to the off-tangent part of the PCA


def test_state_velocities_have_the_same_spread_in_every_dimension(split):
    g, cfg = fitted_generator(split)
    from suhmo.data import BatchSampler

    w = torch.as_tensor(BatchSampler(split[0], cfg, seed=3, batch_size=256).next())
    dz = g.space.encode(w).diff(dim=1).reshape(-1, g.space.dim).std(0) * cfg.model.vel_scale
    assert torch.all((dz > 0.7) & (dz < 1.4)), dz


def test_semantic_space_needs_a_fit_and_config_is_validated():
    with pytest.raises(ConfigError, match="model.space"):
        tiny_cfg(**{"model.space": "pose"})
    with pytest.raises(ConfigError, match="semantic_k"):
        tiny_cfg(**{"model.semantic_k": 0})
    with pytest.raises(ConfigError, match="g_centred"):
        tiny_cfg(**{"model.space": "semantic", "model.g_centred": True})
    with pytest.raises(ConfigError, match="noise_g"):
        tiny_cfg(**{"model.noise_g": -1})
    with pytest.raises(ConfigError, match="synth_mix"):
        tiny_cfg(**{"data.synth_mix": 0.5})  # the data is already synthetic
    with pytest.raises(ConfigError, match="synth_mix"):
        tiny_cfg(**{"data.path": "x.npz", "data.synth_mix": 1.5})


def test_landmark_space_is_the_identity():
    s = LandmarkSpace()
    x = torch.rand(3, 5, 68, 2)
    assert torch.equal(s.decode(s.encode(x)), x) and s.encode(x).shape == (3, 5, 136)
    assert not list(s.buffers())  # landmark generators keep the state dict of old checkpoints


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("variant", ["rnn", "transformer"])
@pytest.mark.parametrize("space,noise,revert", [("landmarks", 0, False), ("landmarks", 3, True),
                                                ("semantic", 0, False), ("semantic", 3, True),
                                                ("pose3d", 3, True)])
def test_exported_torchscript_agrees_with_the_checkpoint(split, tmp_path, variant, space, noise, revert):
    from suhmo.train import fit_space

    cfg = tiny_cfg(**{"model.variant": variant, "model.space": space, "model.noise_g": noise,
                      "model.revert": revert})
    g = build_generator(cfg)
    fit_space(g, split[0], cfg)
    g.train()
    g(torch.as_tensor(np.stack([c[:5] for c in split[0].clips[:4]])), 3)  # spectral-norm state moves
    obs = torch.as_tensor(np.stack([c[:2] for c in split[1].clips[:2]] * 2))
    v0 = 0.01 * torch.randn(4, 68, 2)
    torch.manual_seed(5)
    expected = g.generate(obs, 12, init_vel=v0).future
    path = tmp_path / "g.pt"
    torch.jit.save(torch.jit.script(g.export_module()), str(path))
    torch.manual_seed(5)
    got = torch.jit.load(str(path))(obs, v0, 12)
    assert got.shape == (4, 12, 68, 2)
    assert torch.allclose(got, expected, atol=1e-5)


def test_training_in_the_semantic_space_keeps_the_basis_in_checkpoints(split, tmp_path):
    from suhmo.generate import load_model, sample
    from suhmo.train import Trainer, motion_stats_metrics

    cfg = tiny_cfg(**{"model.space": "semantic", "model.noise_g": 4})
    tr, ev = split
    t = Trainer(cfg, tmp_path / "run", train_set=tr, eval_set=ev, metrics_fn=motion_stats_metrics(cfg, ev))
    basis = t.G.space.basis.clone()
    assert bool(t.G.space.fitted) and basis.abs().sum() > 0
    t.fit()
    assert torch.equal(t.G.space.basis, basis)  # fixed: buffers, not trained
    G, _ = load_model(tmp_path / "run" / "last.pt")
    assert torch.equal(G.space.basis, basis)
    refs = np.stack([ev.clips[0][0]] * 4).astype(np.float32)
    a, b = sample(G, refs, 20, seed=1), sample(G, refs, 20, seed=1)
    assert np.array_equal(a, b) and np.isfinite(a).all()  # seeded noise: reproducible
    assert not np.allclose(a[0], a[2])  # noise: two samples of one reference differ
    resumed = Trainer(tiny_cfg(**{"model.space": "semantic", "model.noise_g": 4, "train.iterations": 6}),
                      tmp_path / "run", train_set=tr, eval_set=ev, metrics_fn=motion_stats_metrics(cfg, ev))
    assert resumed.step == 4 and torch.equal(resumed.G.space.basis, basis)


def test_mixed_batches_take_their_share_from_the_synthetic_speakers(split, tmp_path):
    from suhmo.data.loading import make_sampler
    from suhmo.data.windows import MixedSampler
    from suhmo.data.loading import load_synthetic

    tr = split[0]
    cfg = tiny_cfg(**{"data.path": "real.npz", "data.synth_mix": 0.5, "data.synth_mix_until": 2,
                      "train.batch_size": 8, "data.augment": False})
    synth = load_synthetic(tiny_cfg(**{"data.synth_seed": 9}))
    s = MixedSampler(tr, synth, cfg, seed=0)
    window = cfg.data.obs_len + cfg.data.seq_len
    real_flat = np.concatenate(tr.clips)

    def from_real(row):
        return any(np.array_equal(row[0], real_flat[i]) for i in range(len(real_flat)))

    b1 = s.next()
    assert b1.shape == (8, window, 68, 2)
    assert [from_real(r) for r in b1] == [False] * 4 + [True] * 4
    state = s.state_dict()
    b2 = s.next()
    s3 = MixedSampler(tr, synth, cfg, seed=0)
    s3.load_state_dict(state)
    assert np.array_equal(s3.next(), b2)  # resumes the stream
    assert all(from_real(r) for r in s.next())  # after synth_mix_until batches: real only
    plain = make_sampler(tr, tiny_cfg(**{"train.batch_size": 8}), seed=0)
    assert type(plain).__name__ == "BatchSampler"


def test_integrator_is_eq4_without_reversion_and_recovers_a_known_rate():
    from suhmo.models.step import Integrator

    pos, vel, x0 = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    plain = Integrator(6, revert=False)
    assert torch.equal(plain(pos, vel, x0), pos + vel) and not list(plain.state_dict())
    # an Ornstein-Uhlenbeck walk about its start with rate 0.05 (dims 0-2) and 0.2 (dims 3-5)
    g = torch.Generator().manual_seed(0)
    k = torch.tensor([0.05] * 3 + [0.2] * 3)
    z = [torch.zeros(4000, 6)]
    for _ in range(40):
        z.append(z[-1] - k * z[-1] + 0.1 * torch.randn(4000, 6, generator=g))
    rev = Integrator(6, revert=True)
    rev.fit_rates(torch.stack(z, 1))
    assert torch.allclose(torch.sigmoid(rev.logit), k, atol=0.02)
    x = rev(pos, vel, x0)
    assert torch.allclose(x, pos + vel - torch.sigmoid(rev.logit) * (pos - x0))


def test_reversion_fit_over_a_lag_sees_through_momentum():
    """A walk with momentum (v_t = 0.85 v_{t-1} + noise) that reverts at 0.1 per frame: the
    one-step fit puts its rate at the floor, the fit over 10 frames finds a clear pull."""
    from suhmo.models.step import Integrator

    g = torch.Generator().manual_seed(1)
    z, v = [torch.zeros(3000, 2)], torch.zeros(3000, 2)
    for _ in range(68):
        v = 0.85 * v + 0.1 * torch.randn(3000, 2, generator=g)
        z.append(z[-1] + v - 0.1 * z[-1])
    rates = {}
    for lag in (1, 10):
        rev = Integrator(2, revert=True)
        rev.fit_rates(torch.stack(z, 1), lag=lag)
        rates[lag] = torch.sigmoid(rev.logit).detach()
    assert torch.all(rates[1] < 0.002) and torch.all(rates[10] > 0.03), rates


def test_discriminators_can_see_the_semantic_state(split, tmp_path):
    """model.d_semantic: D's features end with G's semantic state and its scaled velocity, so an
    expression that moves a few landmarks by 1 % of the face radius changes D's inputs by order
    one; a tiny training runs with it and the config refuses it without a semantic space."""
    from suhmo import losses
    from suhmo.models.layers import feature_dim
    from suhmo.train import Trainer, motion_stats_metrics

    g, cfg = fitted_generator(split, **{"model.d_semantic": True})
    seq = torch.as_tensor(np.stack([c[:12] for c in split[0].clips[:4]]))
    f = losses.sequence_features(seq, cfg.model, space=g.space)
    k = g.space.dim
    assert f.shape == (4, 10, feature_dim(cfg.model)) and feature_dim(cfg.model) == 410 + 2 * k
    z = g.space.encode(seq)
    assert torch.allclose(f[..., -2 * k:-k], z[:, 2:])
    assert torch.allclose(f[..., -k:], cfg.model.vel_scale * z.diff(dim=1)[:, 1:], atol=1e-5)
    # an expression: the mouth (landmarks 48-67) opens by 1 % of the face radius
    radius = (seq - seq.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()[..., None]
    moved = seq.clone()
    moved[..., 57:60, 1] += 0.01 * radius
    d_sem = (losses.sequence_features(moved, cfg.model, space=g.space) - f)[..., -2 * k:-k].abs().max()
    d_pos = (losses.sequence_features(moved, cfg.model, space=g.space) - f)[..., :136].abs().max()
    assert d_sem > 10 * d_pos
    with pytest.raises(ValueError, match="space"):
        losses.sequence_features(seq, cfg.model)
    with pytest.raises(ConfigError, match="d_semantic"):
        tiny_cfg(**{"model.d_semantic": True})  # landmark space
    tr, ev = split
    t = Trainer(cfg, tmp_path / "run", train_set=tr, eval_set=ev, metrics_fn=motion_stats_metrics(cfg, ev))
    metrics = t.fit()
    assert t.step == cfg.train.iterations and np.isfinite(metrics["loss_d"]) and np.isfinite(metrics["loss_g"])


def test_discriminators_can_see_the_state_beside_the_reference(split, tmp_path):
    """model.d_anchor: D's features end with each frame's state relative to the sequence's first
    frame, so a face whose shape slides away from the reference shows in every later frame's
    features, by as much as it slid, while D_F's other inputs of that frame are unchanged by
    where the sequence started; both feature paths agree (kernel and autograd); a tiny training
    runs with it, and the config refuses it without model.d_semantic."""
    from suhmo import losses
    from suhmo.models.layers import feature_dim
    from suhmo.train import Trainer, motion_stats_metrics

    g, cfg = fitted_generator(split, **{"model.d_semantic": True, "model.d_anchor": True})
    seq = torch.as_tensor(np.stack([c[:12] for c in split[0].clips[:4]]))
    f = losses.sequence_features(seq, cfg.model, space=g.space)
    k = g.space.dim
    assert f.shape == (4, 10, feature_dim(cfg.model)) and feature_dim(cfg.model) == 410 + 3 * k
    z = g.space.encode(seq)
    assert torch.allclose(f[..., -k:], z[:, 2:] - z[:, :1])
    assert torch.allclose(f[..., -3 * k:-2 * k], z[:, 2:])  # d_semantic's parts, unchanged before it
    # the autograd path (motion given) builds the same features
    assert torch.allclose(losses.sequence_features(seq, cfg.model, motion=losses.motion_features(seq), space=g.space), f,
                          atol=1e-6)
    # another start: frame 0 moved; the later frames' own features are the same, their anchored part is not
    other = seq.clone()
    other[:, 0] = seq[:, 0] + 0.02 * torch.randn(4, 68, 2)
    f2 = losses.sequence_features(other, cfg.model, space=g.space)
    assert torch.allclose(f2[:, 1:, :-k], f[:, 1:, :-k]) and (f2[..., -k:] - f[..., -k:]).abs().max() > 0.1
    with pytest.raises(ConfigError, match="d_anchor"):
        tiny_cfg(**{"model.space": "semantic", "model.d_anchor": True})
    tr, ev = split
    t = Trainer(cfg, tmp_path / "run", train_set=tr, eval_set=ev, metrics_fn=motion_stats_metrics(cfg, ev))
    metrics = t.fit()
    assert t.step == cfg.train.iterations and np.isfinite(metrics["loss_d"]) and np.isfinite(metrics["loss_g"])


def test_correlated_noise_inputs_are_a_stationary_ar1_and_script_alike():
    """model.noise_rho: the RNN's noise inputs follow n_t = rho n_{t-1} + sqrt(1 - rho^2) e_t:
    unit variance at every step and lag-1 correlation rho; rho = 0 is the fresh noise per step of
    before (same random stream); the scripted core draws the same sequence."""
    from suhmo.models.rnn import RNNCore

    seen = []
    for rho in (0.0, 0.9):
        core = RNNCore(8, 8, pair=False, delta=False, spectral=False, frame_dim=6, noise=3, rho=rho)
        got = []
        hook = core.cell.register_forward_pre_hook(lambda m, inp: got.append(inp[0][:, -3:].detach().clone()))
        torch.manual_seed(0)  # the generation loop (use_buffers), which calls the cell module
        out, _ = core(torch.zeros(4000, 1, 6), torch.zeros(4000, 6), 30, True)
        hook.remove()
        n = torch.stack(got, 1)  # [B, T, 3]
        assert torch.allclose(n.var((0, 2)), torch.ones(n.shape[1]), atol=0.06)  # stationary, unit variance
        lag1 = (n[:, 1:] * n[:, :-1]).mean()
        assert abs(float(lag1) - rho) < 0.03, (rho, float(lag1))
        seen.append(n[:, 0])
        torch.manual_seed(0)
        scripted, _ = torch.jit.script(core)(torch.zeros(4000, 1, 6), torch.zeros(4000, 6), 30, True)
        assert torch.allclose(out, scripted, atol=1e-6)
        torch.manual_seed(0)  # the training pass (RNNCore.reference, joined) draws the same noise
        assert torch.allclose(core(torch.zeros(4000, 1, 6), torch.zeros(4000, 6), 30, False)[0], out, atol=1e-5)
    assert torch.equal(seen[0], seen[1])  # the first step's draw is the same stream
    with pytest.raises(ConfigError, match="noise_rho"):
        tiny_cfg(**{"model.noise_rho": 0.5})  # no noise inputs
    with pytest.raises(ConfigError, match="noise_rho"):
        tiny_cfg(**{"model.noise_rho": 0.5, "model.noise_g": 2, "model.variant": "transformer"})
    with pytest.raises(ConfigError, match="noise_rho"):
        tiny_cfg(**{"model.noise_rho": 1.0, "model.noise_g": 2})


def test_semantic_encoding_equals_rotate_then_project(split):
    """SemanticSpace.raw forms the rotation and the projection as one product with
    [m | m_perp | basis | basis_perp]: the same state as rotating the unit shape by th and
    projecting it, within float rounding, values and gradients."""
    from suhmo.geometry import centre_scale_t, rotate_t

    g, _ = fitted_generator(split, **{"model.semantic_k": 6})
    s = g.space

    def rotate_then_project(x):
        c, sc, xn = centre_scale_t(x)
        m = s.mean_shape
        dot = (xn * m).sum((-1, -2))
        cross = (xn[..., 0] * m[..., 1] - xn[..., 1] * m[..., 0]).sum(-1)
        th = torch.atan2(cross, dot)
        coef = (rotate_t(xn, th) - m).flatten(-2) @ s.basis
        return torch.cat([c, sc.log().unsqueeze(-1), (-th).unsqueeze(-1), coef], -1)

    x = torch.as_tensor(np.stack(split[1].clips[:2])[:, :20]) if len({len(c) for c in split[1].clips[:2]}) == 1 \
        else torch.as_tensor(split[1].clips[0][None, :20])
    x = (x + 0.01 * torch.randn_like(x)).requires_grad_(True)  # off the training shapes a little
    new, ref = s.raw(x), rotate_then_project(x)
    assert torch.allclose(new, ref, rtol=1e-5, atol=1e-5), (new - ref).abs().max()
    w = torch.randn_like(ref)
    (g_new,) = torch.autograd.grad((new * w).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    assert torch.allclose(g_new, g_ref, rtol=1e-4, atol=1e-4 * float(g_ref.abs().max())), (g_new - g_ref).abs().max()
