"""Window sampler (eq. 5): tau distributions, start rules, grid counts, batched scoring."""

import math

import numpy as np
import pytest
import torch

from suhmo.config import WindowConfig
from suhmo.models import WindowSampler, multiscale_score, num_feature_frames
from suhmo.models.layers import FEATURE_DIM


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_uniform_tau_is_discrete_uniform():
    s = WindowSampler(WindowConfig(family="uniform", tau_min=5, tau_max=40), 40)
    taus = s.taus(36000, gen()).numpy()
    assert taus.min() == 5 and taus.max() == 40
    counts = np.bincount(taus - 5, minlength=36)
    # 35 degrees of freedom: the 99.9% quantile is about 66
    assert chi_square(counts, np.full(36, 1 / 36)) < 66


def test_texp_tau_matches_truncated_exponential():
    cfg = WindowConfig(family="texp", tau_min=3, tau_max=40, texp_mean=20.0)
    taus = WindowSampler(cfg, 40).taus(40000, gen(1)).numpy()
    assert taus.min() >= 3 and taus.max() <= 40
    # exact pmf of floor(X), X ~ Exp(mean 20) truncated to [3, 41)
    edges = np.arange(3, 42, dtype=float)
    cdf = 1 - np.exp(-(edges - 3) / 20.0)
    pmf = np.diff(cdf) / cdf[-1]
    assert abs(taus.mean() - (pmf * np.arange(3, 41)).sum()) < 0.25
    counts = np.bincount(taus - 3, minlength=38)
    assert chi_square(counts, pmf) < 75  # 37 dof, 99.9% quantile ~ 70
    assert counts[:5].sum() > counts[-5:].sum() * 2  # decaying


def test_fixed_family_draws_only_the_scales_evenly():
    s = WindowSampler(WindowConfig(family="fixed", scales=[5, 10, 20, 40]), 40)
    taus = s.taus(8000, gen()).numpy()
    values, counts = np.unique(taus, return_counts=True)
    assert values.tolist() == [5, 10, 20, 40]
    assert chi_square(counts, np.full(4, 0.25)) < 16.3  # 3 dof, 99.9%


def test_random_starts_are_uniform_and_inside():
    T = 43
    s = WindowSampler(WindowConfig(family="fixed", scales=[10], num_windows=4000), 40)
    plan = s.plan(T, gen(2))
    assert len(plan) == 1 and plan[0][0] == 10 and plan.weights == [1.0]
    starts = plan[0][1].numpy()
    assert starts.min() == 0 and starts.max() == T - 10
    assert abs(starts.mean() - (T - 10) / 2) < 0.5
    counts = np.bincount(starts, minlength=T - 9)
    assert chi_square(counts, np.full(T - 9, 1 / (T - 9))) < 70


def test_random_plan_groups_by_tau_with_count_weights():
    s = WindowSampler(WindowConfig(family="uniform", tau_min=5, tau_max=8, num_windows=10), 40)
    plan = s.plan(43, gen(3))
    assert plan.num_windows() == 10
    assert len({t for t, _ in plan}) == len(plan)
    assert math.isclose(sum(plan.weights), 1.0)
    for (tau, starts), w in zip(plan, plan.weights):
        assert math.isclose(w, starts.numel() / 10)
        assert int(starts.max()) + tau <= 43
    assert [t.tolist() for _, t in plan] == [t.tolist() for _, t in s.plan(43, gen(3))]  # seeded


def test_grid_gives_the_authors_31_windows_when_observed_frames_count():
    cfg = WindowConfig(family="fixed", scales=[5, 10, 20, 40], starts="grid", grid_stride=0.5)
    s = WindowSampler(cfg, 40)
    T = num_feature_frames(5 + 40)
    assert T == 43
    plan = s.plan(T)
    assert [(t, len(st)) for t, st in plan] == [(5, 20), (10, 7), (20, 3), (40, 1)]
    assert plan.num_windows() == 31 and plan.weights == [0.25] * 4
    assert s.plan(40).num_windows() == 29  # generated frames only


def test_single_scale_is_one_window_over_the_generated_frames():
    s = WindowSampler(WindowConfig(single_scale=True), 40)
    plan = s.plan(43, gen())
    assert len(plan) == 1 and plan[0][0] == 40 and plan[0][1].tolist() == [3]


def test_multiscale_score_matches_a_loop():
    torch.manual_seed(0)
    feats = torch.randn(4, 20, FEATURE_DIM)
    w = torch.randn(FEATURE_DIM)

    def net(x):  # [N, tau, F] -> [N]; depends on the window content and length
        return (x @ w).tanh().mean(1) * x.shape[1]

    s = WindowSampler(WindowConfig(family="uniform", tau_min=3, tau_max=9, num_windows=7), 20)
    plan = s.plan(20, gen(5))
    got = multiscale_score(net, feats, plan)
    ref = torch.zeros(4)
    for tau, starts in plan:
        for t in starts.tolist():
            ref += net(feats[:, t:t + tau]) / plan.num_windows()
    assert torch.allclose(got, ref, atol=1e-5)

    def joint_net(x):  # one score per pair of consecutive rows
        return net(x).reshape(-1, 2).sum(1)

    j = multiscale_score(joint_net, feats, plan)
    assert j.shape == (2,) and torch.allclose(j, ref.reshape(2, 2).sum(1), atol=1e-5)


def test_window_outside_the_sequence_is_rejected():
    with pytest.raises(ValueError, match="leaves"):
        multiscale_score(lambda x: x.sum((1, 2)), torch.zeros(2, 10, FEATURE_DIM), [(5, torch.tensor([6]))])


def test_multiscale_score_fused_rnn_path_matches_per_length_calls():
    from suhmo.config import make_config
    from suhmo.models import build_discriminator
    from suhmo.models.windows import window_batch

    torch.manual_seed(0)
    D = build_discriminator(make_config("tiny", overrides={"model.d_form": "rnn"})).eval()
    assert hasattr(D.seq, "window_scores")
    feats = torch.randn(4, 20, FEATURE_DIM)
    for cfg in (WindowConfig(family="uniform", tau_min=3, tau_max=9, num_windows=7),
                WindowConfig(family="fixed", scales=[3, 6, 12], starts="grid")):
        plan = WindowSampler(cfg, 20).plan(20, gen(3))
        for net in (D.seq, D.joint):
            got = multiscale_score(net, feats, plan)
            ref = sum(w * net(window_batch(feats, tau, starts)).reshape(len(starts), -1).mean(0)
                      for (tau, starts), w in zip(plan, plan.weights))
            assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-5)
