"""Real videos and images -> 68-point landmarks (MediaPipe Face Mesh).

Detection uses MediaPipe Face Mesh from ``mediapipe==0.10.21`` (its wheel bundles the face
models, so it runs offline; newer releases do not). MediaPipe pins numpy<2 and its own
OpenCV, so it lives in a separate virtual environment (README, "Real videos")::

    python3 -m venv .venv-video
    .venv-video/bin/pip install torch==2.13.0
    .venv-video/bin/pip install "mediapipe==0.10.21" "numpy<2" click pyyaml tqdm pillow "pydantic>=2.5,<3"
    .venv-video/bin/pip install --no-deps -e .
    .venv-video/bin/suhmo data prepare VIDEO_DIR --out landmarks --workers 4
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

At scale (:func:`prepare_to_pack`): a pool of spawned worker processes runs that pipeline one
video each (:func:`process_video`); the parent, the only writer, commits each finished video's
clips to a packed dataset folder at once, and records the videos that gave no clip in its
``skipped.jsonl``, so that a rerun after a kill redoes no finished video. The detector is
named ``module:function`` (:data:`DETECTOR_ENV`), so that workers can import it and tests can
replace MediaPipe.
"""

from __future__ import annotations

import ast
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from suhmo.data.dataset import DataError, LandmarkSet, check_resampled_size, resample_clip

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
    '.venv-video/bin/pip install "mediapipe==0.10.21" "numpy<2" click pyyaml tqdm pillow "pydantic>=2.5,<3"',
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
    longest: int = 0  # frames of the longest clip, kept or not (after resampling)
    min_len: int = 0
    error: Optional[str] = None  # the video could not be read (or its detection failed)
    failed: bool = False  # error came from an unexpected exception, not from an unreadable file

    @property
    def reason(self) -> Optional[str]:
        """Why the video gave no clip: "unreadable", "failed", "no face", "too short"; None if it gave some."""
        if self.error:
            return "failed" if self.failed else "unreadable"
        if self.kept:
            return None
        return "no face" if self.detected == 0 else "too short"

    def line(self) -> str:
        reason = self.reason
        if reason in ("unreadable", "failed"):
            return f"{self.video}: skipped, {reason} ({self.error})"
        if reason == "no face":
            return f"{self.video}: skipped, no face in any of its {self.frames} frames"
        rate = self.detected / max(self.frames, 1)
        if reason == "too short":
            return (f"{self.video}: skipped, too short: face in {rate:.0%} of {self.frames} frames @ "
                    f"{self.src_fps:g} fps, longest clip {self.longest} frames < {self.min_len} (--min-len)")
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
    n_cuts = dropped = longest = 0
    for _, seg in segments:
        parts = split_at_cuts(seg, jump=cut_jump, share=cut_share)
        n_cuts += len(parts) - 1
        for p in parts:
            check_resampled_size([len(p)], [src_fps], fps, "video track")
            r = resample_clip(p, src_fps, fps)
            longest = max(longest, len(r))
            if len(r) >= min_len:
                out.append(r)
            else:
                dropped += 1
    if report is not None:
        report.detected = int(np.isfinite(track).all(axis=(1, 2)).sum())
        report.interpolated, report.cuts, report.dropped_short = n_interp, n_cuts, dropped
        report.kept = [len(c) for c in out]
        report.longest, report.min_len = longest, int(min_len)
    return out


# ---------------------------------------------------------------------------------- detectors
# A landmark detector is named "module:function". The function is a factory: called with
# ``static`` (True for still images, False for the frames of one video, in order) it returns a
# callable ``detect(bgr uint8 [H, W, 3]) -> [68, 2] float32 pixels, or None for no face``,
# which may have a ``close()``. A factory is called once per video (or image), so a detector
# may track a face from frame to frame. The default is MediaPipe Face Mesh; the environment
# variable SUHMO_LANDMARK_DETECTOR names another (the tests use a stand-in that runs without
# MediaPipe). Worker processes receive the name and import it themselves.
DETECTOR_ENV = "SUHMO_LANDMARK_DETECTOR"
DEFAULT_DETECTOR = "suhmo.data.prepare:mediapipe_detector"


