"""Landmark detectors: 68-point landmarks of the frames of a video or of a still image.

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
MediaPipe and OpenCV are imported on call: everything else in ``suhmo`` works without them.

The detector is named ``module:function`` (:data:`DETECTOR_ENV`), so that the worker
processes of :mod:`suhmo.data.prepare` can import it and tests can replace MediaPipe.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from suhmo.data.dataset import DataError
from suhmo.data.tracks import MESH_POINTS, mesh_to_68

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


# ---------------------------------------------------------------------------------- detectors
# A landmark detector is named "module:function". The function is a factory: called with
# ``static`` (True for still images, False for the frames of one video, in order) it returns a
# callable ``detect(bgr uint8 [H, W, 3]) -> [68, 2] float32 pixels, or None for no face``,
# which may have a ``close()``. A factory is called once per video (or image), so a detector
# may track a face from frame to frame. The default is MediaPipe Face Mesh; the environment
# variable SUHMO_LANDMARK_DETECTOR names another (the tests use a stand-in that runs without
# MediaPipe). Worker processes receive the name and import it themselves.
DETECTOR_ENV = "SUHMO_LANDMARK_DETECTOR"
DEFAULT_DETECTOR = "suhmo.data.detect:mediapipe_detector"


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
