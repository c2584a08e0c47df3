"""A stand-in landmark detector and the small videos it reads, for testing ``suhmo data prepare``
without MediaPipe (which lives in its own venv).

The videos are procedural talking heads (``suhmo.data.synth``) drawn by OpenCV as white dots
and contour lines on black. The detector reads the face back from a frame: it finds the drawn
pixels' bounding box and places a fixed 68-point face in it (head motion and face size come
back; the expression does not). It is deterministic, so two runs over the same videos give the
same clips. Named as ``SUHMO_LANDMARK_DETECTOR=prepare_standin:standin_detector``.

Test hooks, through the environment (worker processes inherit it):
- ``SUHMO_STANDIN_LOG``: a file that gets one line per call of the factory (one per video
  detected), so a test can count the videos a run really processed.
- ``SUHMO_STANDIN_CRASH``: set, a video whose frames carry the gate mark kills its process
  (as a native crash of a detector would), after a last message on stderr.
- ``SUHMO_STANDIN_GATE``: a file name. A video whose frames carry the gate mark (a white
  square in the top-left corner) stops at its first such frame until that file exists,
  after creating ``<gate>.waiting``: a test can hold one video in flight and kill the run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

WH = (320, 240)  # video frame size
MARK = 12  # side of the gate mark, px
_CONTOURS = [range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36)]
_LOOPS = [range(36, 42), range(42, 48), range(48, 60), range(60, 68)]


def _template() -> np.ndarray:
    """A fixed face: the first frame of a synthetic clip, scaled to its bounding box in [0, 1]."""
    from suhmo.data import synthesize

    lm = synthesize(1, 0.2, seed=0).clips[0][0].astype(np.float64)
    lo, hi = lm.min(0), lm.max(0)
    return (lm - lo) / (hi - lo)


def face_track(seconds: float, seed: int, fps: float = 25.0) -> np.ndarray:
    """Landmarks [T, 68, 2] of a synthetic talking head placed in a WH frame."""
    from suhmo.data import synthesize

    lm = synthesize(1, seconds, seed=seed, fps=fps).clips[0].astype(np.float64)
    return lm * 0.5  # the synthetic 640 x 480 frame -> 320 x 240


def draw(lm: np.ndarray, *, mark: bool = False) -> np.ndarray:
    import cv2

    img = np.zeros((WH[1], WH[0], 3), np.uint8)
    p = np.rint(lm).astype(np.int32)
    for r in _CONTOURS:
        cv2.polylines(img, [p[list(r)]], False, (255, 255, 255), 1)
    for r in _LOOPS:
        cv2.polylines(img, [p[list(r)]], True, (255, 255, 255), 1)
    for q in p:
        cv2.circle(img, (int(q[0]), int(q[1])), 2, (255, 255, 255), -1)
    if mark:
        img[:MARK, :MARK] = 255
    return img


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """Frames -> a Motion-JPEG .avi (every OpenCV build writes it)."""
    import cv2

    path = Path(path).with_suffix(".avi")
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, WH)
    assert wr.isOpened(), "OpenCV cannot write a Motion-JPEG video here"
    for f in frames:
        wr.write(f)
    wr.release()
    return path


def talking_head(path: Path, seconds: float, seed: int, *, mark: bool = False, fps: float = 25.0) -> Path:
    return write_video(path, [draw(f, mark=mark) for f in face_track(seconds, seed, fps)], fps)


def no_face(path: Path, frames: int = 50) -> Path:
    return write_video(path, [np.zeros((WH[1], WH[0], 3), np.uint8)] * frames)


def video_set(folder: Path, *, good: int = 4, gate: int | None = None) -> list[str]:
    """``good`` talking heads (2.4 s and up), one without a face, one too short (1 s), one
    corrupt file; the good video number ``gate`` carries the gate mark. Returns the keys."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(good):
        talking_head(folder / f"head{i}", 2.4 + 0.4 * i, seed=10 + i, mark=i == gate)
    (folder / "sub").mkdir(exist_ok=True)
    no_face(folder / "sub" / "empty")
    talking_head(folder / "short", 1.0, seed=99)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


class _Standin:
    def __init__(self) -> None:
        self.template = _template()

    def __call__(self, bgr: np.ndarray):
        gray = bgr.max(axis=2)
        if gray[:MARK, :MARK].mean() > 128:
            _gate()
        gray = gray.copy()
        gray[:MARK + 2, :MARK + 2] = 0
        ys, xs = np.nonzero(gray > 100)
        if len(xs) < 40:
            return None
        x0, x1, y0, y1 = xs.min() + 2, xs.max() - 2, ys.min() + 2, ys.max() - 2  # the dots' radius
        return (self.template * [x1 - x0, y1 - y0] + [x0, y0]).astype(np.float32)


def _gate() -> None:
    if os.environ.get("SUHMO_STANDIN_CRASH"):
        print("stand-in detector: crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)
    gate = os.environ.get("SUHMO_STANDIN_GATE")
    if not gate:
        return
    Path(gate + ".waiting").touch()
    while not Path(gate).exists():
        time.sleep(0.05)


def standin_detector(static: bool = False) -> _Standin:
    log = os.environ.get("SUHMO_STANDIN_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {'image' if static else 'video'}\n")
    return _Standin()