def detector_name(name: Optional[str] = None) -> str:
    """The detector to use: ``name``, else $SUHMO_LANDMARK_DETECTOR, else MediaPipe Face Mesh."""
    import os

    return name or os.environ.get(DETECTOR_ENV) or DEFAULT_DETECTOR


def load_detector(name: Optional[str] = None) -> Callable:
    """Import the detector factory ``module:function`` (see :data:`DETECTOR_ENV`)."""
    import importlib

    name = detector_name(name)
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise DataError(f"landmark detector {name!r} (${DETECTOR_ENV}): expected module:function")
    if name == DEFAULT_DETECTOR:
        _mediapipe()  # its own error, with the install hint
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise DataError(f"landmark detector {name!r} (${DETECTOR_ENV}): cannot import it ({e})") from None
    if not callable(factory):
        raise DataError(f"landmark detector {name!r} (${DETECTOR_ENV}): not a function")
    return factory


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


@contextmanager
def _quiet_native_stderr():
    """Send what native code writes to file descriptor 2 to /dev/null meanwhile (MediaPipe's
    C++ start-up messages, two or three lines per video, that no setting turns off)."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _MeshDetector:
    def __init__(self, static: bool):
        with _quiet_native_stderr():
            self.mesh = _face_mesh(static)
        self.started = False

    def __call__(self, bgr: np.ndarray) -> Optional[np.ndarray]:
        import cv2

        h, w = bgr.shape[:2]
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.started:
            res = self.mesh.process(rgb)
        else:  # the graph's first frame prints its own warnings
            with _quiet_native_stderr():
                res = self.mesh.process(rgb)
            self.started = True
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([[p.x * w, p.y * h] for p in lm], dtype=np.float32)
        return mesh_to_68(pts[:MESH_POINTS])

    def close(self) -> None:
        self.mesh.close()


def mediapipe_detector(static: bool = False) -> Callable[[np.ndarray], Optional[np.ndarray]]:
    """The default detector factory: MediaPipe Face Mesh (video mode unless ``static``), one
    face, refined landmarks, mapped to 68 points with :data:`LAYOUT_68`."""
    return _MeshDetector(static)


def _run_detector(factory: Callable, static: bool, frames) -> list[Optional[np.ndarray]]:
    det = factory(static)
    try:
        out = []
        for frame in frames:
            pts = det(frame)
            if pts is not None:
                pts = np.asarray(pts, dtype=np.float32)
                if pts.shape != (68, 2):
                    raise DataError(f"the landmark detector returned shape {pts.shape}, expected (68, 2)")
            out.append(pts)
        return out
    finally:
        close = getattr(det, "close", None)
        if close is not None:
            close()


def detect_video(path: str | Path, *, progress: bool = True,
                 detector: Optional[str] = None) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Per-frame 68-point landmarks of a video in pixels: ``(track [T, 68, 2] with NaN rows for
    missed frames, fps, (width, height))``."""
    import os

    import cv2

    factory = load_detector(detector)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own messages: the report line says it
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"{path}: cannot open the video (unsupported format or corrupt file)")
        src_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        n_hint = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wh = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if not (src_fps > 0 and np.isfinite(src_fps)):
            raise DataError(f"{path}: the video reports no frame rate")
        from tqdm import tqdm

        def frames():
            with tqdm(total=n_hint or None, desc=Path(path).name, unit="frame", disable=not progress,
                      leave=False) as bar:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        return
                    yield frame
                    bar.update(1)

        found = _run_detector(factory, False, frames())
    finally:
        cap.release()
    if not found:
        raise DataError(f"{path}: no frame could be decoded")
    nan = np.full((68, 2), np.nan, dtype=np.float32)
    return np.stack([nan if p is None else p for p in found]), src_fps, wh


# ------------------------------------------------------------------------------ one video
@dataclass
class VideoTask:
    path: str
    key: str  # the video's path relative to VIDEO_DIR: its ``source`` in the output
    fps: float
    min_len: int
    max_gap_s: float
    detector: str


@dataclass
class VideoResult:
    key: str
    report: VideoReport
    clips: list[np.ndarray]
    meta: list[dict]


