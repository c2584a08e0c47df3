"""Video/image -> landmarks: the pure steps (mesh mapping, gap filling, cut splitting,
resampling) always; MediaPipe detection on a video the test draws itself when the optional
``mediapipe==0.10.21`` is importable (it lives in a separate venv, see README)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from suhmo.data import DataError, load_landmarks, resample_clip, save_landmarks, synthesize
from suhmo.data.detect import landmarks_from_image
from suhmo.data.prepare import prepare_videos
from suhmo.data.tracks import (
    LAYOUT_68,
    fill_gaps,
    find_cuts,
    mesh_to_68,
    parse_layout,
    split_at_cuts,
    track_to_clips,
    VideoReport,
)

HAVE_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None


def test_layout_table_matches_dev_npz(dev_data):
    with np.load(dev_data, allow_pickle=False) as z:
        layout = str(z["layout"])
    assert parse_layout(layout) == LAYOUT_68


def test_layout_table_shape():
    assert len(LAYOUT_68) == 68
    assert all(0 <= v < 478 for row in LAYOUT_68 for v in row)
    with pytest.raises(DataError):
        parse_layout("no table here")


def test_mesh_to_68_vertices_and_midpoints():
    mesh = np.stack([np.arange(478), 2 * np.arange(478), np.zeros(478)], -1).astype(np.float32)
    out = mesh_to_68(mesh)
    assert out.shape == (68, 2)
    np.testing.assert_allclose(out[0], [127, 254])  # one vertex
    np.testing.assert_allclose(out[3], [(132 + 58) / 2, 132 + 58])  # midpoint of two
    batch = mesh_to_68(np.stack([mesh, mesh + 1]))
    np.testing.assert_allclose(batch[1], out + 1)
    with pytest.raises(DataError):
        mesh_to_68(np.zeros((468, 2)))


def _ramp(n: int) -> np.ndarray:
    return (np.zeros((n, 68, 2)) + np.arange(n)[:, None, None]).astype(np.float32)


def test_fill_gaps_interpolates_short_and_splits_long():
    tr = _ramp(40)
    tr[:3] = np.nan  # leading miss: dropped
    tr[10:12] = np.nan  # 2-frame gap: interpolated
    tr[20:30] = np.nan  # 10-frame gap: split
    segs, n_interp = fill_gaps(tr, max_gap=3)
    assert [s for s, _ in segs] == [3, 30] and n_interp == 2
    np.testing.assert_allclose(segs[0][1][:, 0, 0], np.arange(3, 20))  # linear fill is exact
    assert len(segs[1][1]) == 10 and np.isfinite(segs[1][1]).all()
    assert fill_gaps(np.full((5, 68, 2), np.nan), 3) == ([], 0)


def test_find_cuts_on_a_shot_change():
    a = synthesize(2, 2.0, seed=0)
    shot1 = a.clips[0]
    shot2 = a.clips[1] * 0.6 + np.array([250.0, 30.0], dtype=np.float32)  # other face, other place
    clip = np.concatenate([shot1, shot2])
    cuts = find_cuts(clip)
    assert cuts.tolist() == [50]
    assert find_cuts(shot1).size == 0 and find_cuts(shot2).size == 0
    parts = split_at_cuts(clip)
    assert [len(p) for p in parts] == [50, 50]


def test_track_to_clips_pipeline():
    src_fps = 30.0
    tr = synthesize(1, 4.0, seed=1, fps=src_fps).clips[0]  # 120 frames at 30 fps
    tr = tr.copy()
    tr[40:43] = np.nan  # 0.1 s gap: interpolated
    tr[80] = tr[80] + 200  # a one-frame jump of every point: a cut in and a cut out
    rep = VideoReport(video="v")
    clips = track_to_clips(tr, src_fps, fps=25.0, min_len=20, max_gap_s=0.2, report=rep)
    assert rep.interpolated == 3 and rep.cuts == 2 and rep.detected == 117
    # 80 frames (2.633 s) and 39 frames (1.267 s) at 30 fps -> 66 and 32 frames at 25 fps
    assert [len(c) for c in clips] == [66, 32]
    assert rep.dropped_short == 1  # the one-frame shot
    assert "3 interpolated" in rep.line()


def test_resample_clip_linear():
    x = _ramp(31)  # 1 s at 30 fps, value = source frame
    y = resample_clip(x, 30.0, 25.0)
    assert len(y) == 26
    np.testing.assert_allclose(y[:, 0, 0], np.arange(26) * 30 / 25, atol=1e-4)
    np.testing.assert_array_equal(resample_clip(x, 25.0, 25.0), x)


@pytest.mark.skipif(HAVE_MEDIAPIPE, reason="mediapipe is installed here")
def test_missing_mediapipe_gives_install_hint(tmp_path):
    v = tmp_path / "v.mp4"
    v.write_bytes(b"not really a video")
    with pytest.raises(DataError, match=r"mediapipe==0\.10\.21.*pip install"):
        prepare_videos(tmp_path)
    img = tmp_path / "face.png"
    import cv2

    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="mediapipe"):
        landmarks_from_image(img)


def test_prepare_errors_without_videos(tmp_path):
    with pytest.raises(DataError, match="no video files"):
        prepare_videos(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        prepare_videos(tmp_path / "missing")


# ------------------------------------------------------------------------------ drawn faces
def draw_face(lm: np.ndarray, wh=(640, 480)) -> np.ndarray:
    """A flat cartoon face drawn from 68 landmarks (skin, hair, eyes with irises, brows,
    nose, lips): enough for MediaPipe Face Mesh to find a face."""
    import cv2

    img = np.full((wh[1], wh[0], 3), (90, 110, 120), np.uint8)
    p = np.rint(lm).astype(np.int32)
    c = p[27]
    top = (c + (p[17:27] - c) * 1.6).astype(np.int32)
    top[:, 1] -= int(0.25 * np.ptp(p[:, 1]))
    centre = tuple(((top[0] + top[-1]) // 2).tolist())
    axes = (int(np.ptp(p[:17, 0]) * 0.62), int(np.ptp(p[:, 1]) * 0.45))
    cv2.ellipse(img, centre, axes, 0, 180, 360, (30, 40, 60), -1)
    cv2.fillConvexPoly(img, cv2.convexHull(np.concatenate([p[:17], top])), (150, 180, 225))
    for eye in (p[36:42], p[42:48]):
        cv2.fillPoly(img, [eye], (245, 245, 245))
        ctr = tuple(eye.mean(0).astype(int).tolist())
        r = max(2, int(np.ptp(eye[:, 1]) * 0.45))
        cv2.circle(img, ctr, r, (60, 50, 40), -1)
        cv2.circle(img, ctr, max(1, r // 2), (10, 10, 10), -1)
        cv2.polylines(img, [eye], True, (40, 40, 40), 1, cv2.LINE_AA)
    for brow in (p[17:22], p[22:27]):
        cv2.polylines(img, [brow], False, (40, 50, 60), 4, cv2.LINE_AA)
    cv2.polylines(img, [p[27:31]], False, (110, 130, 170), 2, cv2.LINE_AA)
    cv2.polylines(img, [p[31:36]], False, (90, 110, 150), 2, cv2.LINE_AA)
    cv2.fillPoly(img, [p[48:60]], (90, 90, 190))
    cv2.fillPoly(img, [p[60:68]], (40, 30, 60))
    return cv2.GaussianBlur(img, (5, 5), 0)


def _write_video(path, frames, fps):
    import cv2

    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not wr.isOpened():
        path = path.with_suffix(".avi")
        wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert wr.isOpened(), "OpenCV cannot write a test video here"
    for f in frames:
        wr.write(f)
    wr.release()
    return path


@pytest.mark.skipif(not HAVE_MEDIAPIPE, reason="mediapipe==0.10.21 not installed (optional, separate venv; "
                                                "see README 'Real videos')")
def test_mediapipe_on_a_drawn_video(tmp_path):
    fps = 25.0
    lm = synthesize(1, 2.4, seed=3).clips[0]  # 60 frames
    lm = (lm - lm.reshape(-1, 2).mean(0)) * 1.3 + np.array([320.0, 250.0], dtype=np.float32)
    blank = np.full((480, 640, 3), (90, 110, 120), np.uint8)
    frames = [draw_face(f) for f in lm] + [blank] * 10 + [draw_face(f) for f in lm]
    videos = tmp_path / "videos"
    videos.mkdir()
    _write_video(videos / "drawn.mp4", frames, fps)
    lines = []
    try:
        ls, reports = prepare_videos(videos, fps=25.0, min_len=45, progress=False, echo=lines.append)
    except DataError as e:
        if "no clip" in str(e):
            pytest.skip(f"MediaPipe found no face in the drawn video: {e}")
        raise
    rep = reports[0]
    assert rep.frames == 130 and rep.detected >= 110 and len(lines) == 1
    assert len(ls) == 2, rep.line()  # the 0.4 s blank is longer than max_gap: split there
    assert all(len(c) >= 45 for c in ls.clips)
    # detected inner-face points sit near the drawn ones (jaw excluded: drawn as a hull)
    got = ls.clips[0]
    ref = lm[: len(got)]
    iod = np.linalg.norm(ref[:, 45] - ref[:, 36], axis=-1).mean()
    err = np.linalg.norm(got[:, 27:68] - ref[:, 27:68], axis=-1).mean() / iod
    assert err < 0.25, err
    out = tmp_path / "lm.npz"
    save_landmarks(out, ls)
    back = load_landmarks(out, min_len=45)
    assert len(back) == 2 and "layout" in back.attrs and back.meta["person"][0] == "drawn"
    import cv2

    img = tmp_path / "still.png"
    cv2.imwrite(str(img), frames[0])
    pts = landmarks_from_image(img)
    assert pts.shape == (68, 2) and np.linalg.norm(pts[36] - lm[0, 36]) < 0.3 * iod
    norm = landmarks_from_image(img, normalize=True)
    assert norm.min() >= 0 and norm.max() <= 1
