"""The portrait animation: the bundled photo and its landmarks, the piecewise-affine warp
(a moving face, a still border, no fold-over, a darker open mouth) and `suhmo animate`."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from suhmo.cli import cli, run_cli

from test_generate import run_dir  # noqa: F401 - the tiny trained model, a module fixture


@pytest.fixture(scope="module")
def portrait():
    from suhmo.animate import bundled_portrait

    return bundled_portrait()


def _turned(lm: np.ndarray, deg: float, shift=(0.0, 0.0)) -> np.ndarray:
    M = cv2.getRotationMatrix2D(tuple(map(float, lm[30])), deg, 1.0)
    return (lm @ M[:, :2].T + M[:, 2] + np.asarray(shift)).astype(np.float32)


def _ring(img: np.ndarray, k: int = 4) -> np.ndarray:
    return np.concatenate([img[:k].reshape(-1, 3), img[-k:].reshape(-1, 3),
                           img[:, :k].reshape(-1, 3), img[:, -k:].reshape(-1, 3)])


def test_bundled_portrait_landmarks_and_attribution(portrait):
    from suhmo.animate import PORTRAIT_DIR

    img, lm = portrait
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    # a face of plausible layout: brows above eyes above nose tip above mouth above chin
    y = lambda idx: lm[idx, 1].mean()  # noqa: E731
    assert y(range(17, 27)) < y(range(36, 48)) < lm[33, 1] < y(range(48, 68)) < lm[8, 1]
    assert lm[36, 0] < lm[45, 0] and 60 < lm[16, 0] - lm[0, 0] < 200
    text = (PORTRAIT_DIR / "ATTRIBUTION.md").read_text()
    assert "NASA" in text and "public domain" in text and "scikit-image" in text


def test_warp_identity_moves_nothing(portrait):
    from suhmo.animate import PortraitWarper

    img, lm = portrait
    w = PortraitWarper(img, lm)
    np.testing.assert_array_equal(w.warp(lm), img)


def test_warp_moves_the_face_keeps_the_border_and_never_folds(portrait):
    from suhmo.animate import PortraitWarper, signed_areas

    img, lm = portrait
    w = PortraitWarper(img, lm)
    out = w.warp(_turned(lm, 10, (12, 6)))
    np.testing.assert_array_equal(_ring(out), _ring(img))  # the image border is still
    x0, y0 = lm.min(0).astype(int)
    x1, y1 = lm.max(0).astype(int)
    face = np.abs(out[y0:y1, x0:x1].astype(int) - img[y0:y1, x0:x1]).mean()
    assert face > 10, face  # the face moved
    # eyelids pushed through each other: the eyes keep their shape, no triangle folds over
    crossed = lm.copy()
    crossed[[37, 38, 43, 44], 1] += 14
    crossed[[40, 41, 46, 47], 1] -= 14
    dst = w.targets(crossed)
    assert (np.sign(signed_areas(dst, w.tris)) == np.sign(w.src_area)).all()
    for eye in (range(36, 42), range(42, 48)):
        e = list(eye)
        np.testing.assert_allclose(np.ptp(dst[e], 0), np.ptp(lm[e], 0), atol=0.5)


def test_an_open_mouth_is_dark_inside_below_the_upper_teeth(portrait):
    from suhmo.animate import INNER_LIPS, UPPER_INNER_LIP, PortraitWarper, apply, similarity

    img, lm = portrait
    w = PortraitWarper(img, lm)
    opened = lm.copy()
    opened[[56, 57, 58, 65, 66, 67], 1] += 9
    opened[5:12, 1] += 7
    out = w.warp(opened)
    dst = w.targets(opened)

    def mask(pts):
        m = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
        return cv2.erode(m, np.ones((3, 3), np.uint8)).astype(bool)  # away from the soft edges

    gap = mask(dst[INNER_LIPS])
    teeth = mask(apply(similarity(w.src[UPPER_INNER_LIP], dst[UPPER_INNER_LIP]), w.src[INNER_LIPS]))
    assert (gap & ~teeth).sum() > 50 and (gap & teeth).sum() > 50
    below = gap & ~teeth
    assert out[below].mean() < min(80, 0.5 * img[below].mean())  # below the teeth: the dark of an open mouth
    assert out[gap & teeth].mean() > 0.8 * img[mask(lm[INNER_LIPS])].mean()  # the photo's teeth, not darkened


def test_motion_to_pixels_keeps_frame_zero(portrait, run_dir):
    from suhmo.animate import generate_portrait_motion
    from suhmo.generate import load_model

    _, lm = portrait
    G, cfg = load_model(run_dir)
    px = generate_portrait_motion(G, cfg, lm, 6, seed=1)
    assert px.shape == (7, 68, 2)
    np.testing.assert_allclose(px[0], lm, atol=1e-3)
    assert np.abs(px[-1] - px[0]).max() > 0.05  # the generated motion moves the landmarks


def _gif_frames(path):
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]


def test_animate_bundled_portrait_cli(run_dir, tmp_path, capsys):
    out = tmp_path / "face.gif"
    assert run_cli(cli, ["animate", "--model", str(run_dir), "--frames", "12", "--size", "160",
                         "--seed", "3", "--out", str(out)]) == 0
    frames = _gif_frames(out)
    assert len(frames) >= 2 and frames[0].shape == (160, 160, 3)
    for f in frames[1:]:
        np.testing.assert_array_equal(_ring(f, 2), _ring(frames[0], 2))  # a still border
    assert np.abs(frames[-1].astype(int) - frames[0]).max() > 40  # a moving face
    mp4 = tmp_path / "face.mp4"
    assert run_cli(cli, ["animate", "--model", str(run_dir), "--frames", "8", "--out", str(mp4)]) == 0
    cap = cv2.VideoCapture(str(mp4))
    n, ok = 0, True
    while ok:
        ok, f = cap.read()
        if ok:
            assert f.shape == (512, 512, 3)
            n += 1
    assert n == 9
    assert "bundled portrait" in capsys.readouterr().out


def test_animate_a_photo_with_given_landmarks(run_dir, portrait, tmp_path):
    img, lm = portrait
    photo = tmp_path / "me.png"
    crop = img[20:300, 100:380]
    cv2.imwrite(str(photo), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    np.save(tmp_path / "lm.npy", lm - [100, 20])
    out = tmp_path / "me.gif"
    assert run_cli(cli, ["animate", str(photo), "--landmarks", str(tmp_path / "lm.npy"), "--model", str(run_dir),
                         "--frames", "5", "--out", str(out)]) == 0
    frames = _gif_frames(out)
    assert frames[0].shape == (280, 280, 3)


@pytest.mark.parametrize("args, says", [
    (["--out", "x.avi"], "use .mp4 or .gif"),
    (["--landmarks", "lm.npy", "--out", "x.gif"], "--landmarks needs a PHOTO"),
    (["missing.jpg", "--landmarks", "lm.npy", "--out", "x.gif"], "missing.jpg"),
    (["photo.png", "--landmarks", "bad.npy", "--out", "x.gif"], "[68, 2]"),
    (["photo.png", "--landmarks", "far.npy", "--out", "x.gif"], "outside the 64x64 photo"),
    (["photo.png", "--landmarks", "nope.npy", "--out", "x.gif"], "nope.npy"),
    (["photo.png", "--out", "x.gif"], "--landmarks LM.npy"),  # no MediaPipe here, or no face in the photo
])
def test_animate_user_mistakes_are_one_line(run_dir, tmp_path, monkeypatch, capsys, args, says):
    monkeypatch.chdir(tmp_path)
    cv2.imwrite("photo.png", np.full((64, 64, 3), 128, np.uint8))
    np.save("bad.npy", np.zeros((5, 2)))
    np.save("far.npy", np.full((68, 2), 500.0))
    rc = run_cli(cli, ["animate", *args, "--model", str(run_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and err.startswith("Error:") and err.count("\n") == 1, err
