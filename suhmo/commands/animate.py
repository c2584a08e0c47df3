"""``suhmo animate``: a photo that moves with generated head motion."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("animate")
@click.argument("photo", required=False, type=click.Path(dir_okay=False))
@click.option("--model", "model_path", type=click.Path(), required=True,
              help="Exported model folder (best-export), a training folder or a checkpoint file.")
@click.option("--landmarks", type=click.Path(dir_okay=False), default=None,
              help="The photo's 68 landmarks in pixels, a [68, 2] .npy (or .csv); default: detected with "
                   "MediaPipe (run as .venv-video/bin/suhmo, README 'Real videos').")
@click.option("--frames", type=click.IntRange(1, 5000), default=120, show_default=True,
              help="Generated frames after the photo's own pose.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (as suhmo generate).")
@click.option("--init-vel", type=click.FloatRange(min=0), default=None,
              help="Range of the random initial velocity; default: the model's eval.init_vel.")
@click.option("--size", type=click.IntRange(32, 2048), default=None,
              help="Longer side of the video in pixels; default: the photo's, at most 512.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Frame rate; default: the model's data rate.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="Output .mp4 or .gif.")
def animate(photo, model_path, landmarks, frames, seed, init_vel, size, fps, out_path):
    """Animate PHOTO (default: the bundled NASA portrait) with motion from a trained model.

    The model generates head motion from the photo's pose; the photo is warped to follow
    the landmarks' motion (piecewise-affine over a Delaunay triangulation; the image border
    stays still).
    """
    from suhmo import animate as an
    from suhmo.generate import load_model
    from suhmo.render import write_video
    from suhmo.utils import SuhmoError, check_memory, check_output_path

    ext = Path(out_path).suffix.lower()
    if ext not in (".mp4", ".gif"):
        raise SuhmoError(f"--out {out_path}: unsupported output type {ext or '(none)'}; use .mp4 or .gif")
    check_output_path(out_path, "--out")
    t0 = time.perf_counter()
    if photo is None:
        if landmarks is not None:
            raise SuhmoError("--landmarks needs a PHOTO (the bundled portrait has its own)")
        image, lm = an.bundled_portrait()
        source = "the bundled portrait (NASA, public domain)"
    else:
        image = an.load_photo(photo)
        if landmarks is not None:
            lm = an.load_landmarks_px(landmarks)
        else:
            from suhmo.data import DataError, landmarks_from_image

            try:
                lm = landmarks_from_image(photo)
            except DataError as e:
                raise SuhmoError(f"{e} (or give the photo's 68 landmarks in pixels: --landmarks LM.npy)") from None
        source = str(photo)
    an.check_landmarks_in(lm, image.shape, str(landmarks or photo or an.PORTRAIT_LANDMARKS))
    out_size = size if size is not None else min(512, max(image.shape[:2]))
    scale = out_size / max(image.shape[:2])
    # the frames are held until written (and the GIF writer converts them once more)
    check_memory(2 * (frames + 1) * 3 * round(image.shape[0] * scale) * round(image.shape[1] * scale),
                 f"--frames {frames} at {out_size} px", "lower --frames or --size")
    G, cfg = load_model(model_path, "cpu")
    motion = an.generate_portrait_motion(G, cfg, lm, frames, seed, init_vel)
    video = an.animate(image, lm, motion, size=out_size)
    write_video(video, out_path, fps=fps or cfg.data.fps)
    mb = Path(out_path).stat().st_size / 2 ** 20
    click.echo(f"wrote {out_path}: {source} moved by {cfg.model.variant} (seed {seed}), {len(video)} frames "
               f"{video.shape[2]}x{video.shape[1]}, {mb:.2f} MB in {time.perf_counter() - t0:.1f} s")
