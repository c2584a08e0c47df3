"""Time and size of `suhmo render IN.npz --grid 4 --motion-map`, before and after, side by side.

    .venv/bin/python benchmarks/render.py [--json] [--frames 121] [--grid 4]

The README's command renders 4 generated clips of 121 frames with running motion maps. Rows,
all in one run on the same clips (the embedded synthetic talking heads, no files needed):

``before``        the renderer as it was (commit bf940f3): 256-pixel tiles (1024 x 512 frames),
                  float64 motion maps, every GIF frame quantised by Pillow on its own
                  (median cut per frame); kept here as the reference, it is not in suhmo/;
``gif 256``       today's GIF writer at the old tile size: one palette for the whole
                  animation, each frame mapped through a colour table (the effect of the
                  palette alone);
``gif default``   what `suhmo render ... --out motion.gif` does now: the same, with the
                  default tile size for the grid (160 pixels for 4 clips: 640 x 320 frames);
``mp4 default``   `--out motion.mp4`: OpenCV's mp4v writer at the default size.

Columns: compose (drawing + motion maps) and write seconds, total, file size, frame size.
With ``--json`` the last line is ``{"rows": [{"row", "compose_s", "write_s", "total_s",
"mb", "width", "height", "frames"}, ...]}``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def _motion_map_frames_before(frames: np.ndarray, half_life: float) -> np.ndarray:
    """The running motion maps as computed before (float64, a new array per frame)."""
    decay = 0.5 ** (1.0 / float(half_life))
    out = np.empty_like(frames)
    num = np.zeros(frames.shape[1:], np.float64)
    den = 0.0
    for t, frame in enumerate(frames):
        num = decay * num + (255 - frame.astype(np.float64))
        den = decay * den + 1.0
        out[t] = np.clip(np.rint(255 - num / den), 0, 255).astype(np.uint8)
    return out


def _gif_before(frames: np.ndarray, path: Path, fps: float) -> None:
    """The GIF writer as it was: RGB frames, each quantised by Pillow on its own."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000 / fps)), loop=0)
    path.write_bytes(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--frames", type=int, default=121, help="frames per clip (the README's 120 + reference)")
    ap.add_argument("--grid", type=int, default=4)
    args = ap.parse_args(argv)

    import suhmo.render as R
    from suhmo.data import normalize_set, synthesize

    ls = normalize_set(synthesize(args.grid, args.frames / 25.0 + 0.2, 0), "bbox", 1.1)
    clips = [c[: args.frames] for c in ls.clips]
    out = Path(tempfile.mkdtemp(prefix="suhmo-bench-render-"))
    rows = []

    def row(name: str, size: int, ext: str, before: bool = False) -> None:
        path = out / f"{name.replace(' ', '_')}{ext}"
        t0 = time.perf_counter()
        if before:
            saved = R.motion_map_frames
            R.motion_map_frames = _motion_map_frames_before
            try:
                frames = R.compose_frames(clips, size=size, grid=args.grid, with_motion_map=True)
            finally:
                R.motion_map_frames = saved
        else:
            frames = R.compose_frames(clips, size=size, grid=args.grid, with_motion_map=True)
        t1 = time.perf_counter()
        if before:
            _gif_before(frames, path, 25.0)
        else:
            R.write_video(frames, path, 25.0)
        t2 = time.perf_counter()
        rows.append({"row": name, "compose_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2),
                     "total_s": round(t2 - t0, 2), "mb": round(path.stat().st_size / 1e6, 2),
                     "width": int(frames.shape[2]), "height": int(frames.shape[1]), "frames": int(len(frames))})

    default = R.default_tile_size(args.grid)
    row("before", 256, ".gif", before=True)
    row("gif 256", 256, ".gif")
    row("gif default", default, ".gif")
    row("mp4 default", default, ".mp4")

    print(f"suhmo render --grid {args.grid} --motion-map, {args.frames} frames per clip "
          f"(cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f})")
    print(f"{'row':14s}{'compose s':>11s}{'write s':>10s}{'total s':>10s}{'MB':>8s}{'frame':>11s}")
    for r in rows:
        print(f"{r['row']:14s}{r['compose_s']:11.2f}{r['write_s']:10.2f}{r['total_s']:10.2f}{r['mb']:8.2f}"
              f"{str(r['width']) + 'x' + str(r['height']):>11s}")
    b, d = rows[0], rows[2]
    print(f"default GIF vs before: {b['total_s'] / max(d['total_s'], 1e-9):.1f}x faster, "
          f"{b['mb'] / max(d['mb'], 1e-9):.1f}x smaller")
    if args.json:
        print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
