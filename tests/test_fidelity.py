"""The fidelity protocol (suhmo.metrics.fidelity): pose proxies, lag correlations, speed
percentiles, identity drift, frozen and broken windows, against real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from suhmo.data import synthesize
from suhmo.data.normalize import normalize_clip
from suhmo.metrics import fidelity as fid
from suhmo.metrics import landmark as lm


def _mean_face() -> np.ndarray:
    clips = synthesize(4, 2.0, 0).clips
    from suhmo.geometry import mean_shape_gpa

    return mean_shape_gpa(np.concatenate(clips))


def _rotate(x, deg):
    t = np.radians(deg)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return x @ r.T


def test_pose_proxies_read_roll_and_mirror_yaw():
    from suhmo.data.windows import hflip

    face = _mean_face()
    p = fid.pose_proxies(face)
    for deg in (-20.0, 10.0, 35.0):
        assert fid.pose_proxies(_rotate(face, deg))["roll"] == pytest.approx(float(p["roll"]) + deg, abs=1e-6)
        assert fid.pose_proxies(_rotate(face, deg))["yaw"] == pytest.approx(float(p["yaw"]), abs=1e-9)
    turned = face.copy()
    turned[27:36, 0] += 0.15  # the nose moves towards one side: a head turn
    y0, y1 = float(fid.pose_proxies(face)["yaw"]), float(fid.pose_proxies(turned)["yaw"])
    y1m = float(fid.pose_proxies(hflip(turned + 0.5) - 0.5)["yaw"])
    assert y1 > y0 + 0.05 and y1m == pytest.approx(-y1, abs=1e-9)


def test_lag_correlation_of_known_processes():
    rng = np.random.default_rng(0)
    rho, n, t = 0.97, 400, 300
    x = np.zeros((n, t))
    x[:, 0] = rng.normal(size=n)
    for i in range(1, t):
        x[:, i] = rho * x[:, i - 1] + np.sqrt(1 - rho**2) * rng.normal(size=n)
    for lag in (5, 20, 40):
        assert fid.lag_correlation(x, lag) == pytest.approx(rho**lag, abs=0.03)
    assert fid.lag_correlation(np.repeat(rng.normal(size=(n, 1)), t, 1), 40) == 1.0  # a frozen face


@pytest.fixture(scope="module")
def reference():
    clips = [normalize_clip(c)[0] for c in synthesize(24, 12.0, 1).clips]
    real = lm.real_windows(clips, 121, 10)
    basis = lm.LandmarkReference.fit(lm.real_windows(clips)).basis
    other = [normalize_clip(c)[0] for c in synthesize(12, 12.0, 7).clips]
    return fid.FidelityReference.fit(real, basis), basis, lm.real_windows(other, 121, 10)


def test_real_data_scores_near_real_and_a_frozen_face_does_not(reference):
    ref, basis, other = reference
    real = fid.fidelity_metrics(other, ref, basis)
    assert real["pose_mem_err"] < 0.15 and real["frozen_frac"] == 0.0 and real["broken_frac"] == 0.0
    assert 0.6 < real["speed_p50"] < 1.6 and real["speed_pct_err"] < 0.4
    assert 0.5 < real["id_drift"] < 2.0
    assert set(real) == set(fid.KEYS) - {f"pose_mem_{p}_200" for p in fid.PROXIES} - \
        {f"pose_mem_{p}_{lag}" for p in fid.PROXIES for lag in (80,) if lag >= other.shape[1]}
    frozen = fid.fidelity_metrics(np.repeat(other[:, :1], other.shape[1], 1), ref, basis)
    assert frozen["frozen_frac"] == 1.0 and frozen["speed_p90"] == 0.0
    assert frozen["speed_pct_err"] > 5 and frozen["pose_mem_err"] > real["pose_mem_err"]
    for p in fid.PROXIES:  # a frozen face remembers its pose for ever: correlation 1
        assert frozen[f"pose_mem_{p}_40"] == pytest.approx(1 - ref.a[f"corr.{p}"][0])


def test_broken_faces_and_divergence_are_caught(reference):
    ref, basis, other = reference
    broken = other + np.random.default_rng(0).normal(0, 0.05, other.shape)
    assert fid.fidelity_metrics(broken, ref, basis)["broken_frac"] == 1.0
    bad = other.copy()
    bad[0, 50] = np.nan
    assert all(np.isinf(v) for v in fid.fidelity_metrics(bad, ref, basis).values())


def test_evaluate_prints_fidelity_beside_frozen_face_and_real_data(tmp_path):
    from test_scale import train_tiny

    from suhmo.cli import cli
    from suhmo.metrics.scale import ROWS

    out = train_tiny(tmp_path / "run", seconds=6.0)
    args = ["evaluate", "--checkpoint", str(out / "last.pt"), "--samples", "8", "--device", "cpu",
            "--metrics", "landmark,fidelity", "--horizon", "90"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    assert set(rec["scale"]) == set(ROWS)
    for k in ("pose_mem_err", "speed_p50", "frozen_frac"):
        assert k in rec["results"] and k in rec["scale"]["real data"] and k in rec["scale"]["frozen face"]
    assert rec["scale"]["frozen face"]["frozen_frac"] == 1.0
    assert rec["scale"]["real data"]["frozen_frac"] == 0.0
    header = [ln for ln in r.output.splitlines() if "pose_mem_err" in ln and "speed_p50" in ln]
    assert header, r.output
    assert "pose_mem_yaw_200" not in rec["results"]  # a lag beyond the horizon is not scored
