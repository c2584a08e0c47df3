"""``suhmo data prepare`` at scale: a pool of worker processes, each video written to a packed
folder as it finishes, a rerun that skips what is done (also after SIGKILL), one report line
per skipped video. MediaPipe is replaced by the stand-in detector of ``prepare_standin``
(small OpenCV videos of drawn talking heads), named through $SUHMO_LANDMARK_DETECTOR."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import prepare_standin as S
from suhmo.cli import cli, run_cli
from suhmo.data import DataError
from suhmo.data.packed import PackedDataset
from suhmo.data.detect import landmarks_from_image
from suhmo.data.prepare import SKIPPED_FILE, prepare_to_pack, prepare_videos

ROOT = Path(__file__).resolve().parents[1]
STANDIN = "prepare_standin:standin_detector"
GOOD = ["head0.avi", "head1.avi", "head2.avi", "head3.avi"]


@pytest.fixture
def standin(monkeypatch, tmp_path):
    monkeypatch.setenv("SUHMO_LANDMARK_DETECTOR", STANDIN)
    log = tmp_path / "detector.log"
    monkeypatch.setenv("SUHMO_STANDIN_LOG", str(log))
    return log


def _calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def by_video(out: Path) -> dict:
    """``{(source, clip): (frames, meta)}`` of a packed folder: its content, whatever order
    the videos were written in."""
    ds = PackedDataset(out)
    recs = [json.loads(ln) for ln in (out / "clips.jsonl").read_text().splitlines()]
    return {(r["meta"]["source"], r["meta"]["clip"]): (np.array(ds.raw(i)), r["meta"]) for i, r in enumerate(recs)}


def skipped(out: Path) -> dict:
    path = out / SKIPPED_FILE
    recs = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
    return {r["source"]: r["reason"] for r in recs}


def assert_same(a: Path, b: Path) -> None:
    va, vb = by_video(a), by_video(b)
    assert sorted(va) == sorted(vb)
    for k in va:
        np.testing.assert_array_equal(va[k][0], vb[k][0], err_msg=str(k))
        assert va[k][1] == vb[k][1], k
    assert skipped(a) == skipped(b)


def test_one_line_per_video_and_a_rerun_redoes_nothing(tmp_path, standin):
    keys = S.video_set(tmp_path / "videos", good=2)
    assert keys == ["broken.mp4", "head0.avi", "head1.avi", "short.avi", "sub/empty.avi"]
    lines: list[str] = []
    out = tmp_path / "pack"
    s = prepare_to_pack(tmp_path / "videos", out, min_len=45, progress=False, echo=lines.append)
    assert len(lines) == 5 and sorted(ln.split(":")[0] for ln in lines) == keys
    line = {ln.split(":")[0]: ln for ln in lines}
    assert line["broken.mp4"].startswith("broken.mp4: skipped, unreadable (cannot open the video")
    assert line["sub/empty.avi"] == "sub/empty.avi: skipped, no face in any of its 50 frames"
    assert line["short.avi"].startswith("short.avi: skipped, too short: face in 100% of 25 frames")
    assert "longest clip 25 frames < 45" in line["short.avi"]
    assert "1 clip(s) kept (60 frames)" in line["head0.avi"]
    assert [r.reason for r in s.reports] == ["unreadable", None, None, "too short", "no face"]
    assert (s.clips, s.frames, s.already) == (2, 130, 0) and _calls(standin) == 4
    # the clips: pixels of the drawn faces, with where they came from
    got = by_video(out)
    assert sorted(got) == [("head0.avi", 0), ("head1.avi", 0)]
    frames, meta = got[("head0.avi", 0)]
    drawn = S.face_track(2.4, seed=10)
    assert frames.shape == (60, 68, 2)
    np.testing.assert_allclose(frames.min(1), drawn.min(1), atol=1.0)  # the face's box, read back
    np.testing.assert_allclose(frames.max(1), drawn.max(1), atol=1.0)
    assert meta["person"] == "head0" and meta["clips"] == 1 and meta["frame_wh"] == [320, 240]
    assert skipped(out) == {"short.avi": "too short", "sub/empty.avi": "no face"}
    # a rerun: nothing is detected again; the unreadable file is tried again (one open, no detection)
    lines.clear()
    s = prepare_to_pack(tmp_path / "videos", out, min_len=45, progress=False, echo=lines.append)
    assert lines[0] == f"{out}: continuing: 4 of 5 video(s) already done, not redone (2 with clips, 2 without: skipped.jsonl); 1 to do"
    assert lines[1:] == [line["broken.mp4"]] and _calls(standin) == 4 and s.already == 4 and s.clips == 2


def test_two_workers_write_what_one_does(tmp_path, standin, capsys):
    S.video_set(tmp_path / "videos", good=4)
    one, two = tmp_path / "one", tmp_path / "two"
    prepare_to_pack(tmp_path / "videos", one, progress=False, echo=lambda _: None)
    rc = run_cli(cli, ["data", "prepare", str(tmp_path / "videos"), "--out", str(two), "--workers", "2"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert f"wrote {two}: 4 clips, 300 frames at 25 fps; 4 video(s) added, 2 without a clip, 1 unreadable" in text
    assert sum(ln.startswith(("head", "short", "sub/", "broken")) for ln in text.splitlines()) == 7
    assert "video/s" in err or "s/video" in err  # the progress bar over videos, with its rate and ETA
    assert_same(one, two)
    # the small-data path: a .npz, in input order whatever order the workers finished in
    rc = run_cli(cli, ["data", "prepare", str(tmp_path / "videos"), "--out", str(tmp_path / "l.npz"),
                       "--workers", "2", "--no-progress"])
    assert rc == 0
    from suhmo.data import load_landmarks

    ls = load_landmarks(tmp_path / "l.npz", min_len=45)
    ref = by_video(one)
    assert list(ls.meta["source"]) == GOOD
    for c, src in zip(ls.clips, GOOD):
        np.testing.assert_array_equal(c, ref[(src, 0)][0])


def test_a_video_cut_off_between_its_clips_is_finished_without_duplicates(tmp_path, standin):
    videos = tmp_path / "videos"
    videos.mkdir()
    track = S.face_track(4.0, seed=5)
    blank = np.zeros((S.WH[1], S.WH[0], 3), np.uint8)
    # two shots 0.6 s apart (longer than --max-gap): one video, two clips
    S.write_video(videos / "zz_two", [S.draw(f) for f in track[:50]] + [blank] * 15 + [S.draw(f) for f in track[50:]])
    S.talking_head(videos / "a_one", 2.0, seed=6)
    full, cut = tmp_path / "full", tmp_path / "cut"
    prepare_to_pack(videos, full, progress=False, echo=lambda _: None)
    assert sorted(by_video(full)) == [("a_one.avi", 0), ("zz_two.avi", 0), ("zz_two.avi", 1)]
    prepare_to_pack(videos, cut, progress=False, echo=lambda _: None)
    # what a kill between the two clips of zz_two leaves: its second index line torn
    index = cut / "clips.jsonl"
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])
    before = _calls(standin)
    out: list[str] = []
    prepare_to_pack(videos, cut, progress=False, echo=out.append)
    assert "1 of 2 video(s) already done" in out[0] and out[1].startswith("zz_two.avi: ")
    assert _calls(standin) == before + 1
    assert_same(full, cut)


def test_a_worker_that_dies_is_one_line_and_a_rerun_continues(tmp_path, standin, capsys, monkeypatch):
    S.video_set(tmp_path / "videos", good=3, gate=2)  # head2 carries the mark
    monkeypatch.setenv("SUHMO_STANDIN_CRASH", "1")
    argv = ["data", "prepare", str(tmp_path / "videos"), "--out", str(tmp_path / "p"), "--workers", "2",
            "--no-progress"]
    assert run_cli(cli, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error: a worker process died") and "head2.avi" in err, err
    log = Path(re.search(r"its messages are in (\S+);", err).group(1))
    assert "stand-in detector: crashing on purpose" in log.read_text()
    log.unlink()
    monkeypatch.delenv("SUHMO_STANDIN_CRASH")
    assert run_cli(cli, argv) == 0
    text = capsys.readouterr().out
    assert "head2.avi: 80 frames" in text and "wrote" in text
    assert sorted(by_video(tmp_path / "p")) == [(f"head{i}.avi", 0) for i in range(3)]


def test_user_mistakes_are_one_line(tmp_path, standin, capsys, monkeypatch):
    S.video_set(tmp_path / "videos", good=1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")

    def err_of(*argv: str) -> str:
        rc = run_cli(cli, ["data", "prepare", str(tmp_path / "videos"), "--no-progress", *argv])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("Error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    assert "not empty" in err_of("--out", str(tmp_path / "busy"))
    assert run_cli(cli, ["data", "prepare", str(tmp_path / "videos"), "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    capsys.readouterr()
    assert "same options" in err_of("--out", str(tmp_path / "p"), "--min-len", "30")
    assert "fps" in err_of("--out", str(tmp_path / "p"), "--fps", "30")
    monkeypatch.setenv("SUHMO_LANDMARK_DETECTOR", "no_such_module:f")
    assert "cannot import" in err_of("--out", str(tmp_path / "q"))
    monkeypatch.setenv("SUHMO_LANDMARK_DETECTOR", "nocolon")
    assert "module:function" in err_of("--out", str(tmp_path / "q"))
    monkeypatch.setenv("SUHMO_LANDMARK_DETECTOR", STANDIN)
    (tmp_path / "novideo").mkdir()
    rc = run_cli(cli, ["data", "prepare", str(tmp_path / "novideo"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "no video files" in capsys.readouterr().err
    empty = tmp_path / "faceless"
    empty.mkdir()
    S.no_face(empty / "a")
    rc = run_cli(cli, ["data", "prepare", str(empty), "--out", str(tmp_path / "s"), "--no-progress"])
    text, err = capsys.readouterr()
    assert rc == 2 and "a.avi: skipped, no face" in text and "no clip of at least 45 frames" in err


def test_the_image_path_takes_the_same_detector(tmp_path, standin):
    import cv2

    lm = S.face_track(0.2, seed=3)[0]
    cv2.imwrite(str(tmp_path / "face.png"), S.draw(lm))
    pts = landmarks_from_image(tmp_path / "face.png")
    np.testing.assert_allclose(pts.min(0), lm.min(0), atol=1.0)
    assert _calls(standin) == 1 and "image" in standin.read_text()
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(DataError, match="no face found"):
        landmarks_from_image(tmp_path / "blank.png")
    with pytest.raises(DataError, match="no clip"):
        prepare_videos(S.no_face(tmp_path / "nf"), progress=False, echo=lambda _: None)


# ------------------------------------------------------------------------------ a real kill
def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _committed(out: Path) -> set[str]:
    done = set()
    for name in ("clips.jsonl", SKIPPED_FILE):
        p = out / name
        if p.exists():
            for ln in p.read_bytes().split(b"\n")[:-1]:  # whole lines only: the last may be half written
                done.add(json.loads(ln)["meta"]["source"] if name == "clips.jsonl" else json.loads(ln)["source"])
    return done


def _prepare_cmd(videos: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", "from suhmo.cli import main; main()", "data", "prepare", str(videos),
            "--out", str(out), "--workers", "2", "--no-progress"]


@pytest.mark.slow
def test_sigkill_midway_then_rerun_redoes_no_finished_video(tmp_path):
    videos = tmp_path / "videos"
    S.video_set(videos, good=4, gate=1)  # head1 stops at its first frame until the gate file exists
    env = {**os.environ, "SUHMO_LANDMARK_DETECTOR": STANDIN, "TMPDIR": str(tmp_path),  # the workers' log
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    gate = tmp_path / "gate"
    out = tmp_path / "pack"
    log = tmp_path / "run1.out"
    with open(log, "w") as f:
        proc = subprocess.Popen(_prepare_cmd(videos, out), cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT,
                                env={**env, "SUHMO_STANDIN_GATE": str(gate),
                                     "SUHMO_STANDIN_LOG": str(tmp_path / "calls1")})
    others = {"head0.avi", "head2.avi", "head3.avi", "short.avi", "sub/empty.avi"}
    deadline = time.monotonic() + 600  # a bound against a hang, not a timing check
    while not (Path(str(gate) + ".waiting").exists() and _committed(out) >= others):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    assert _committed(out) == others  # head1 is in flight in a worker
    workers = _children(proc.pid)
    assert len(workers) >= 2, workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the workers notice their parent is gone and exit by themselves
    deadline = time.monotonic() + 120
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, f"worker processes outlived the killed parent: {left}"
    # the rerun: only head1 (and the unreadable file, which is never recorded) are taken up again
    r = subprocess.run(_prepare_cmd(videos, out), cwd=tmp_path, capture_output=True, text=True,
                       env={**env, "SUHMO_STANDIN_LOG": str(tmp_path / "calls2")})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == (f"{out}: continuing: 5 of 7 video(s) already done, not redone (3 with clips, "
                        f"2 without: skipped.jsonl); 2 to do")
    assert sorted(ln.split(":")[0] for ln in lines[1:-1]) == ["broken.mp4", "head1.avi"]
    assert len((tmp_path / "calls2").read_text().splitlines()) == 1  # one video detected: head1
    assert lines[-1].endswith("1 video(s) added, 1 unreadable (tried again on a rerun), 5 already done")
    # the same as a run that was never interrupted
    ref = tmp_path / "ref"
    r = subprocess.run(_prepare_cmd(videos, ref), cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert_same(out, ref)