def process_video(task: VideoTask, progress: bool = False) -> VideoResult:
    """Detect, clean and split one video: its clips (pixels, at ``task.fps``), their metadata,
    and its report. Never raises for a bad video: the report says why it gave nothing."""
    rep = VideoReport(video=task.key)
    try:
        track, src_fps, wh = detect_video(task.path, progress=progress, detector=task.detector)
        rep.frames, rep.src_fps = len(track), src_fps
        clips = track_to_clips(track, src_fps, fps=task.fps, min_len=task.min_len, max_gap_s=task.max_gap_s,
                               report=rep)
    except DataError as e:
        rep.error = str(e).split(": ", 1)[-1] if str(e).startswith(task.path) else str(e)
        return VideoResult(task.key, rep, [], [])
    except Exception as e:  # a detector's own failure on one video must not stop the others
        rep.error, rep.failed = f"{type(e).__name__}: {e}", True
        return VideoResult(task.key, rep, [], [])
    person = Path(task.key).stem
    meta = [{"person": person, "source": task.key, "clip": i, "clips": len(clips), "frame_wh": list(wh),
             "src_fps": src_fps, "det_rate": rep.detected / max(rep.frames, 1), "n_interp": rep.interpolated,
             "origin": "video", "kind": "unknown"} for i in range(len(clips))]
    return VideoResult(task.key, rep, clips, meta)


def _worker_init(parent: int, log: str) -> None:
    """In a worker: write what goes to stderr (MediaPipe's native start-up messages, a crash's
    last words) to ``log`` instead of between the report lines, and exit when the parent dies
    (a killed ``suhmo data prepare`` leaves no worker running behind it)."""
    import os
    import threading
    import time

    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 2)
    os.close(fd)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="suhmo-parent-watch").start()


def run_videos(tasks: list[VideoTask], *, workers: int = 1, progress: bool = True,
               echo: Callable[[str], None] = print, on_result: Optional[Callable[[VideoResult], None]] = None):
    """Process ``tasks`` with ``workers`` processes (spawned; 1: in this process), calling
    ``on_result`` in this process as each video finishes, in the order they finish, and
    printing its report line above a progress bar over the videos (with an ETA)."""
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    import multiprocessing as mp

    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="video", desc="prepare", disable=not progress, dynamic_ncols=True)

    def finish(res: VideoResult) -> None:
        if on_result is not None:
            on_result(res)
        with bar.external_write_mode():
            echo(res.report.line())
        bar.update(1)

    try:
        if workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                finish(process_video(t, progress=progress))
            return
        import tempfile

        fd, log = tempfile.mkstemp(prefix="suhmo-prepare-workers-", suffix=".log")
        os.close(fd)
        keep_log = False
        pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(), log))
        try:
            queue = iter(tasks)
            running: dict = {}
            ahead = 2 * workers  # tasks handed out ahead of the results, not the whole list at once
            try:
                while True:
                    for t in queue:
                        running[pool.submit(process_video, t)] = t
                        if len(running) >= ahead:
                            break
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    ok = [f for f in done if f.exception() is None]
                    for f in ok:
                        running.pop(f)
                        finish(f.result())
                    for f in done:
                        if f not in ok:
                            f.result()  # raises: the pool broke (or a bug in this module)
            except BrokenProcessPool:
                busy = sorted(t.key for t in running.values())
                keep_log = True
                raise DataError(f"a worker process died (out of memory, or the detector crashed) while on one "
                                f"of: {', '.join(busy[:4])}{' ...' if len(busy) > 4 else ''}; its messages are "
                                f"in {log}; rerun the same command: videos already written are kept") from None
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if not keep_log:
                os.unlink(log)
    finally:
        bar.close()


