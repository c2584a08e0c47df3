"""experiments/targets.py: the natural-motion targets beside a frozen face and real data, and
its probe (state wandering, the push all samples share, the implausibility per block)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_targets_scores_a_semantic_model_beside_the_yardsticks(tmp_path, monkeypatch, dev_data):
    monkeypatch.setenv("SUHMO_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    done = subprocess.run([str(Path(sys.executable).with_name("suhmo")), "train", "--preset", "tiny", "--set", "model.space=semantic",
                           "--set", "model.semantic_k=4", "--set", "train.iterations=4", "--set", "eval.frames=80",
                           "--out", str(run)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "t.json"
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "targets.py"), f"tiny={run / 'last.pt'}",
                           "--data", str(dev_data), "--poses", "4", "--probe", "--fidelity", "--long", "400",
                           "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    assert "shared push z_80 - z_0" in text and "implausibility u per 10 frames (1-80)" in text
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"frozen face", "real continuation", "tiny"}
    assert rows["frozen face"]["mean"]["motion_energy"] == 0
    assert 0.5 < rows["real continuation"]["mean"]["motion_energy"] < 2
    assert rows["real continuation"]["mean"]["fd_clip40"] < rows["frozen face"]["mean"]["fd_clip40"]
    assert rows["tiny"]["n"] == 1 and rows["tiny"]["mean"]["fd_clip40"] > 0
    line = next(r for r in text.splitlines() if r.startswith("tiny"))
    assert line.count("+") + line.count("-") >= 6  # every target marked met or missed
    # --fidelity: the fidelity table, and the main table checks the lively issue's tighter targets
    assert "fd_clip40 <= 2x real" in text and "motion_energy in [0.85, 1.15]" in text
    assert "fidelity targets:" in text and 0 <= rows["tiny"]["mean"]["fid.pose_mem_err"] <= 2
    assert rows["tiny"]["mean"]["fid.spread_yaw"] >= 0 and "spread_yaw" in text
    fid_line = [r for r in text.splitlines() if r.startswith("tiny")][-1]
    assert fid_line.count("+") + fid_line.count("-") >= 9 + 3 + 4  # memory cells, speeds, long probe
    # experiments/pose_spread.py: each proxy's spread and memory of the reference, frame by frame
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "pose_spread.py"), f"tiny={run / 'last.pt'}",
                           "--data", str(dev_data), "--poses", "4", "--at", "0,40"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [r.split() for r in done.stdout.splitlines() if r.startswith(("real continuation", "tiny"))]
    assert [r[2] if r[0] == "real" else r[1] for r in lines] == ["yaw", "pitch", "roll"] * 2
    assert all(r[r.index("/") + 1] == "1.00" for r in lines)  # frame 0 is the reference itself


def test_pose_spread_refuses_frames_beyond_its_horizon(tmp_path, dev_data):
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "pose_spread.py"), "--data", str(dev_data),
                           "--at", "0,400"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--at 0,400: frames between 0 and 200" in done.stderr
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "pose_spread.py"), "--data",
                           str(tmp_path / "nope.npz")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "nope.npz not found" in done.stderr


def test_targets_without_its_data_says_so(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "targets.py"), "--data", str(tmp_path / "nope.npz")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "nope.npz not found" in done.stderr
