"""Real videos and images -> 68-point landmarks (MediaPipe Face Mesh).

Detection uses MediaPipe Face Mesh from ``mediapipe==0.10.21`` (its wheel bundles the face
models, so it runs offline; newer releases do not). MediaPipe pins numpy<2 and its own
OpenCV, so it lives in a separate virtual environment (README, "Real videos")::

    python3 -m venv .venv-video
    .venv-video/bin/pip install torch==2.13.0
    .venv-video/bin/pip install "mediapipe==0.10.21" "numpy<2" click pyyaml tqdm pillow pydantic
    .venv-video/bin/pip install --no-deps -e .
    .venv-video/bin/suhmo data prepare VIDEO_DIR --out landmarks.npz
    .venv-video/bin/suhmo generate --model best-model --image FACE.jpg --out motion.npz

(:data:`VIDEO_VENV_STEPS`; the README shows the same steps and a test checks they agree.)

It is imported lazily: everything else in ``suhmo`` works without it, and the pure steps
below (mesh mapping, gap filling, cut splitting, resampling) are plain numpy.

Pipeline per video: detect 478 mesh points per frame (video mode, one face, refined
landmarks) -> map to the iBUG 68 layout with :data:`LAYOUT_68` (each point one mesh vertex or
the midpoint of two; the table of ``../shared/data/real_dev_landmarks.npz``'s ``layout``) ->
interpolate detection gaps of at most ``max_gap_s`` seconds, split at longer gaps ->
split at shot cuts (most points jump by a large fraction of the face size between two
frames) -> resample to ``fps`` -> drop clips shorter than ``min_len`` frames.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from suhmo.data.dataset import DataError, LandmarkSet, resample_clip

# iBUG/300-W 68-point (0-based) <- MediaPipe Face Mesh vertex (midpoint when two).
LAYOUT_68: tuple[tuple[int, ...], ...] = (
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (149,), (176,), (152,), (377,), (378,),
    (365,), (397,), (288,), (323,), (454,), (356,),  # jaw 0-16
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),  # brows 17-26
    (168,), (197,), (5,), (4,), (75,), (97,), (2,), (326,), (305,),  # nose 27-35
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),  # eyes
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (405,), (314,), (17,), (84,), (91,),  # outer lips
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),  # inner lips 60-67
)
MESH_POINTS = 478
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# The separate environment for MediaPipe (it pins numpy<2 and its own OpenCV). torch first and
# pinned, as everywhere (never let pip pick a multi-GB CUDA build): `suhmo generate --image`
# runs the generator in this environment too.
VIDEO_VENV_STEPS = (
    "python3 -m venv .venv-video",
    ".venv-video/bin/pip install torch==2.13.0",
    '.venv-video/bin/pip install "mediapipe==0.10.21" "numpy<2" click pyyaml tqdm pillow pydantic',
    ".venv-video/bin/pip install --no-deps -e .",
)
INSTALL_HINT = ("install it in a separate venv (README, 'Real videos'): " + " && ".join(VIDEO_VENV_STEPS)
                + "; then run the same suhmo command as .venv-video/bin/suhmo ...")


def parse_layout(text: str) -> tuple[tuple[int, ...], ...]:
    """Parse a ``layout`` string such as the dev npz's (``"... [[127], [234], [132, 58], ...]"``)."""
    start = text.find("[[")
    if start < 0:
        raise DataError(f"layout string has no [[...]] table: {text[:60]!r}")
    table = ast.literal_eval(text[start:text.rfind("]]") + 2])
    out = tuple(tuple(int(v) for v in row) for row in table)
    if len(out) != 68 or any(not 1 <= len(r) <= 2 for r in out):
        raise DataError(f"layout table has {len(out)} rows; expected 68 rows of 1 or 2 vertices")
    return out


def _layout_matrix() -> np.ndarray:
    m = np.zeros((68, MESH_POINTS), dtype=np.float32)
    for i, row in enumerate(LAYOUT_68):
        m[i, list(row)] = 1.0 / len(row)
    return m


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """``[..., 478, >=2]`` Face Mesh points -> ``[..., 68, 2]`` (x, y) in the same units."""
    mesh = np.asarray(mesh, dtype=np.float32)
    if mesh.shape[-2] != MESH_POINTS:
        raise DataError(f"expected {MESH_POINTS} Face Mesh points, got {mesh.shape[-2]}")
    return np.einsum("kp,...pc->...kc", _layout_matrix(), mesh[..., :2]).astype(np.float32)