def list_videos(video_dir: str | Path) -> tuple[Path, list[tuple[Path, str]]]:
    """``(root, [(video, key)])``: the videos under ``video_dir`` (or the one video file), each
    with its path relative to the folder as its key, sorted by key."""
    root = Path(video_dir)
    if root.is_file():
        return root, [(root, root.name)]
    if not root.is_dir():
        raise DataError(f"{root}: no such file or folder")
    videos = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*")
                    if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not videos:
        raise DataError(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    return root, [(p, k) for k, p in videos]


def _attrs(detector: str) -> dict[str, np.ndarray]:
    layout = ("iBUG/300-W 68-point, 0-based; MediaPipe Face Mesh vertices (midpoint when two) "
              + str([list(r) for r in LAYOUT_68]))
    attrs = {"coords": np.asarray("pixels of the original video frame, x right, y down"),
             "layout": np.asarray(layout)}
    if detector != DEFAULT_DETECTOR:
        attrs["detector"] = np.asarray(detector)
    return attrs


def prepare_videos(video_dir: str | Path, *, fps: float = 25.0, min_len: int = 45,
                   max_gap_s: float = 0.2, progress: bool = True, workers: int = 1,
                   detector: Optional[str] = None,
                   echo: Callable[[str], None] = print) -> tuple[LandmarkSet, list[VideoReport]]:
    """Every video in ``video_dir`` (or one video file) -> a LandmarkSet in pixel coordinates,
    held in memory (the small-data path; :func:`prepare_to_pack` writes a packed folder)."""
    root, videos = list_videos(video_dir)
    name = detector_name(detector)
    load_detector(name)  # fail early, with the install hint
    tasks = [VideoTask(str(p), k, float(fps), int(min_len), float(max_gap_s), name) for p, k in videos]
    results: dict[str, VideoResult] = {}
    run_videos(tasks, workers=workers, progress=progress, echo=echo,
               on_result=lambda r: results.__setitem__(r.key, r))
    clips, metas = [], []
    for t in tasks:  # input order, whatever order the workers finished in
        clips += results[t.key].clips
        metas += results[t.key].meta
    if not clips:
        raise DataError(f"{root}: no clip of at least {min_len} frames with a detected face "
                        f"in {len(videos)} video(s)")
    keys = ("person", "source", "frame_wh", "src_fps", "det_rate", "n_interp", "origin", "kind")
    arrays = {k: np.asarray([m[k] for m in metas]) for k in keys}
    arrays["frame_wh"] = arrays["frame_wh"].astype(np.int32)
    arrays["src_fps"] = arrays["src_fps"].astype(np.float32)
    arrays["det_rate"] = arrays["det_rate"].astype(np.float32)
    arrays["n_interp"] = arrays["n_interp"].astype(np.int32)
    return (LandmarkSet(clips=clips, fps=float(fps), meta=arrays, path=None, attrs=_attrs(name)),
            [results[t.key].report for t in tasks])


# ------------------------------------------------------------------------ a packed folder
SKIPPED_FILE = "skipped.jsonl"


@dataclass
class PrepareSummary:
    out: Path
    videos: int = 0  # found under VIDEO_DIR
    already: int = 0  # done by an earlier run: not redone
    reports: list[VideoReport] = field(default_factory=list)  # this run's videos
    clips: int = 0  # in the packed folder at the end
    frames: int = 0


def _read_skipped(out: Path) -> dict[str, dict]:
    """The videos an earlier run finished without a clip (``skipped.jsonl``), by key; a torn
    last line (a kill during its write) is cut off, as the packed index's is."""
    import json

    path = out / SKIPPED_FILE
    if not path.exists():
        return {}
    done: dict[str, dict] = {}
    pos = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                rec = json.loads(raw)
                done[str(rec["source"])] = rec
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path}: line {len(done) + 1}: not a skipped-video record") from None
            pos += len(raw)
    if pos < path.stat().st_size:
        with open(path, "rb+") as f:
            f.truncate(pos)
    return done


