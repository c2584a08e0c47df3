"""Metric stack: Fréchet math, rasteriser, landmark features, registry, cache, trainer hook, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from suhmo.metrics import MetricOptions, compute, compute_report, list_protocols, trainer_metrics
from suhmo.metrics import landmark as lm
from suhmo.metrics.frechet import feature_stats, frechet_distance, frechet_from_features
from suhmo.metrics.raster import CHANNEL, frame_weights, motion_map, motion_maps, rasterize
from suhmo.utils import SuhmoError


@pytest.fixture(scope="module")
def synth():
    from suhmo.data import normalize_set, synthesize

    return normalize_set(synthesize(12, 6.0, 0), "bbox", 1.1)


@pytest.fixture(scope="module")
def synth_other():
    from suhmo.data import normalize_set, synthesize

    return normalize_set(synthesize(8, 6.0, 5), "bbox", 1.1)


# ------------------------------------------------------------------------------ Fréchet
def test_frechet_closed_forms():
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + (2 - 3) ** 2)
    m1, m2 = np.array([0.0, 1, 2]), np.array([1.0, 1, -1])
    v1, v2 = np.array([1.0, 4, 0.25]), np.array([9.0, 1, 0.25])
    want = ((m1 - m2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(want)
    x = np.random.default_rng(0).normal(size=(50, 6))
    assert frechet_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    # a shift by c adds |c|^2 exactly
    assert frechet_from_features(x, x + 0.5) == pytest.approx(6 * 0.25, rel=1e-8)


def test_frechet_matches_scipy_sqrtm_and_handles_rank_deficiency():
    from scipy import linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) @ rng.normal(size=(5, 5))
    (m1, s1), (m2, s2) = feature_stats(a), feature_stats(b)
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-6)
    few = rng.normal(size=(3, 10))  # 3 samples in 10-d: rank 2 covariance
    d = frechet_from_features(few, rng.normal(size=(4, 10)))
    assert np.isfinite(d) and d > 0


# ------------------------------------------------------------------------------ raster
def test_rasterize_one_pixel_per_landmark_in_its_channel():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0.05, 0.95, size=(2, 68, 2)).astype(np.float32)
    img = rasterize(pts)
    assert img.shape == (2, 3, 224, 224) and img.dtype == np.uint8
    for k in (0, 20, 50, 67):
        col, row = (pts[1, k] * 224).astype(int)
        assert img[1, CHANNEL[k], row, col] == 255
    assert (img > 0).sum() <= 2 * 68 and (img > 0).sum() >= 2 * 60  # collisions are rare
    edge = rasterize(np.full((1, 68, 2), 1.5, np.float32))  # clipped to 0.99 like the authors
    assert edge[0, :, int(0.99 * 224), int(0.99 * 224)].max() == 255
    lines = rasterize(pts, lines=True)
    assert (lines > 0).sum() > 5 * (img > 0).sum()
    assert (lines[img > 0] == 255).all()  # the segments pass through every landmark


def test_motion_maps_ema_default_and_ramp():
    w = frame_weights(40, "ema")
    assert w.sum() == pytest.approx(1) and np.all(np.diff(w) > 0)
    assert w[-11] / w[-1] == pytest.approx(0.5)  # half-life 10 frames
    r = frame_weights(40, "ramp")
    assert r[-1] / r[0] == pytest.approx(4.0)
    still = np.repeat(np.random.default_rng(0).uniform(0.2, 0.8, (1, 68, 2)), 40, axis=0)
    m = motion_map(still)
    assert m.shape == (3, 224, 224) and m.max() == pytest.approx(1.0)  # a still face is sharp
    moving = still + np.linspace(0, 0.2, 40)[:, None, None]
    mm = motion_map(moving)
    assert mm.max() < 0.2 and (mm > 0).sum() > 10 * (m > 0).sum()  # faint trail
    # the brightest pixels are the last frame's
    col, row = (moving[-1, 0] * 224).astype(int)
    assert mm[0, row, col] == pytest.approx(w[-1], rel=1e-5)
    ramp = motion_map(moving, "ramp")
    assert ramp[0, row, col] == pytest.approx(r[-1], rel=1e-5)
    assert motion_map(moving, channels_last=True).shape == (224, 224, 3)
    batch = motion_maps(np.stack([still, moving]))
    np.testing.assert_allclose(batch[1], mm)


# ------------------------------------------------------------------------------ landmark
def test_state_shape_is_similarity_invariant(synth):
    ref = lm.LandmarkReference.fit(lm.real_windows(synth.clips))
    x = synth.clips[0][:5].astype(np.float64)
    th = 0.2
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    y = (x - 0.5) @ R.T * 0.7 + 0.5 + 0.03
    zx, zy = ref.basis.state(x), ref.basis.state(y)
    np.testing.assert_allclose(zx[:, 4:], zy[:, 4:], atol=1e-6)  # shape and residual unchanged
    np.testing.assert_allclose(zy[:, 2] - zx[:, 2], np.log(0.7), atol=1e-6)  # log scale
    np.testing.assert_allclose(zy[:, 3] - zx[:, 3], th, atol=1e-6)  # roll
    u = ref.basis.implausibility(lm.real_windows(synth.clips)[:, 1:])
    assert 0.5 < u.mean() < 2.0  # about 1 on real frames


def test_landmark_stack_values(synth, synth_other):
    windows = lm.real_windows(synth.clips)
    ref = lm.LandmarkReference.fit(windows)
    same = lm.landmark_metrics(windows, ref)
    assert set(lm.KEYS) <= set(same)
    assert same["motion_energy"] == pytest.approx(1.0) and same["motion_energy_err"] == pytest.approx(0, abs=1e-9)
    assert all(same[k] < 1e-6 for k in lm.FD_KEYS)  # the reference set itself
    other = lm.landmark_metrics(lm.real_windows(synth_other.clips), ref)
    assert all(other[k] > 0.1 for k in lm.FD_KEYS)
    frozen = lm.landmark_metrics(np.repeat(windows[:, :1], 41, axis=1), ref)
    assert frozen["motion_energy"] == 0 and frozen["motion_energy_err"] > 10
    # arrays round trip
    again = lm.LandmarkReference.from_arrays(ref.to_arrays())
    assert lm.landmark_metrics(windows[:20], again) == pytest.approx(lm.landmark_metrics(windows[:20], ref),
                                                                   nan_ok=True)
    bad = windows.copy()
    bad[0, 5, 3] = np.nan
    diverged = lm.landmark_metrics(bad, ref)
    assert all(diverged[k] == float("inf") for k in lm.FD_KEYS)


def test_scored_frames_are_the_last_40(synth):
    w = lm.real_windows(synth.clips, length=81)
    assert np.array_equal(lm.scored_segment(w), w[:, 40:])
    assert np.array_equal(lm.scored_segment(w, frames=40), w[:, :41])
    with pytest.raises(ValueError, match="at least 40"):
        lm.scored_segment(w[:, :30])


def test_apd_groups_by_reference_pose_and_drift_sees_growth(synth):
    w = lm.real_windows(synth.clips, length=81)
    seqs = w[:8].copy()
    seqs[:, 0] = seqs[0, 0]  # one shared reference pose
    d = lm.apd(seqs)
    assert d > 0
    assert np.isnan(lm.apd(w[:8]))  # no shared pose: no group
    copies = np.repeat(seqs[:1], 4, axis=0)
    assert lm.apd(copies) == 0.0
    ref = lm.LandmarkReference.fit(lm.real_windows(synth.clips))
    base = lm.drift(w, ref.basis)
    warped = w.copy()
    grow = np.clip(np.arange(81) - 40, 0, None)[None, :, None] / 40.0
    warped[..., 48:, 1] += 0.05 * grow  # the mouth slides down after frame 40
    assert base < 0.05 and lm.drift(warped, ref.basis) > 5 * base + 0.05


# ------------------------------------------------------------------------------ registry
def test_registry_compute_runs_and_cache(synth, synth_other, tmp_path):
    assert {"landmark", "fid", "tfid40", "fvd10", "fvd20", "fvd40"} <= set(list_protocols())
    seqs = lm.real_windows(synth_other.clips, stride=3)
    opts = MetricOptions(sequences=seqs, real=list(synth.clips), real_fps=25.0, num_samples=40, runs=3,
                         cache_dir=tmp_path)
    rep = compute_report("landmark", opts)
    res = rep["results"]
    assert {"fd_frame", "fd_frame_std", "apd", "motion_energy_err"} <= set(res)
    assert res["fd_frame_std"] > 0  # the runs draw different subsets
    assert rep["protocol"] == "landmark/f40/n40/r3/s1234"
    files = list((tmp_path / "metrics").glob("landmark-*.npz"))
    assert len(files) == 1 and files[0].with_suffix(".json").is_file()
    stamp = files[0].stat().st_mtime_ns
    again = compute(["landmark"], opts)
    assert again == pytest.approx(res, nan_ok=True) and files[0].stat().st_mtime_ns == stamp  # cache reused
    other_prep = compute(["landmark"], opts.replace(preprocessing={"normalize": "centred"}))
    assert len(list((tmp_path / "metrics").glob("landmark-*.npz"))) == 2 and other_prep
    with pytest.raises(SuhmoError, match="did you mean 'fvd40'"):
        compute(["fvd41"], opts)
    with pytest.raises(SuhmoError, match="fewer than frames=80"):
        compute(["landmark"], opts.replace(frames=80))


def test_trainer_metrics_draws_refs_and_generates_80_frames(synth):
    from suhmo.config import make_config

    cfg = make_config("tiny", overrides={"eval.samples": 12})
    calls = []
    windows = lm.real_windows(synth.clips, length=81, stride=7)

    def sample_fn(refs, frames, seed):
        calls.append((refs.copy(), frames, seed))
        rng = np.random.default_rng(seed)
        out = windows[rng.choice(len(windows), len(refs))].copy()
        out -= out[:, :1] - refs[:, None]  # start exactly at the reference pose
        return out[:, :frames + 1]

    fn = trainer_metrics(cfg, synth)
    m = fn(sample_fn, 10)
    assert set(lm.KEYS) <= set(m) and all(np.isfinite(m[k]) for k in lm.KEYS)
    refs, frames, seed = calls[0]
    assert frames == 80 and seed == cfg.eval.seed and len(refs) == 12
    assert len(np.unique(refs.reshape(12, -1), axis=0)) == 3  # 3 poses x APD_GROUP
    assert m["apd"] > 0 and 0.5 < m["motion_energy"] < 2.0
    assert fn(sample_fn, 20) == pytest.approx(m)  # fixed evaluation seed


# ------------------------------------------------------------------------------ CLI
def _save(ls, path):
    from suhmo.data import save_landmarks

    save_landmarks(path, ls)
    return str(path)


def test_metrics_cli_list_ref_and_errors(synth, tmp_path):
    from suhmo.cli import cli, run_cli

    r = CliRunner().invoke(cli, ["metrics", "list"])
    assert r.exit_code == 0 and "landmark" in r.output and "fvd40" in r.output
    data = _save(synth, tmp_path / "s.npz")
    r = CliRunner().invoke(cli, ["metrics", "ref", "--data", data, "--split", "all"])
    assert r.exit_code == 0, r.output
    assert "landmark:" in r.output and list((tmp_path / "suhmo-home").rglob("landmark-*.npz"))
    assert run_cli(cli, ["metrics", "ref", "--data", data, "--metrics", "fid",
                         "--detectors", str(tmp_path / "nodet")]) == 2
