"""``suhmo render``: landmark animations as GIF or MP4."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("render")
@click.argument("in_path", metavar="IN.npz", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Output .gif or .mp4 (or .png for a still: first/last frame and motion map).")
@click.option("--motion-map", is_flag=True, default=False, help="Draw the running motion map under each clip.")
@click.option("--grid", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of clips drawn side by side (the first N of the file).")
@click.option("--clip", "first_clip", type=click.IntRange(min=0), default=0, show_default=True,
              help="Index of the first clip drawn.")
@click.option("--size", type=click.IntRange(min=16, max=2048), default=None,
              help="Tile size in pixels; default: 256, smaller for grids wider than 2 (a row of ~640 px).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Frame rate of the animation; default: the file's.")
def render(in_path, out_path, motion_map, grid, first_clip, size, fps):
    """Draw the landmark clips of IN.npz with the paper's per-part colours."""
    from suhmo.data import load_landmarks
    from suhmo.render import render_png, render_video
    from suhmo.utils import SuhmoError, check_output_path

    ext = Path(out_path).suffix.lower()
    if ext not in (".gif", ".mp4", ".png"):
        raise SuhmoError(f"--out {out_path}: unsupported output type {ext or '(none)'}; use .gif, .mp4 or .png")
    check_output_path(out_path, "--out")
    ls = load_landmarks(in_path, fps=_stored_fps(in_path), notify=lambda msg: None)
    if first_clip >= len(ls.clips):
        raise SuhmoError(f"{in_path}: --clip {first_clip} out of range (the file has {len(ls.clips)} clips)")
    clips = ls.clips[first_clip:first_clip + grid]
    if Path(out_path).suffix.lower() == ".png":
        render_png(clips, out_path, size=size or 256, max_samples=grid)
    else:
        render_video(clips, out_path, size=size, fps=fps or ls.fps, grid=grid, with_motion_map=motion_map)
    click.echo(f"wrote {out_path} ({len(clips)} clip(s), {max(len(c) for c in clips)} frames)")


def _stored_fps(path: str) -> float:
    """The file's own frame rate, so that rendering never resamples (25 when unreadable:
    ``load_landmarks`` then reports what is wrong with the file)."""
    import numpy as np

    from suhmo.data.dataset import precheck_npz

    try:
        precheck_npz(Path(path))  # never open a FIFO or unpack a bomb; load_landmarks names the problem
        with np.load(path, allow_pickle=False) as z:
            return float(np.asarray(z["fps"], dtype=np.float64).reshape(-1)[0])
    except Exception:  # noqa: BLE001 - the real error comes from load_landmarks
        return 25.0
