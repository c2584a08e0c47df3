"""Rendering: GIF/MP4 animations decode back with the right frames and the part colours."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from suhmo.render import PART_COLOURS, compose_frames, motion_map_frames, render_png, render_video


@pytest.fixture(scope="module")
def clips():
    from suhmo.data import normalize_set, synthesize

    ls = normalize_set(synthesize(2, 1.2, seed=3))
    return [c[:24] for c in ls.clips]


def _near(img: np.ndarray, rgb, tol: float = 40.0) -> int:
    """Number of pixels within ``tol`` (Euclidean, RGB) of a colour."""
    return int((np.linalg.norm(img.astype(float) - np.array(rgb, float), axis=-1) < tol).sum())


def _gif_frames(path) -> list[np.ndarray]:
    im = Image.open(path)
    out = []
    for i in range(im.n_frames):
        im.seek(i)
        out.append(np.asarray(im.convert("RGB")))
    return out


def test_gif_decodes_with_frames_and_part_colours(tmp_path, clips):
    path = render_video(clips[:1], tmp_path / "a.gif", size=128, fps=25)
    frames = _gif_frames(path)
    assert len(frames) == len(clips[0])
    assert frames[0].shape == (128, 128, 3)
    for part in ("jaw", "right_brow", "nose_bridge", "right_eye", "outer_lips"):
        assert _near(frames[0], PART_COLOURS[part]) > 5, part
    # white background dominates, but the face is drawn
    assert (frames[0].mean(-1) < 200).sum() > 200
    # the face moves: frames differ
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).sum() > 0


def test_mp4_decodes_grid_and_motion_map(tmp_path, clips):
    path = render_video(clips, tmp_path / "a.mp4", size=96, fps=25, grid=2, with_motion_map=True)
    cap = cv2.VideoCapture(str(path))
    n, first = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        first = frame if first is None else first
        n += 1
    cap.release()
    assert n == len(clips[0])
    assert first.shape == (2 * 96, 2 * 96, 3)
    rgb = cv2.cvtColor(first, cv2.COLOR_BGR2RGB)
    for r in range(2):  # every tile (2 clips x [animation, motion map]) has ink
        for c in range(2):
            tile = rgb[r * 96 + 2:(r + 1) * 96 - 2, c * 96 + 2:(c + 1) * 96 - 2]
            assert (tile.mean(-1) < 200).sum() > 20, (r, c)
    assert _near(rgb, PART_COLOURS["jaw"], tol=60) > 5


def test_motion_map_is_ema_centred_on_last_frame():
    a = np.full((1, 8, 8, 3), 255, np.uint8)
    b = a.copy()
    a[0, 2, 2] = 0  # ink at (2, 2) in the old frame, (5, 5) in the new one
    b[0, 5, 5] = 0
    maps = motion_map_frames(np.concatenate([a, b]), half_life=1.0)
    assert maps[0, 2, 2, 0] == 0  # a single frame is its own map
    # weights 0.5 (old) and 1 (new), normalised: new ink darker than old ink
    assert maps[1, 5, 5, 0] < maps[1, 2, 2, 0] < 255
    assert maps[1, 5, 5, 0] == pytest.approx(255 * (1 - 1 / 1.5), abs=1)


def test_running_motion_map_ends_on_the_whole_sequence_map(clips):
    from suhmo.render import draw_frame, motion_map, to_pixels

    px = to_pixels(clips[:1], 64)[0][:15]
    running = motion_map_frames(np.stack([draw_frame(p, 64) for p in px]))
    whole = motion_map(px, 64)
    assert np.abs(running[-1].astype(int) - whole.astype(int)).max() <= 1
    assert (whole < 250).any()


def test_png_still_and_pixel_coordinates(tmp_path, clips):
    px = [c * 480 + 100 for c in clips]  # pixel units: fitted into the canvas
    frames = compose_frames(px, size=64)
    assert (frames[0].mean(-1) < 200).sum() > 20
    path = render_png(clips, tmp_path / "still.png", size=64)
    img = cv2.imread(str(path))
    assert img.shape == (2 * 64, 3 * 64, 3)


def test_render_cli(tmp_path, clips):
    from suhmo.cli import cli, run_cli
    from suhmo.data import LandmarkSet, save_landmarks

    data = tmp_path / "in.npz"
    save_landmarks(data, LandmarkSet(clips=clips, fps=12.5))
    out = tmp_path / "out.gif"
    res = CliRunner().invoke(cli, ["render", str(data), "--out", str(out), "--grid", "2", "--size", "64",
                                   "--motion-map"])
    assert res.exit_code == 0, res.output
    frames = _gif_frames(out)
    assert len(frames) == len(clips[0]) and frames[0].shape == (128, 128, 3)
    with Image.open(out) as im:  # the file's own frame rate: 12.5 fps = 80 ms per frame
        assert im.info["duration"] == 80
    assert run_cli(cli, ["render", str(data), "--out", str(tmp_path / "x.avi")]) == 2
    assert run_cli(cli, ["render", str(tmp_path / "missing.npz"), "--out", str(out)]) == 2
