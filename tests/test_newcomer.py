"""A newcomer's first hour (issue 16): the README's video-venv recipe is the code's and works,
a missing torch ends in one line naming the pinned install, `make test` names its slow tests,
the example outputs are git-ignored, and the search shows a progress line without flooding logs."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_video_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```\n(python3 -m venv \.venv-video\n.*?)```", text, re.S)
    assert block, "README: the .venv-video recipe block is missing"
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip()]


def test_readme_video_recipe_is_the_codes_and_pins_torch():
    from suhmo.data.detect import INSTALL_HINT, VIDEO_VENV_STEPS

    lines = _readme_video_block()
    assert lines[: len(VIDEO_VENV_STEPS)] == list(VIDEO_VENV_STEPS)
    installs = [ln for ln in lines if " install " in ln]
    assert installs[0].endswith("pip install torch==2.13.0")  # torch first and pinned
    assert all("torch" not in ln for ln in installs[1:] if "torch==2.13.0" not in ln)
    assert any("suhmo generate" in ln and "--image" in ln for ln in lines)
    assert all(step in INSTALL_HINT for step in VIDEO_VENV_STEPS)
    assert "data prepare" not in INSTALL_HINT  # the hint serves `generate --image` as well


def test_missing_torch_is_one_line_with_the_pinned_install(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from suhmo.cli import cli, run_cli\n"
            "sys.exit(run_cli(cli, ['generate', '--model', 'm', '--image', 'f.jpg', '--out', 'o.npz']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "pip install torch==2.13.0" in lines[0]
    assert "data prepare" not in lines[0] and "Traceback" not in r.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_names_the_slow_tests():
    r = subprocess.run(["make", "-n", "test"], capture_output=True, text=True, cwd=ROOT)
    cmds = [ln for ln in r.stdout.splitlines() if "pytest" in ln]
    assert any("-m slow" in c and " -v " in f" {c} " for c in cmds), cmds
    assert any('"not slow"' in c and "--durations" in c for c in cmds), cmds


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_example_outputs_are_ignored():
    paths = ["best-model/", "motion.npz", "motion.gif", "motion.mp4", "face.mp4", ".venv-video/", "mlruns/",
             "suhmo-runs/"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *paths], capture_output=True, text=True, cwd=ROOT)
    assert sorted(r.stdout.split()) == sorted(paths), r.stdout


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trials(states):
    return [SimpleNamespace(trial_id=f"t{i}", status=s, config={}) for i, s in enumerate(states)]


def test_progress_line_live_on_a_terminal_and_sparse_in_a_log(monkeypatch):
    from launch import progress as P

    clock = [1000.0]
    monkeypatch.setattr(P.time, "time", lambda: clock[0])
    trials = _trials(["TERMINATED", "RUNNING", "RUNNING", "ERROR", "PENDING"])
    # a terminal: redrawn in place, at most once a second, cleared before an event line
    tty, lines = _Tty(), []
    p = P.Progress([["fd_clip40", "min"]], lines.append, budget=8, stream=tty)
    p.setup()
    p.best[("t0", "fd_clip40")] = 12.5
    p.best[("t1", "fd_clip40")] = 9.25
    clock[0] += 65
    p.on_step_end(1, trials)
    p.on_step_end(2, trials)  # same second: not redrawn
    assert tty.getvalue() == "\r\x1b[K" + "progress 2/8 trials done, 2 running, 1m05s, best fd_clip40 9.25 (trial_t1)"
    assert lines == []  # nothing in the event lines
    p._line("done     trial_t0  finished 12 iterations")
    assert tty.getvalue().endswith("\r\x1b[K") and len(lines) == 1
    # a log: a plain line, at most once a minute
    log = []
    q = P.Progress([["fd_clip40", "min"]], log.append, budget=8, stream=io.StringIO())
    q.setup()
    for _ in range(30):  # 30 s of driver steps
        clock[0] += 1
        q.on_step_end(0, trials)
    assert log == []
    clock[0] += 31
    q.on_step_end(0, trials)
    q.on_step_end(0, trials)
    assert len(log) == 1 and log[0].endswith("progress 2/8 trials done, 2 running, 1m01s")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SUHMO_TEST_VIDEO_VENV") != "1",
                    reason="set SUHMO_TEST_VIDEO_VENV=1 to build the README's .venv-video (downloads MediaPipe)")
def test_video_venv_recipe_runs(tmp_path):
    """The README's steps, run as written in a copy of the checkout; then the commands the
    recipe is for start in it (torch, MediaPipe and suhmo import; generate --image runs)."""
    work = tmp_path / "checkout"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv*", ".git", "suhmo-runs", "*.egg-info"))
    for step in VIDEO_STEPS():
        r = subprocess.run(step, shell=True, cwd=work, capture_output=True, text=True, timeout=1500)
        if r.returncode != 0 and "mediapipe" in step and "No matching distribution" in r.stderr:
            pytest.skip(f"MediaPipe 0.10.21 cannot be installed here: {r.stderr.strip().splitlines()[-1]}")
        assert r.returncode == 0, (step, r.stderr[-3000:])
    py = work / ".venv-video" / "bin" / "python"
    r = subprocess.run([str(py), "-c", "import torch, mediapipe, numpy, suhmo.generate; "
                        "print(torch.__version__, mediapipe.__version__, numpy.__version__)"],
                       capture_output=True, text=True, cwd=work)
    assert r.returncode == 0 and r.stdout.startswith("2.13.0"), r.stderr
    # the modules the recipe gets through mediapipe's own requirements (the fast check relies on them)
    from test_video_venv_recipe import VIA_PINNED

    r = subprocess.run([str(py), "-c", "import json; from importlib.metadata import requires; "
                        "print(json.dumps(requires('mediapipe')))"], capture_output=True, text=True, cwd=work)
    reqs = json.loads(r.stdout)
    for pin, dist in VIA_PINNED.values():
        assert pin == "mediapipe" and any(q.split(";")[0].strip().startswith(dist) for q in reqs), reqs
    # suhmo generate --image, as the README shows it: a tiny model, a drawn face
    import cv2
    import numpy as np

    from suhmo.config import make_config
    from suhmo.data import load_landmarks, synthesize
    from suhmo.train import Trainer
    from test_data_prepare import draw_face

    cfg = make_config("tiny", overrides={"train.iterations": 2, "train.eval_every": 2, "eval.samples": 8,
                                         "data.synth_clips": 8, "data.synth_seconds": 4.0})
    Trainer(cfg, tmp_path / "model").fit()
    lm = synthesize(1, 2.4, seed=3).clips[0][0]
    cv2.imwrite(str(tmp_path / "face.jpg"), draw_face((lm - lm.mean(0)) * 1.3 + np.array([320.0, 250.0])))
    r = subprocess.run([str(work / ".venv-video" / "bin" / "suhmo"), "generate", "--checkpoint",
                        str(tmp_path / "model" / "last.pt"), "--image", str(tmp_path / "face.jpg"), "--frames", "20",
                        "--samples", "2", "--out", str(tmp_path / "motion.npz")], capture_output=True, text=True,
                       cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [c.shape for c in load_landmarks(tmp_path / "motion.npz").clips] == [(21, 68, 2)] * 2
    # suhmo data prepare with MediaPipe, two workers, into a packed folder
    from test_data_prepare import _write_video

    (tmp_path / "videos").mkdir()
    lm = synthesize(1, 2.4, seed=3).clips[0]
    _write_video(tmp_path / "videos" / "drawn.mp4", [draw_face((f - lm.reshape(-1, 2).mean(0)) * 1.3
                                                               + np.array([320.0, 250.0])) for f in lm], 25.0)
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video")
    r = subprocess.run([str(work / ".venv-video" / "bin" / "suhmo"), "data", "prepare", str(tmp_path / "videos"),
                        "--out", str(tmp_path / "pack"), "--workers", "2", "--no-progress"],
                       capture_output=True, text=True, cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "broken.mp4: skipped, unreadable" in r.stdout and "drawn.mp4: 60 frames" in r.stdout, r.stdout


def VIDEO_STEPS() -> list[str]:  # noqa: N802 - the README's install steps, in order
    return [ln for ln in _readme_video_block() if not ln.startswith(".venv-video/bin/suhmo")]