def _append_skipped(out: Path, rec: dict) -> None:
    """Commit one skipped-video record: a single write of one line on an O_APPEND descriptor, then fsync."""
    import json
    import os

    from suhmo.utils import FILE_MODE

    line = (json.dumps(rec, sort_keys=True) + "\n").encode()
    fd = os.open(out / SKIPPED_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        if os.write(fd, line) != len(line):
            raise DataError(f"{out / SKIPPED_FILE}: short write (disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_to_pack(video_dir: str | Path, out: str | Path, *, fps: float = 25.0, min_len: int = 45,
                    max_gap_s: float = 0.2, workers: int = 1, progress: bool = True,
                    detector: Optional[str] = None, echo: Callable[[str], None] = print) -> PrepareSummary:
    """Every video in ``video_dir`` -> a packed dataset folder ``out`` (:mod:`suhmo.data.packed`),
    written as the videos finish, so that a killed run loses at most the videos in flight.

    Resuming: a rerun with the same ``out`` skips the videos already done: those whose clips
    are all committed (``source`` metadata = the path under ``video_dir``, ``clips`` = how many
    the video gave) and those recorded in ``out/skipped.jsonl`` (no face, too short). A video
    cut off between two of its clips is done again and only its missing clips are added.
    Unreadable videos are not recorded: each run tries them again (it costs one open) and
    prints their line. The options that change the clips (fps, min_len, max_gap_s, detector)
    must match those the folder was started with.
    """
    import json

    from suhmo.data.packed import PackWriter, is_packed, read_index

    root, videos = list_videos(video_dir)
    name = detector_name(detector)
    load_detector(name)  # fail early, with the install hint
    out = Path(out)
    settings = json.dumps({"min_len": int(min_len), "max_gap_s": float(max_gap_s), "detector": name},
                          sort_keys=True)
    if is_packed(out):
        info = read_index(out)
        before = (info.get("attrs") or {}).get("prepare")
        if before is not None and before != settings:
            raise DataError(f"{out}: started by suhmo data prepare with {before}, not {settings}; continue "
                            f"it with the same options, or write to another --out")
    attrs = {**_attrs(name), "prepare": np.asarray(settings)}
    summary = PrepareSummary(out=out, videos=len(videos))
    with PackWriter(out, fps=fps, attrs=attrs) as w:
        have: dict[str, set[int]] = {}
        total: dict[str, int] = {}
        for r in w.records:
            m = r["meta"]
            if "source" in m and "clip" in m:
                have.setdefault(str(m["source"]), set()).add(int(m["clip"]))
                total[str(m["source"])] = int(m.get("clips", 0))
        skipped = _read_skipped(out)
        todo = []
        for p, k in videos:
            if k in skipped or (k in have and len(have[k]) >= total[k]):
                summary.already += 1
            else:
                todo.append(VideoTask(str(p), k, float(fps), int(min_len), float(max_gap_s), name))
        if summary.already:
            n_skip = sum(k in skipped for _, k in videos)
            echo(f"{out}: continuing: {summary.already} of {len(videos)} video(s) already done, not redone "
                 f"({summary.already - n_skip} with clips, {n_skip} without: {SKIPPED_FILE}); {len(todo)} to do")

        def commit(res: VideoResult) -> None:
            summary.reports.append(res.report)
            reason = res.report.reason
            if reason in ("no face", "too short"):
                _append_skipped(out, {"source": res.key, "reason": reason, "report": res.report.line()})
                return
            done = have.get(res.key, set())
            for clip, meta in zip(res.clips, res.meta):
                if meta["clip"] not in done:
                    w.add(clip, meta, name=f"{res.key}: clip {meta['clip']}")

        run_videos(todo, workers=workers, progress=progress, echo=echo, on_result=commit)
        summary.clips, summary.frames = w.num_clips, w.num_frames
    if not summary.clips:
        raise DataError(f"{root}: no clip of at least {min_len} frames with a detected face in "
                        f"{len(videos)} video(s)")
    return summary


def landmarks_from_image(path: str | Path, *, normalize: bool = False, detector: Optional[str] = None) -> np.ndarray:
    """68-point landmarks ``[68, 2]`` of the (largest-confidence) face in a still image, in
    pixels, or bbox-normalised to the [0, 1] frame when ``normalize`` (ready as a reference
    pose for ``suhmo generate``). ``detector``: as for videos (:data:`DETECTOR_ENV`)."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image not found")
    factory = load_detector(detector)
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{p}: not a readable image")
    pts = _run_detector(factory, True, [img])[0]
    if pts is None:
        name = detector_name(detector)
        raise DataError(f"{p}: no face found by " + ("MediaPipe Face Mesh" if name == DEFAULT_DETECTOR
                                                     else f"the landmark detector {name}"))
    if normalize:
        from suhmo.data.normalize import normalize_clip

        pts = normalize_clip(pts[None], "bbox", 1.1)[0][0]
    return pts
