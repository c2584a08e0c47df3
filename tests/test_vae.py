"""The VAE baselines of Table 1 (ACTOR, HiT-DVAE): shapes, the Gaussian math, seeded noise,
causality, export, a short real training, resume, the objective registry and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from suhmo.config import ConfigError, make_config
from suhmo.models import build_generator
from suhmo.models.vae import kl_normal, reparameterise, sinusoid

VARIANTS = ["actor", "hitdvae"]
# 12-frame training windows (1 reference + 11 reconstructed frames), tiny networks
TINY = {"data.obs_len": 2, "data.seq_len": 10, "windows.tau_max": 10, "data.synth_clips": 8,
        "data.synth_seconds": 3.0, "train.iterations": 20, "train.eval_every": 10, "eval.samples": 4,
        "eval.frames": 24, "train.device": "cpu", "optim.lr_g": 1e-3}


def tiny_cfg(variant, **over):
    return make_config("tiny", overrides={**TINY, "model.variant": variant, **over})


def _poses(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = 0.3 + 0.4 * torch.rand(B, 1, 68, 2, generator=g)
    return base + 0.01 * torch.randn(B, T, 68, 2, generator=g).cumsum(1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_of_forward_generate_and_elbo(variant):
    G = build_generator(tiny_cfg(variant))
    obs = _poses(4, 3)
    out = G(obs, 7)
    assert out.future.shape == (4, 7, 68, 2) and out.recon.shape == (4, 2, 68, 2)
    gen = G.generate(obs[:, :1], 9)
    assert gen.future.shape == (4, 9, 68, 2) and gen.recon.shape == (4, 0, 68, 2)
    loss, logs = G.elbo(_poses(4, 12))
    assert loss.dim() == 0 and set(logs) == {"vae_recon", "vae_kl", "vae_elbo_loss"}
    loss.backward()
    assert all(p.grad is not None for p in G.parameters())


def test_kl_on_known_inputs():
    mu, logvar = torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.0, 2.0, -1.0])
    # KL(N(mu, s^2) || N(0, 1)) = (s^2 + mu^2 - 1 - log s^2) / 2
    expected = torch.tensor([0.5, 0.5 * (np.exp(2.0) - 1 - 2), 0.5 * (np.exp(-1.0) + 4 - 1 + 1)])
    assert torch.allclose(kl_normal(mu, logvar), expected.float(), atol=1e-6)
    assert torch.allclose(kl_normal(mu, logvar, mu, logvar), torch.zeros(3), atol=1e-7)
    mp, lp = torch.tensor([0.5, -1.0, 0.0]), torch.tensor([1.0, -0.5, 0.3])
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(mp, torch.exp(0.5 * lp))
    assert torch.allclose(kl_normal(mu, logvar, mp, lp), torch.distributions.kl_divergence(q, p), atol=1e-5)


def test_reparameterisation_and_noise_are_deterministic_under_a_seed():
    mu = torch.zeros(5, requires_grad=True)
    logvar = torch.full((5,), 2.0 * np.log(3.0), requires_grad=True)
    eps = torch.linspace(-1, 1, 5)
    z = reparameterise(mu, logvar, eps)
    assert torch.allclose(z, 3.0 * eps)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones(5)) and torch.allclose(logvar.grad, 0.5 * 3.0 * eps)
    for variant in VARIANTS:
        torch.manual_seed(0)
        G = build_generator(tiny_cfg(variant))
        seq, obs = _poses(4, 12), _poses(4, 1, seed=1)
        runs = []
        for seed in (7, 7, 8):
            torch.manual_seed(seed)
            loss, _ = G.elbo(seq)
            torch.manual_seed(seed)
            runs.append((float(loss.detach()), G.generate(obs, 6).future))
        assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1]), variant
        assert not torch.equal(runs[0][1], runs[2][1]), f"{variant}: the latent noise has no effect"


def test_sample_is_seeded_and_leaves_the_global_rng_alone():
    from suhmo.generate import sample

    G = build_generator(tiny_cfg("actor"))
    refs = _poses(3, 1)[:, 0].numpy()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = (sample(G, refs, 10, seed=s) for s in (4, 4, 5))
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_hitdvae_is_causal():
    """Output at frame t ignores the inputs after t: observed frames (teacher forcing) and noise."""
    torch.manual_seed(0)
    G = build_generator(tiny_cfg("hitdvae"))
    obs = _poses(2, 5)
    torch.manual_seed(3)
    ref = G.generate(obs, 4)
    ref_frames = torch.cat([ref.recon, ref.future], 1)  # predictions of frames 1..8
    for j in range(1, 5):  # perturb observed frame j: predictions of frames 1..j must not move
        bumped = obs.clone()
        bumped[:, j] += 0.05
        torch.manual_seed(3)
        out = G.generate(bumped, 4)
        frames = torch.cat([out.recon, out.future], 1)
        assert torch.equal(frames[:, :j], ref_frames[:, :j]), j
        assert not torch.allclose(frames[:, j:], ref_frames[:, j:]), j
    # the same through the gradients of the teacher-forced training pass with fixed noise
    x = _poses(1, 6).requires_grad_(True)
    eps = torch.randn(1, 5, G.core.latent)
    pred, _ = G.core._run(x.reshape(1, 6, 136), torch.zeros(1, 136), 5, eps, None)
    for t in range(5):  # pred[:, t] is frame t + 1, from frames 0..t
        (grad,) = torch.autograd.grad(pred[:, t].sum(), x, retain_graph=True)
        assert grad[:, t + 1:].abs().max() == 0 and grad[:, :t + 1].abs().max() > 0, t


def test_actor_frames_depend_only_on_the_reference_and_the_latent():
    torch.manual_seed(0)
    G = build_generator(tiny_cfg("actor"))
    obs = _poses(2, 3)
    bumped = obs.clone()
    bumped[:, 1:] += 0.1
    outs = []
    for o, n in ((obs, 6), (bumped, 6), (obs[:, :1], 8)):  # 8 decoded frames each time
        torch.manual_seed(5)
        g = G.generate(o, n)
        outs.append(torch.cat([g.recon, g.future], 1))
    assert torch.equal(outs[0], outs[1]) and torch.allclose(outs[0], outs[2], atol=1e-6)


def test_sinusoid_is_defined_beyond_the_training_length():
    enc = sinusoid(torch.arange(0, 200), 32)
    assert enc.shape == (200, 32) and torch.isfinite(enc).all()
    assert torch.allclose(enc[0, 1::2], torch.ones(16))


@pytest.mark.parametrize("variant", VARIANTS)
def test_short_training_reduces_the_elbo_and_generates_twice_the_length(tmp_path, variant):
    from suhmo.checkpoint import load_checkpoint
    from suhmo.generate import load_model, sample
    from suhmo.train import Trainer

    from suhmo.data import BatchSampler

    cfg = tiny_cfg(variant, **{"train.iterations": 40, "train.eval_every": 20, "optim.lr_g": 3e-4})
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.D is None and trainer.opt_d is None
    held = BatchSampler(trainer.train_set, cfg, seed=99)  # fixed real batches, scored with fixed noise
    batches = [torch.from_numpy(held.next()) for _ in range(16)]

    def elbo() -> float:
        torch.manual_seed(11)
        with torch.no_grad():
            return float(np.mean([float(trainer.G.elbo(b)[0]) for b in batches]))

    before = elbo()
    metrics = trainer.fit()
    after = elbo()
    assert after < 0.95 * before, (before, after)
    assert {"loss_g", "loss_vae_recon", "loss_vae_kl", "fd_clip40"} <= set(metrics)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["D"] == {} and ck["step"] == 40

    G, _ = load_model(tmp_path / "run" / "last.pt")
    train_len = cfg.data.obs_len + cfg.data.seq_len
    refs = np.stack([trainer.eval_set.clips[0][i] for i in (0, 5, 10)]).astype(np.float32)
    seqs = sample(G, refs, 2 * train_len, seed=0)
    assert seqs.shape == (3, 2 * train_len + 1, 68, 2) and np.isfinite(seqs).all()
    assert np.abs(np.diff(seqs, axis=1)).mean() > 0  # it moves
    assert np.abs(seqs[:, -1] - seqs[:, 0]).max() < 1.0  # and stays near the face


@pytest.mark.parametrize("variant", VARIANTS)
def test_export_equals_the_checkpoint(tmp_path, variant):
    from suhmo.data import test_partner
    from suhmo.generate import load_model
    from suhmo.train import Trainer, motion_stats_metrics

    cfg = tiny_cfg(variant, **{"train.iterations": 4, "train.eval_every": 4})
    t = Trainer(cfg, tmp_path / "run")
    t.metrics_fn = motion_stats_metrics(cfg, t.eval_set)
    t.fit()
    G, _ = load_model(tmp_path / "run" / "last.pt")
    scripted = torch.jit.script(G.export_module())
    scripted.save(str(tmp_path / "g.ts"))
    loaded = torch.jit.load(str(tmp_path / "g.ts"))
    refs = np.stack([c[0] for c in t.eval_set.clips[:2]]).astype(np.float32)
    pairs = np.stack([refs, test_partner(refs, np.random.default_rng(0))], 1).reshape(-1, 68, 2)
    obs = torch.from_numpy(pairs[:, None].copy())
    vel = torch.full((4, 68, 2), 0.004)
    torch.manual_seed(2)
    want = G.generate(obs, 30, init_vel=vel).future
    torch.manual_seed(2)
    got = loaded(obs, vel, 30)
    assert got.shape == (4, 30, 68, 2) and torch.equal(want, got)


def test_vae_training_resumes_bit_identically(tmp_path):
    from suhmo.train import Trainer, motion_stats_metrics

    cfg = tiny_cfg("hitdvae")

    def run(out, iters):
        c = make_config("tiny", overrides={**TINY, "model.variant": "hitdvae", "train.iterations": iters})
        t = Trainer(c, out)
        t.metrics_fn = motion_stats_metrics(c, t.eval_set)
        t.fit()
        return t

    straight = run(tmp_path / "a", 20)
    run(tmp_path / "b", 10)
    resumed = run(tmp_path / "b", 20)
    assert resumed.step == straight.step == cfg.train.iterations
    for k, v in straight.G.state_dict().items():
        assert torch.equal(v, resumed.G.state_dict()[k]), k


def test_objective_is_chosen_by_config():
    from suhmo.objectives import (OBJECTIVES, AdversarialObjective, MLEObjective, VAEObjective, objective_class,
                                  objective_name)

    assert set(OBJECTIVES) == {"gan", "mle", "vae"}
    assert objective_name(make_config("tiny")) == "gan"
    assert objective_name(make_config("tiny", overrides={"loss.adversarial": False})) == "mle"
    assert objective_class(make_config("tiny", overrides={"model.variant": "actor"})) is VAEObjective
    assert objective_class(make_config("tiny", overrides={"model.variant": "transformer"})) is AdversarialObjective
    assert objective_class(make_config("tiny", overrides={"loss.adversarial": False})) is MLEObjective
    assert [c.uses_d for c in (AdversarialObjective, MLEObjective, VAEObjective)] == [True, False, False]


def test_vae_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"actor\.width=30 is not divisible by actor\.heads=4"):
        make_config("tiny", overrides={"model.variant": "actor", "actor.width": 30, "actor.heads": 4})
    with pytest.raises(ConfigError, match=r"hitdvae\.beta"):
        make_config("tiny", overrides={"hitdvae.beta": -1.0})
    with pytest.raises(ConfigError, match="model.variant='vae'"):
        make_config("tiny", overrides={"model.variant": "vae"})


def test_cli_trains_and_generates_a_vae(tmp_path):
    from suhmo.cli import cli

    runner = CliRunner()
    out = tmp_path / "run"
    sets = [a for k, v in TINY.items() if k != "train.device" for a in ("--set", f"{k}={v}")]
    res = runner.invoke(cli, ["train", "--variant", "actor", "--preset", "tiny", "--iterations", "4",
                              "--out", str(out), *sets, "--set", "train.eval_every=4"])
    assert res.exit_code == 0, res.output
    assert (out / "best.pt").is_file()
    ref = tmp_path / "ref.npy"
    np.save(ref, _poses(1, 1)[0, 0].numpy())
    res = runner.invoke(cli, ["generate", "--model", str(out), "--reference", str(ref), "--frames", "50",
                              "--samples", "2", "--seed", "3", "--out", str(tmp_path / "m.npz")])
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "m.npz") as z:
        assert z["flat"].shape == (102, 68, 2) and np.isfinite(z["flat"]).all()


def test_leaderboard_names_the_two_beta_keys_in_full():
    from launch.leaderboard import format_table

    header = format_table([], [["fd_clip40", "min"]], ["optim.lr_g", "actor.beta", "hitdvae.beta"]).splitlines()[0]
    assert " lr_g " in header and " actor.beta " in header and " hitdvae.beta " in header


@pytest.mark.slow
def test_best_export_of_vae_trials_logged_to_mlflow(tmp_path, monkeypatch):
    """Two VAE trials (one per family) logged to real MLflow, then `suhmo best-export`: the
    TorchScript file equals the exported checkpoint under the same seed; the card names the family."""
    import tracking
    from suhmo.cli import cli, run_cli
    from suhmo.generate import load_model
    from suhmo.train import Trainer

    monkeypatch.setenv("SUHMO_HOME", str(tmp_path / "home"))
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    exp = tracking.setup_experiment(uri, "vae export")
    space = tmp_path / "space.yaml"
    space.write_text("model.variant: {type: choice, values: [actor, hitdvae]}\n")
    objective = ("fd_clip40", "min")
    pid = tracking.start_search_run(uri, exp, space_file=space, cli_options={"preset": "tiny"}, study_seed=0,
                                    run_name="vae-search", objectives=[objective])
    for variant in VARIANTS:
        cfg = tiny_cfg(variant, **{"train.iterations": 8, "train.eval_every": 4})
        with tracking.TrialLogger(uri, exp, pid, trial_id=variant, trial_name=variant, config=cfg.flat(),
                                  seed=cfg.train.seed, objectives=[objective]) as lg:
            box = {}

            def report(step, metrics, ckpt, lg=lg, box=box):
                refs = np.stack([box["t"].eval_set.clips[0][i] for i in (0, 3)])
                lg.log_eval(step, metrics, ckpt, box["t"].sample_fn(refs, 8, 0))

            box["t"] = Trainer(cfg, tmp_path / variant, report=report)
            box["t"].fit()
    tracking.finish_search_run(uri, pid, {"trials": 2})
    out = tmp_path / "export"
    assert run_cli(cli, ["best-export", "--tracking-uri", uri, "--experiment", "vae export", "--out", str(out),
                         "--frames", "12"]) == 0
    G, cfg = load_model(out)
    assert cfg.model.variant in VARIANTS
    assert ("CVAE" if cfg.model.variant == "actor" else "dynamical VAE") in (out / "README.md").read_text()
    ts = torch.jit.load(str(out / "generator.ts"))
    obs, vel = _poses(4, 1), torch.zeros(4, 68, 2)
    torch.manual_seed(9)
    want = G.generate(obs, 20, init_vel=vel).future
    torch.manual_seed(9)
    assert torch.equal(ts(obs, vel, 20), want)
