"""Trainer: short training, checkpoints, resume equivalence, divergence, hooks, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from suhmo.checkpoint import load_checkpoint
from suhmo.config import make_config
from suhmo.utils import SuhmoError

# small and fast: 16-frame training windows, 8 synthetic clips of 3 s, 4 evaluation samples
TINY = {"data.seq_len": 16, "windows.tau_max": 16, "data.synth_clips": 8, "data.synth_seconds": 3.0,
        "train.iterations": 20, "train.eval_every": 10, "eval.samples": 4, "eval.frames": 40,
        "train.device": "cpu"}


def tiny_cfg(**over):
    return make_config("tiny", overrides={**TINY, **over})


@pytest.fixture(scope="module")
def split():
    from suhmo.data import load_dataset
    from suhmo.data import SPLIT_SEED

    cfg = tiny_cfg()
    return load_dataset(cfg).split_by_person(cfg.data.test_fraction, SPLIT_SEED)


def _cheap_trainer(cfg, out, split, **kw):
    from suhmo.train import Trainer, motion_stats_metrics

    tr, ev = split
    return Trainer(cfg, out, train_set=tr, eval_set=ev, metrics_fn=motion_stats_metrics(cfg, ev), **kw)


def _weights(trainer) -> dict:
    nets = {"G": trainer.G, "D": trainer.D, **({"G_ema": trainer.G_ema} if trainer.G_ema is not None else {})}
    return {f"{name}.{k}": v.clone() for name, net in nets.items() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("variant", ["rnn", "transformer"])
def test_short_training_generates_moving_finite_sequences_of_twice_the_length(tmp_path, variant):
    from suhmo.generate import load_model, sample
    from suhmo.train import Trainer

    cfg = tiny_cfg(**{"model.variant": variant})
    reports = []
    trainer = Trainer(cfg, tmp_path / "run", report=lambda s, m, p: reports.append((s, dict(m), p)))
    init = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    metrics = trainer.fit()

    assert trainer.step == 20
    assert [r[0] for r in reports] == [10, 20]
    assert all(p == tmp_path / "run" / "last.pt" for _, _, p in reports)
    assert "loss_d" in metrics and "loss_g" in metrics and all(np.isfinite(list(metrics.values())))
    assert any(not torch.equal(init[k], v) for k, v in trainer.G.state_dict().items())  # G learned
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [10, 20]
    assert (tmp_path / "run" / "config.yaml").is_file()
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["step"] == 20 and ck["config"]["model"]["variant"] == variant
    # the default metrics_fn is the metric stack: best.pt follows its selection metric
    assert cfg.train.select_metric in metrics
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["metrics"][cfg.train.select_metric] == ck["best"]["value"]

    G, cfg2 = load_model(tmp_path / "run" / "last.pt")
    refs = trainer.eval_set.clips[0][:3]  # three reference poses
    seqs = sample(G, refs, 2 * cfg.data.seq_len, seed=0)
    assert seqs.shape == (3, 2 * cfg.data.seq_len + 1, 68, 2)
    assert np.isfinite(seqs).all()
    np.testing.assert_allclose(seqs[:, 0], refs, atol=1e-6)
    step = np.linalg.norm(np.diff(seqs, axis=1), axis=-1).max(axis=-1)  # [K, T]: largest point motion
    assert (step > 0).all()  # every consecutive pair of frames differs: the face moves throughout


@pytest.mark.parametrize("switch", [
    {"loss.adversarial": False},  # MLE baseline: no D step
    {"model.delta": True},  # delta-based baseline
    {"model.pair_g": False},  # one-sample G
    {"model.joint_d": False},  # one-sample D
    {"windows.single_scale": True},  # single-scale D
    {"windows.family": "fixed", "windows.scales": [5, 10], "windows.starts": "grid"},  # authors' grid
    {"model.variant": "transformer", "model.joint_d": False, "loss.reco": 1e-3, "optim.grad_clip": 1.0},
])
def test_baselines_and_ablations_train(tmp_path, split, switch):
    cfg = tiny_cfg(**{"train.iterations": 2, "train.eval_every": 2, **switch})
    t = _cheap_trainer(cfg, tmp_path / "run", split)
    before = {k: v.clone() for k, v in t.G.state_dict().items()}
    assert (t.D is None) == (t.opt_d is None) == (not cfg.loss.adversarial)  # the MLE baseline has no D
    d_before = {k: v.clone() for k, v in t.D.state_dict().items()} if t.D is not None else {}
    metrics = t.fit()
    assert any(not torch.equal(before[k], v) for k, v in t.G.state_dict().items())
    assert t.D is None or any(not torch.equal(d_before[k], v) for k, v in t.D.state_dict().items())
    assert ("loss_d" in metrics) == cfg.loss.adversarial and np.isfinite(metrics["loss_l2"])


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_gives_identical_weights(tmp_path, split, ema):
    cfg = tiny_cfg(**{"train.iterations": 6, "train.eval_every": 3, "optim.ema_g": ema})
    straight = _cheap_trainer(cfg, tmp_path / "a", split)
    straight.fit()
    assert (straight.G_ema is not None) == (ema > 0)

    # half, then a fresh Trainer in the same folder continues
    half = _cheap_trainer(tiny_cfg(**{"train.iterations": 3, "train.eval_every": 3, "optim.ema_g": ema}),
                          tmp_path / "b", split)
    half.fit()
    resumed = _cheap_trainer(cfg, tmp_path / "b", split)
    assert resumed.step == 3
    resumed.fit()

    # stopped by should_stop between evaluations (checkpoint without evaluation), then resumed
    stopper = _cheap_trainer(cfg, tmp_path / "c", split, should_stop=lambda: stopper.step == 2)
    stopper.fit()
    assert stopper.step == 2 and load_checkpoint(tmp_path / "c" / "last.pt")["step"] == 2
    again = _cheap_trainer(cfg, tmp_path / "c", split)
    again.fit()

    ref = _weights(straight)
    for other in (resumed, again):
        got = _weights(other)
        assert got.keys() == ref.keys()
        for k in ref:
            assert torch.equal(ref[k], got[k]), k
    assert resumed.opt_g.state_dict()["state"][0]["step"] == straight.opt_g.state_dict()["state"][0]["step"]
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 6
    # a finished run resumed again does nothing and returns the stored metrics
    done = _cheap_trainer(cfg, tmp_path / "a", split)
    assert done.step == 6 and done.fit() == straight.metrics


def test_moving_average_of_g_is_what_evaluation_and_generation_use(tmp_path, split):
    from suhmo import objectives
    from suhmo.generate import load_model

    cfg = tiny_cfg(**{"train.iterations": 4, "train.eval_every": 4, "optim.ema_g": 0.75})
    t = _cheap_trainer(cfg, tmp_path / "run", split)
    before = [p.clone() for p in t.G_ema.parameters()]
    t.fit()
    g = [p.detach() for p in t.G.parameters()]
    # the average moved, but lags G: it is a convex mix of the initial and the trained weights
    assert any(not torch.equal(a, b) for a, b in zip(before, t.G_ema.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(g, t.G_ema.parameters()))
    assert t.G_eval is t.G_ema and not any(p.requires_grad for p in t.G_ema.parameters())
    # one update by hand at step 4: d = min(0.75, warm-up (1 + 4) / (10 + 4))
    d = 5 / 14
    expect = [d * e + (1 - d) * p for e, p in zip(t.G_ema.parameters(), g)]
    objectives.ema_update(t.G_ema, t.G, cfg.optim.ema_g, t.step)
    for e, x in zip(t.G_ema.parameters(), expect):
        torch.testing.assert_close(e, x)
    # the checkpoint keeps both; generation loads the average
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["G_ema"].keys() == ck["G"].keys()
    G, _ = load_model(tmp_path / "run" / "last.pt")
    for k, v in G.state_dict().items():
        assert torch.equal(v, ck["G_ema"][k]), k


def test_evaluation_scores_the_moving_average(tmp_path, split):
    from suhmo.generate import sample
    from suhmo.train import Trainer

    seen = []

    def metrics_fn(sample_fn, step):
        refs = split[1].clips[0][:2].astype(np.float32)
        seen.append((sample_fn(refs, 6, 0), refs))
        return {"score": float(step)}

    cfg = tiny_cfg(**{"train.iterations": 3, "train.eval_every": 3, "optim.ema_g": 0.9})
    t = Trainer(cfg, tmp_path / "run", train_set=split[0], eval_set=split[1], metrics_fn=metrics_fn)
    t.fit()
    got, refs = seen[-1]
    np.testing.assert_allclose(got, sample(t.G_ema, refs, 6, 0, init_vel=cfg.eval.init_vel), atol=1e-6)
    assert not np.allclose(got, sample(t.G, refs, 6, 0, init_vel=cfg.eval.init_vel), atol=1e-6)


def test_moving_average_switched_on_or_off_on_resume(tmp_path, split):
    sel = {"train.eval_every": 3, "train.select_metric": "mean_speed", "train.select_mode": "max"}
    off = tiny_cfg(**{"train.iterations": 3, **sel})
    on = tiny_cfg(**{"train.iterations": 6, "optim.ema_g": 0.9, **sel})
    _cheap_trainer(off, tmp_path / "run", split).fit()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["best"]["ema"] is False
    t = _cheap_trainer(on, tmp_path / "run", split)  # starts the average from the resumed G
    assert t.best is None  # best.pt was chosen with the raw G: a new best starts
    for a, b in zip(t.G_ema.parameters(), t.G.parameters()):
        assert torch.equal(a, b)
    t.fit()
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert "G_ema" in ck and ck["best"]["ema"] is True
    # switched off again: the average is dropped from the next checkpoint
    _cheap_trainer(tiny_cfg(**{"train.iterations": 9, **sel}), tmp_path / "run", split).fit()
    assert "G_ema" not in load_checkpoint(tmp_path / "run" / "last.pt")


def test_a_checkpoint_from_before_the_centred_discriminator_resumes_with_a_hint(tmp_path, split):
    from suhmo.checkpoint import save_checkpoint

    old = tiny_cfg(**{"train.iterations": 2, "train.eval_every": 2, "model.d_centred": False})
    _cheap_trainer(old, tmp_path / "run", split).fit()
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    for key in ("d_centred", "g_centred", "attn_window_g"):  # as written before these fields existed
        del ck["config"]["model"][key]
    ck["version"] = 1  # the checkpoint format of that time (checkpoint.migrate fills the fields in)
    assert ck["D"]["frame.net.net.0.parametrizations.weight.original"].shape[1] == 408
    save_checkpoint(tmp_path / "run" / "last.pt", ck)
    with pytest.raises(SuhmoError, match=r"differs in model.d_centred; resume with --set model.d_centred=false"):
        _cheap_trainer(tiny_cfg(**{"train.iterations": 4}), tmp_path / "run", split)
    resumed = _cheap_trainer(tiny_cfg(**{"train.iterations": 4, "model.d_centred": False}), tmp_path / "run", split)
    assert resumed.step == 2
    resumed.fit()
    assert resumed.step == 4


def test_lr_step_decay_and_lambda_schedule_follow_the_step(tmp_path, split):
    cfg = tiny_cfg(**{"train.iterations": 4, "train.eval_every": 4, "optim.lr_decay_iter": 2,
                      "optim.lr_decay_factor": 0.1})
    t = _cheap_trainer(cfg, tmp_path / "run", split, should_stop=lambda: t.step == 2)
    t.fit()
    assert t.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr_g * 0.1)
    assert t.opt_d.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr_d * 0.1)
    resumed = _cheap_trainer(cfg, tmp_path / "run", split)
    resumed.fit()
    assert resumed.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr_g * 0.1)
    early = _cheap_trainer(cfg, tmp_path / "early", split, should_stop=lambda: True)
    early.fit()
    assert early.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr_g)


def test_best_checkpoint_follows_the_selection_metric(tmp_path, split):
    from suhmo.train import Trainer

    scores = iter([3.0, 1.0, 2.0])
    cfg = tiny_cfg(**{"train.iterations": 6, "train.eval_every": 2, "train.select_metric": "score",
                      "train.select_mode": "min"})
    seen = []
    t = Trainer(cfg, tmp_path / "run", train_set=split[0], eval_set=split[1],
                metrics_fn=lambda sample_fn, step: {"score": next(scores)},
                report=lambda s, m, p: seen.append((s, m["score"])))
    t.fit()
    assert seen == [(2, 3.0), (4, 1.0), (6, 2.0)]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert best["step"] == 4 and best["metrics"]["score"] == 1.0
    assert last["step"] == 6 and last["best"] == {"metric": "score", "mode": "min", "value": 1.0, "step": 4,
                                                     "ema": False}


def test_divergence_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path, split):
    cfg = tiny_cfg(**{"train.iterations": 20, "train.eval_every": 5})

    def poison() -> bool:  # after the checkpoint of iteration 5, a weight of G becomes NaN
        if t.step == 5:
            with torch.no_grad():
                next(t.G.parameters()).view(-1)[0] = float("nan")
        return False

    t = _cheap_trainer(cfg, tmp_path / "run", split, should_stop=poison)
    with pytest.raises(SuhmoError, match=r"diverged at iteration 6: loss_\w+ is nan") as e:
        t.fit()
    assert "last.pt (iteration 5) is kept" in str(e.value) and "\n" not in str(e.value)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["step"] == 5
    assert all(torch.isfinite(v).all() for v in ck["G"].values() if v.is_floating_point())


def test_divergence_from_a_huge_learning_rate(tmp_path, split):
    cfg = tiny_cfg(**{"train.iterations": 30, "train.eval_every": 30, "optim.lr_g": 1e12, "optim.lr_d": 1e12,
                      "model.spectral_norm": False})
    t = _cheap_trainer(cfg, tmp_path / "run", split)
    with pytest.raises(SuhmoError, match=r"diverged at iteration \d+: .*no checkpoint was written yet"):
        t.fit()
    assert not (tmp_path / "run" / "last.pt").exists()


def test_bad_checkpoints_in_the_output_folder(tmp_path, split):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"garbage")
    with pytest.raises(SuhmoError, match=r"last\.pt: not a readable checkpoint"):
        _cheap_trainer(tiny_cfg(), out, split)
    (out / "last.pt").unlink()
    _cheap_trainer(tiny_cfg(**{"train.iterations": 1}), out, split).fit()
    with pytest.raises(SuhmoError, match=r"cannot resume: its model config differs in model.hidden_g"):
        _cheap_trainer(tiny_cfg(**{"model.hidden_g": 24}), out, split)


def test_train_cli(tmp_path):
    from suhmo.cli import cli, run_cli

    out = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--iterations", "4", "--out", str(out), "--seed", "3",
            "--device", "cpu", "--variant", "transformer"]
    args += [x for k, v in TINY.items() if k not in ("train.iterations", "train.device")
             for x in ("--set", f"{k}={v}")]
    args += ["--set", "train.eval_every=2"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "done at iteration 4/4" in res.output and str(out / "last.pt") in res.output
    ck = load_checkpoint(out / "last.pt")
    assert ck["seed"] == 3 and ck["config"]["model"]["variant"] == "transformer"
    assert ck["config"]["data"]["seq_len"] == 16
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    # user mistakes: one line, exit code 2
    assert run_cli(cli, ["train", "--preset", "tiny", "--set", "optim.lr_gg=1", "--out", str(out)]) == 2
    assert run_cli(cli, ["train", "--preset", "tiny", "--data", str(tmp_path / "none.npz"), "--out", str(out)]) == 2


def test_train_cli_default_output_folder(tmp_path, monkeypatch):
    from suhmo import paths
    from suhmo.cli import cli

    args = ["train", "--preset", "tiny", "--iterations", "1", "--device", "cpu"]
    args += [x for k, v in TINY.items() if k not in ("train.iterations", "train.device")
             for x in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    runs = list((paths.home() / "train").iterdir())
    assert len(runs) == 1 and (runs[0] / "last.pt").is_file() and (runs[0] / "config.yaml").is_file()


def test_finiteness_check_tells_huge_weights_from_non_finite_ones(tmp_path, split):
    """A weight of 1e30 is finite (its norm overflows, which must not matter); a NaN weight is not."""
    t = _cheap_trainer(tiny_cfg(), tmp_path / "run", split)
    logs = {"loss_d": 1.0, "loss_g": 1.0}
    with torch.no_grad():
        p = next(t.D.parameters())
        p.fill_(1e30)
    t._check_finite(0, logs)  # finite weights with an overflowing norm: no error
    with torch.no_grad():
        p.view(-1)[0] = float("inf")
    with pytest.raises(SuhmoError, match=r"diverged at iteration 1: non-finite weights in D"):
        t._check_finite(0, logs)


def test_all_finite_is_the_per_tensor_isfinite():
    """``train._all_finite`` (the per-iteration weight check in a few operations): false for any
    inf or NaN entry, true for huge finite weights (which would overflow a norm)."""
    from suhmo.train import _all_finite

    ps = [torch.randn(5, 7), torch.randn(3), torch.zeros(0), torch.ones(2, dtype=torch.long)]
    assert _all_finite(ps)
    for bad in (float("inf"), float("-inf"), float("nan")):
        q = [p.clone() for p in ps]
        q[1][2] = bad
        assert not _all_finite(q)
    assert _all_finite([torch.full((4, 4), 3e38)])
