"""The GIF writer's one palette keeps the drawings' colours; default tile sizes; the render
benchmark's before/after rows (benchmarks/render.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from suhmo.render import BACKGROUND, compose_frames, default_tile_size, gif_palette, write_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(scope="module")
def clips():
    from suhmo.data import normalize_set, synthesize

    return [c[:30] for c in normalize_set(synthesize(2, 1.5, 0), "bbox", 1.1).clips]


def test_gif_frames_keep_their_colours(tmp_path, clips):
    frames = compose_frames(clips, size=96, grid=2, with_motion_map=True)
    path = write_video(frames, tmp_path / "a.gif", 25.0)
    im = Image.open(path)
    assert im.n_frames == len(frames)
    for t in (0, len(frames) // 2, len(frames) - 1):
        im.seek(t)
        got = np.asarray(im.convert("RGB")).astype(int)
        want = frames[t].astype(int)
        white = (want == BACKGROUND).all(-1)
        assert (got[white] == BACKGROUND).all()  # the canvas stays exactly white
        assert np.abs(got - want).mean() < 1.5  # one palette for all frames: small error
        ink = ~white
        assert np.abs(got[ink] - want[ink]).mean() < 12  # and the strokes keep their colour
    palette, index = gif_palette(frames)
    assert len(palette) % 3 == 0 and len(palette) <= 3 * 256 and index.max() < len(palette) // 3


def test_nearest_colour_table_is_the_brute_force_nearest():
    """The separable nearest-colour table equals the distance of every grid centre to every
    palette colour, argmin included (ties go to the same, first, colour)."""
    from suhmo.render import nearest_colour_table

    rng = np.random.default_rng(0)
    centres = (np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * 8.0
    for n in (2, 37, 254):
        pal = rng.integers(0, 256, (n, 3)).astype(np.float32)
        pal[-1] = pal[0]  # a duplicate colour: a tie everywhere it is nearest
        want = np.concatenate([((c[:, None, :] - pal[None]) ** 2).sum(-1).argmin(1)
                               for c in np.array_split(centres, 8)])
        assert np.array_equal(nearest_colour_table(pal), want.astype(np.uint8))


def test_default_tile_size_keeps_grids_small(tmp_path, clips):
    from suhmo.cli import cli
    from suhmo.data import LandmarkSet, save_landmarks

    assert [default_tile_size(g) for g in (1, 2, 3, 4, 8)] == [256, 256, 213, 160, 128]
    npz = tmp_path / "m.npz"
    save_landmarks(npz, LandmarkSet(clips=clips * 2, fps=25.0, meta={}))
    r = CliRunner().invoke(cli, ["render", str(npz), "--grid", "4", "--motion-map", "--out", str(tmp_path / "m.gif")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "m.gif").size == (4 * 160, 2 * 160)


def test_render_benchmark_rows(capsys):
    import render as bench

    assert bench.main(["--frames", "12", "--grid", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [r["row"] for r in rows] == ["before", "gif 256", "gif default", "mp4 default"]
    assert all(r["total_s"] > 0 and r["mb"] > 0 and r["frames"] == 12 for r in rows)
    assert rows[0]["width"] == 512 and rows[2]["width"] == 2 * default_tile_size(2)