def fill_gaps(track: np.ndarray, max_gap: int) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Fill missed detections (frames that are all NaN) of ``track [T, 68, 2]``.

    Interior gaps of at most ``max_gap`` frames are linearly interpolated; longer gaps split
    the track; leading and trailing gaps are dropped. Returns ``([(start_frame, segment)],
    number of interpolated frames)``.
    """
    track = np.asarray(track, dtype=np.float32)
    ok = np.isfinite(track).all(axis=(1, 2))
    segments: list[tuple[int, np.ndarray]] = []
    n_interp = 0
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return segments, 0
    # split where the gap between consecutive detections is too long
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    for run in np.split(idx, breaks + 1):
        a, b = int(run[0]), int(run[-1]) + 1
        seg = track[a:b].copy()
        miss = ~ok[a:b]
        if miss.any():
            t = np.arange(b - a)
            good = ~miss
            flat = seg.reshape(len(seg), -1)
            for j in range(flat.shape[1]):
                flat[miss, j] = np.interp(t[miss], t[good], flat[good, j])
            seg = flat.reshape(seg.shape)
            n_interp += int(miss.sum())
        segments.append((a, seg))
    return segments, n_interp


def find_cuts(clip: np.ndarray, *, jump: float = 0.25, share: float = 0.8) -> np.ndarray:
    """Frame indices t where a shot cut (or a face switch) happens between t-1 and t: at least
    ``share`` of the points move by more than ``jump`` x the face size (the diagonal of the
    frame-(t-1) landmark bounding box)."""
    clip = np.asarray(clip, dtype=np.float64)
    if len(clip) < 2:
        return np.zeros(0, dtype=np.int64)
    size = np.linalg.norm(clip.max(1) - clip.min(1), axis=-1)[:-1]  # [T-1]
    move = np.linalg.norm(np.diff(clip, axis=0), axis=-1)  # [T-1, 68]
    frac = (move > jump * np.maximum(size, 1e-9)[:, None]).mean(1)
    return np.flatnonzero(frac >= share) + 1


def split_at_cuts(clip: np.ndarray, **kw) -> list[np.ndarray]:
    cuts = find_cuts(clip, **kw)
    return [p for p in np.split(np.asarray(clip), cuts) if len(p)]


@dataclass
class VideoReport:
    video: str
    frames: int = 0
    src_fps: float = 0.0
    detected: int = 0
    interpolated: int = 0
    cuts: int = 0
    kept: list[int] = field(default_factory=list)  # frames per kept clip (after resampling)
    dropped_short: int = 0
    error: Optional[str] = None

    def line(self) -> str:
        if self.error:
            return f"{self.video}: skipped ({self.error})"
        rate = self.detected / max(self.frames, 1)
        return (f"{self.video}: {self.frames} frames @ {self.src_fps:g} fps, face in {rate:.0%}, "
                f"{self.interpolated} interpolated, {self.cuts} cut(s), {len(self.kept)} clip(s) kept "
                f"({sum(self.kept)} frames), {self.dropped_short} too short")


def track_to_clips(track: np.ndarray, src_fps: float, *, fps: float = 25.0, min_len: int = 45,
                   max_gap_s: float = 0.2, cut_jump: float = 0.25, cut_share: float = 0.8,
                   report: Optional[VideoReport] = None) -> list[np.ndarray]:
    """Raw per-frame detections ``[T, 68, 2]`` (NaN = missed) -> clean clips at ``fps``."""
    max_gap = int(round(max_gap_s * src_fps))
    segments, n_interp = fill_gaps(track, max_gap)
    out = []
    n_cuts = dropped = 0
    for _, seg in segments:
        parts = split_at_cuts(seg, jump=cut_jump, share=cut_share)
        n_cuts += len(parts) - 1
        for p in parts:
            r = resample_clip(p, src_fps, fps)
            if len(r) >= min_len:
                out.append(r)
            else:
                dropped += 1
    if report is not None:
        report.detected = int(np.isfinite(track).all(axis=(1, 2)).sum())
        report.interpolated, report.cuts, report.dropped_short = n_interp, n_cuts, dropped
        report.kept = [len(c) for c in out]
    return out


# ---------------------------------------------------------------------------------- MediaPipe
def _mediapipe():
    import os

    os.environ.setdefault("GLOG_minloglevel", "2")  # keep MediaPipe's C++ start-up chatter quiet
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import mediapipe as mp  # noqa: F401
    except ImportError as e:
        raise DataError(f"video landmarks need MediaPipe Face Mesh (mediapipe==0.10.21), which is not "
                        f"importable here ({e}); {INSTALL_HINT}") from None
    return mp


def _face_mesh(static: bool):
    mp = _mediapipe()
    return mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=1,
                                           refine_landmarks=True, min_detection_confidence=0.5,
                                           min_tracking_confidence=0.5)


def _detect(mesh, bgr: np.ndarray) -> Optional[np.ndarray]:
    import cv2

    h, w = bgr.shape[:2]
    res = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not res.multi_face_landmarks:
        return None
    lm = res.multi_face_landmarks[0].landmark
    pts = np.array([[p.x * w, p.y * h] for p in lm], dtype=np.float32)
    return mesh_to_68(pts[:MESH_POINTS])


def detect_video(path: str | Path, *, progress: bool = True) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Per-frame 68-point landmarks of a video in pixels: ``(track [T, 68, 2] with NaN rows for
    missed frames, fps, (width, height))``."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open the video (unsupported format or corrupt file)")
    src_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    n_hint = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    wh = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    if not (src_fps > 0 and np.isfinite(src_fps)):
        cap.release()
        raise DataError(f"{path}: the video reports no frame rate")
    from tqdm import tqdm

    rows = []
    nan = np.full((68, 2), np.nan, dtype=np.float32)
    with _face_mesh(static=False) as mesh, tqdm(total=n_hint or None, desc=Path(path).name,
                                                unit="frame", disable=not progress, leave=False) as bar:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            pts = _detect(mesh, frame)
            rows.append(nan if pts is None else pts)
            bar.update(1)
    cap.release()
    if not rows:
        raise DataError(f"{path}: no frame could be decoded")
    return np.stack(rows), src_fps, wh


def prepare_videos(video_dir: str | Path, *, fps: float = 25.0, min_len: int = 45,
                   max_gap_s: float = 0.2, progress: bool = True,
                   echo: Callable[[str], None] = print) -> tuple[LandmarkSet, list[VideoReport]]:
    """Every video in ``video_dir`` (or one video file) -> a LandmarkSet in pixel coordinates."""
    root = Path(video_dir)
    if root.is_file():
        videos = [root]
    elif root.is_dir():
        videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    else:
        raise DataError(f"{root}: no such file or folder")
    if not videos:
        raise DataError(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    _mediapipe()  # fail early with the install hint
    clips, meta = [], {"person": [], "source": [], "frame_wh": [], "src_fps": [], "det_rate": [],
                       "n_interp": [], "origin": [], "kind": []}
    reports = []
    for v in videos:
        rep = VideoReport(video=str(v.relative_to(root) if root.is_dir() else v.name))
        try:
            track, src_fps, wh = detect_video(v, progress=progress)
        except DataError as e:
            rep.error = str(e).split(": ", 1)[-1]
            reports.append(rep)
            echo(rep.line())
            continue
        rep.frames, rep.src_fps = len(track), src_fps
        got = track_to_clips(track, src_fps, fps=fps, min_len=min_len, max_gap_s=max_gap_s, report=rep)
        for c in got:
            clips.append(c)
            meta["person"].append(v.stem)
            meta["source"].append(str(v))
            meta["frame_wh"].append(wh)
            meta["src_fps"].append(src_fps)
            meta["det_rate"].append(rep.detected / max(rep.frames, 1))
            meta["n_interp"].append(rep.interpolated)
            meta["origin"].append("video")
            meta["kind"].append("unknown")
        reports.append(rep)
        echo(rep.line())
    if not clips:
        raise DataError(f"{root}: no clip of at least {min_len} frames with a detected face "
                        f"in {len(videos)} video(s)")
    arrays = {k: np.asarray(v) for k, v in meta.items()}
    arrays["frame_wh"] = arrays["frame_wh"].astype(np.int32)
    arrays["src_fps"] = arrays["src_fps"].astype(np.float32)
    arrays["det_rate"] = arrays["det_rate"].astype(np.float32)
    arrays["n_interp"] = arrays["n_interp"].astype(np.int32)
    layout = ("iBUG/300-W 68-point, 0-based; MediaPipe Face Mesh vertices (midpoint when two) "
              + str([list(r) for r in LAYOUT_68]))
    attrs = {"coords": np.asarray("pixels of the original video frame, x right, y down"),
             "layout": np.asarray(layout)}
    return LandmarkSet(clips=clips, fps=float(fps), meta=arrays, path=None, attrs=attrs), reports


def landmarks_from_image(path: str | Path, *, normalize: bool = False) -> np.ndarray:
    """68-point landmarks ``[68, 2]`` of the (largest-confidence) face in a still image, in
    pixels, or bbox-normalised to the [0, 1] frame when ``normalize`` (ready as a reference
    pose for ``suhmo generate``)."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image not found")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{p}: not a readable image")
    with _face_mesh(static=True) as mesh:
        pts = _detect(mesh, img)
    if pts is None:
        raise DataError(f"{p}: no face found by MediaPipe Face Mesh")
    if normalize:
        from suhmo.data.normalize import normalize_clip

        pts = normalize_clip(pts[None], "bbox", 1.1)[0][0]
    return pts
