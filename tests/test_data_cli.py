"""``suhmo data check | synth | prepare`` end to end through the CLI entry point."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from suhmo.cli import cli, run_cli
from suhmo.data import load_landmarks


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = run_cli(cli, list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_synth_then_check_json(tmp_path, capsys):
    out = tmp_path / "s.npz"
    rc, text, _ = _run(capsys, "data", "synth", "--clips", "4", "--seconds", "2.4", "--seed", "3",
                       "--out", str(out))
    assert rc == 0 and "4 clips" in text
    ls = load_landmarks(out)
    assert len(ls) == 4 and ls.num_frames == 4 * 60
    rc, text, err = _run(capsys, "data", "check", str(out), "--json")
    assert rc == 0, err
    summary = json.loads(text.strip().splitlines()[-1])
    assert summary["clips"] == 4 and summary["fps"] == 25.0 and summary["frames"] == ls.num_frames
    assert summary["persons"] == 4 and summary["groups"] == 2
    assert "roll" in text and "speed" in text and "mouth" in text


def test_check_dev_data_json(dev_data, capsys):
    rc, text, _ = _run(capsys, "data", "check", str(dev_data), "--json")
    assert rc == 0
    s = json.loads(text.strip().splitlines()[-1])
    assert (s["clips"], s["frames"], s["fps"], s["persons"]) == (23, 4656, 25.0, 22)
    assert s["clip_frames"]["min"] == 75 and s["clip_frames"]["max"] == 840


def test_check_resample_notice_and_short_clip(tmp_path, capsys):
    flat = np.random.default_rng(0).random((120, 68, 2)).astype(np.float32)
    p = tmp_path / "fps50.npz"
    np.savez_compressed(p, flat=flat, offsets=np.array([0, 120]), fps=np.float32(50))
    rc, text, err = _run(capsys, "data", "check", str(p), "--min-len", "45")
    assert rc == 0 and "notice:" in text and "50 fps to 25 fps" in text
    rc, text, err = _run(capsys, "data", "check", str(p), "--min-len", "100")
    assert rc == 2 and "clip 0" in err and "shorter than a training window" in err and "Traceback" not in err


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is not None, reason="mediapipe is installed here")
def test_prepare_without_mediapipe_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "a.mp4").write_bytes(b"x")
    rc, _, err = _run(capsys, "data", "prepare", str(tmp_path), "--out", str(tmp_path / "o.npz"))
    assert rc == 2 and "mediapipe==0.10.21" in err and len(err.strip().splitlines()) == 1
