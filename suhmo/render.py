"""Landmark animations (GIF / MP4), motion maps and still previews, drawn with OpenCV.

Each face part is drawn as a connected polyline in its own colour, as in the paper's
figures: jaw (green), brows (orange), nose (blue), eyes (red), outer lips (purple) and
inner lips (pink). The *motion map* (paper Sec. 4.2, Fig. 4) summarises a sequence in
one image: an exponential moving average of the drawn frames centred on the last frame
(the weights of ``suhmo.metrics.raster.frame_weights``, half-life 10 frames), so recent
poses are dark and old poses fade; a still face gives a sharp map.

Images are RGB uint8 throughout; only the MP4 writer converts to BGR.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from suhmo.metrics.raster import frame_weights  # one definition of the motion-map weights
from suhmo.utils import DiskFullError, SuhmoError, atomic_write_bytes, check_memory, free_bytes

# part name -> (landmark indices of one polyline, closed, RGB colour); iBUG 68-point layout
PARTS: list[tuple[str, list[int], bool, tuple[int, int, int]]] = [
    ("jaw", list(range(0, 17)), False, (44, 160, 44)),
    ("right_brow", list(range(17, 22)), False, (255, 127, 14)),
    ("left_brow", list(range(22, 27)), False, (255, 127, 14)),
    ("nose_bridge", list(range(27, 31)), False, (31, 119, 180)),
    ("nose_base", list(range(31, 36)), False, (31, 119, 180)),
    ("right_eye", list(range(36, 42)), True, (214, 39, 40)),
    ("left_eye", list(range(42, 48)), True, (214, 39, 40)),
    ("outer_lips", list(range(48, 60)), True, (148, 103, 189)),
    ("inner_lips", list(range(60, 68)), True, (227, 119, 194)),
]
PART_COLOURS = {name: colour for name, _, _, colour in PARTS}
BACKGROUND = 255  # white canvas
_SHIFT = 4  # sub-pixel bits for cv2 drawing
HALF_LIFE = 10.0  # motion-map half-life in frames (0.4 s at 25 fps), as the metric stack's t-FID


def to_pixels(clips: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """Map clips ``[T, 68, 2]`` to pixel coordinates of a ``size`` x ``size`` canvas.

    Normalised clips (the first frame of every clip inside [-0.5, 1.5]) map [0, 1] onto the
    canvas, so head translation stays visible and a sequence that drifts away leaves the
    canvas, as it should; other clips (pixel coordinates) are fitted jointly into the
    canvas with a 5 % margin.
    """
    firsts = np.stack([np.asarray(c[0], np.float64) for c in clips])
    firsts = firsts[np.isfinite(firsts)]
    if firsts.size == 0 or (firsts.min() >= -0.5 and firsts.max() <= 1.5):
        return [np.asarray(c, np.float64) * size for c in clips]
    finite = [c[np.isfinite(c).all(axis=-1)] for c in clips]
    allpts = np.concatenate([f.reshape(-1, 2) for f in finite])
    lo, hi = allpts.min(0), allpts.max(0)
    span = float(max(hi - lo)) or 1.0
    scale = 0.9 * size / span
    offset = (size - scale * (hi - lo)) / 2 - scale * lo
    return [np.asarray(c, np.float64) * scale + offset for c in clips]


def draw_frame(points_px: np.ndarray, size: int) -> np.ndarray:
    """Draw one face ``[68, 2]`` (pixels) on a white canvas -> RGB ``[size, size, 3]`` uint8."""
    img = np.full((size, size, 3), BACKGROUND, np.uint8)
    thickness = max(1, round(size / 160))
    for _, idx, closed, colour in PARTS:
        pts = points_px[idx]
        if not np.isfinite(pts).all():
            continue  # a diverged frame is left blank rather than drawn as garbage
        pts = np.clip(pts, -4 * size, 5 * size)
        fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [fixed], closed, colour, thickness, cv2.LINE_AA, _SHIFT)
    return img


def motion_map_frames(frames: np.ndarray, half_life: float = HALF_LIFE) -> np.ndarray:
    """Running motion maps of drawn frames ``[T, H, W, 3]`` -> ``[T, H, W, 3]`` uint8.

    Map ``t`` weights frames ``s <= t`` by ``frame_weights(t + 1, "ema", half_life)`` (the
    metric stack's definition: ``0.5 ** (age / half_life)``, normalised to sum 1), computed
    recursively; the last map is the motion map of the whole sequence. Averaging is done on
    the ink (``255 - pixel``) so that the white background stays white.
    """
    decay = np.float32(0.5 ** (1.0 / float(half_life)))  # the EMA factor of frame_weights' ages
    out = np.empty_like(frames)
    num = np.zeros(frames.shape[1:], np.float32)  # float32: 8-bit output, and half the memory traffic
    ink = np.empty_like(num)
    den = 0.0
    for t, frame in enumerate(frames):
        np.subtract(BACKGROUND, frame, out=ink, dtype=np.float32)
        num *= decay
        num += ink
        den = float(decay) * den + 1.0
        np.rint(num * np.float32(-1.0 / den) + BACKGROUND, out=ink)
        np.clip(ink, 0, 255, out=ink)
        out[t] = ink
    return out


def motion_map(clip_px: np.ndarray, size: int, half_life: float = HALF_LIFE) -> np.ndarray:
    """The motion map of one clip ``[T, 68, 2]`` (pixels) -> RGB ``[size, size, 3]``."""
    frames = np.stack([draw_frame(p, size) for p in clip_px]).astype(np.float64)
    w = frame_weights(len(frames), "ema", half_life)
    ink = np.tensordot(w, BACKGROUND - frames, axes=1)
    return np.clip(np.rint(BACKGROUND - ink), 0, 255).astype(np.uint8)


def compose_frames(clips: Sequence[np.ndarray], *, size: int = 256, grid: int = 1,
                   with_motion_map: bool = False, half_life: float = HALF_LIFE) -> np.ndarray:
    """Video frames ``[T, H, W, 3]``: ``grid`` clips side by side, running motion maps below.

    Shorter clips hold their last frame until the longest one ends.
    """
    if not len(clips):
        raise SuhmoError("render: no clips to draw")
    if size < 16:
        raise SuhmoError(f"render: --size {size} is too small (need >= 16)")
    size += size % 2  # video codecs want even dimensions
    shown = list(clips[: max(1, grid)])
    n_frames = max(len(c) for c in shown)
    rows = 2 if with_motion_map else 1
    # the video, plus while a clip is drawn its frames (and, float32, its motion map), plus a
    # GIF's palette-index frames
    tile = n_frames * size * size * 3
    check_memory(n_frames * rows * size * len(shown) * size * 4 + tile * (1 + 4 * (rows - 1)),
                 f"render: {len(shown)} clip(s) of {n_frames} frames at {size} px"
                 + (" with motion maps" if with_motion_map else ""),
                 "render fewer frames, a smaller --size or a smaller --grid")
    px = to_pixels(shown, size)
    video = np.full((n_frames, rows * size, len(shown) * size, 3), BACKGROUND, np.uint8)
    for j, clip in enumerate(px):
        drawn = np.stack([draw_frame(clip[min(t, len(clip) - 1)], size) for t in range(n_frames)])
        video[:, :size, j * size:(j + 1) * size] = drawn
        if with_motion_map:
            video[:, size:, j * size:(j + 1) * size] = motion_map_frames(drawn, half_life)
    _separate(video, size, len(shown), rows)
    return video


def _separate(images: np.ndarray, size: int, cols: int, rows: int) -> None:
    """Thin grey lines between tiles (in place, on ``[..., H, W, 3]``)."""
    for j in range(1, cols):
        images[..., :, j * size, :] = 200
    for i in range(1, rows):
        images[..., i * size, :, :] = 200


def write_video(frames: np.ndarray, path: str | Path, fps: float = 25.0) -> Path:
    """Write RGB frames ``[T, H, W, 3]`` to ``.gif`` (Pillow) or ``.mp4`` (OpenCV, mp4v), atomically.

    Note that GIF merges identical consecutive frames into one longer frame.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if fps <= 0:
        raise SuhmoError(f"render: --fps {fps} must be > 0")
    if ext == ".gif":
        from PIL import Image

        palette, index = gif_palette(frames)
        images = []
        for f in frames:
            im = Image.fromarray(index[_lut_bins(f)], mode="P")
            im.putpalette(palette)
            images.append(im)
        buf = io.BytesIO()
        images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(20, round(1000 / fps)), loop=0, optimize=False)
        atomic_write_bytes(path, buf.getvalue())
    elif ext == ".mp4":
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
        os.close(fd)
        try:
            h, w = frames.shape[1:3]
            writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
            if not writer.isOpened():
                raise SuhmoError(f"{path}: OpenCV could not open an mp4v video writer here; try .gif")
            level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # no warning per failed frame
            try:
                for f in frames:
                    writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
                writer.release()
            finally:
                cv2.utils.logging.setLogLevel(level)
            _check_video(tmp, path, len(frames))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        raise SuhmoError(f"{path}: unsupported output type {ext or '(none)'}; use .gif or .mp4")
    return path


_LUT_BITS = 5  # colours are looked up on a 32 x 32 x 32 grid


def _lut_bins(frame: np.ndarray) -> np.ndarray:
    """Index of each pixel's cell of the colour grid, ``[H, W]`` int."""
    q = (frame >> (8 - _LUT_BITS)).astype(np.uint16)
    return (q[..., 0] << (2 * _LUT_BITS)) | (q[..., 1] << _LUT_BITS) | q[..., 2]


def gif_palette(frames: np.ndarray, max_colours: int = 256, sample_frames: int = 12) -> tuple[list[int], np.ndarray]:
    """One palette for the whole animation and a colour-grid -> palette-index table.

    Pillow quantises every frame of an RGB GIF by itself (median cut), which is most of the
    time of writing one; the drawings use few colours (the part colours, their blends with
    the white canvas and the motion maps' shades), so one palette from a few frames serves
    all of them, and mapping a frame is then one table lookup. Returns the flat RGB palette
    and ``index[32**3]`` (uint8) for :func:`_lut_bins`.
    """
    from PIL import Image

    step = max(1, len(frames) // sample_frames)
    mosaic = Image.fromarray(np.ascontiguousarray(np.concatenate(list(frames[::step]), axis=0)))
    quant = mosaic.quantize(colors=max_colours - 2, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    used = len(quant.getcolors(max_colours) or []) or max_colours - 2
    # the canvas and the tile separators exactly (median cut would average them with neighbours)
    exact = np.array([[BACKGROUND] * 3, [200] * 3], np.uint8)
    quantised = np.array(quant.getpalette()[: 3 * used], np.uint8).reshape(-1, 3)
    # ... and alone in their cells of the colour grid, so that they map to themselves
    quantised = quantised[~np.isin(_lut_bins(quantised), _lut_bins(exact))]
    pal = np.concatenate([exact, quantised]).astype(np.float32)
    return [int(v) for v in pal.reshape(-1).round()], nearest_colour_table(pal)


def nearest_colour_table(pal: np.ndarray) -> np.ndarray:
    """Index of the nearest colour of ``pal [P, 3]`` for the centre of every cell of the
    colour grid, ``[32**3]`` uint8 in :func:`_lut_bins` order. The squared distance is a sum
    over the three channels of terms that each depend on one grid coordinate, so the terms
    are computed once per coordinate ``[32, P]`` and broadcast: the same float64 sums, in the
    same order, as the distance of every centre to every colour, ~10x faster."""
    n = 1 << _LUT_BITS
    centre = (np.arange(n) + 0.5) * (256 / n)
    r, g, b = ((centre[:, None] - np.asarray(pal, np.float32)[None, :, c]) ** 2 for c in range(3))  # [n, P]
    index = np.empty((n, n * n), np.uint8)
    for i in range(n):  # one red level at a time: [n, n, P] distances (bounded memory)
        index[i] = ((r[i] + g[:, None, :]) + b[None, :, :]).reshape(n * n, -1).argmin(1)
    return index.reshape(-1)


def default_tile_size(grid: int) -> int:
    """Tile size (pixels) when none is given: 256 for one or two clips, smaller tiles for
    wider grids so that a row stays about 640 pixels wide (128 at least)."""
    return int(min(256, max(128, 640 // max(1, int(grid)))))


def render_video(clips: Sequence[np.ndarray], path: str | Path, *, size: int | None = None, fps: float = 25.0,
                 grid: int = 1, with_motion_map: bool = False) -> Path:
    """Animate up to ``grid`` clips ``[T, 68, 2]`` side by side into a GIF or MP4
    (tile ``size`` default: :func:`default_tile_size`)."""
    ext = Path(path).suffix.lower()
    if ext not in (".gif", ".mp4"):
        raise SuhmoError(f"{path}: unsupported output type {ext or '(none)'}; use .gif or .mp4")
    size = default_tile_size(min(grid, len(clips))) if size is None else size
    frames = compose_frames(clips, size=size, grid=grid, with_motion_map=with_motion_map)
    return write_video(frames, path, fps)


def preview_image(clips: Sequence[np.ndarray], *, size: int = 256, max_samples: int = 4) -> np.ndarray:
    """A still: one row per clip with [first frame | last frame | motion map] -> RGB image."""
    if not len(clips):
        raise SuhmoError("render: no clips to draw")
    shown = list(clips[:max_samples])
    longest = max(len(c) for c in shown)
    # a motion map draws every frame of its clip, in float64
    check_memory(longest * size * size * 3 * 9 + len(shown) * size * 3 * size * 3,
                 f"render: a motion map of {longest} frames at {size} px",
                 "render fewer frames or a smaller --size")
    px = to_pixels(shown, size)
    img = np.full((len(shown) * size, 3 * size, 3), BACKGROUND, np.uint8)
    for i, clip in enumerate(px):
        tiles = [draw_frame(clip[0], size), draw_frame(clip[-1], size), motion_map(clip, size)]
        for j, tile in enumerate(tiles):
            img[i * size:(i + 1) * size, j * size:(j + 1) * size] = tile
    _separate(img, size, 3, len(shown))
    return img


def _mp4_complete(path: str) -> bool:
    """Whether the file is a whole MP4: its top-level boxes end exactly at the end of the file
    and one is the ``moov`` index (the muxer writes it last, so a write cut short lacks it)."""
    import struct

    size = os.path.getsize(path)
    pos, seen = 0, set()
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return False
            n, kind = struct.unpack(">I4s", head[:8])
            if n == 1 and len(head) == 16:
                n = struct.unpack(">Q", head[8:16])[0]
            elif n == 0:
                n = size - pos
            if n < 8:
                return False
            seen.add(kind)
            pos += n
    return pos == size and b"moov" in seen


def _check_video(tmp: str, path: Path, n_frames: int) -> None:
    """OpenCV reports no failed write: a video cut short is found here, and called what it is
    (a full disk when the filesystem has no room left, else OpenCV's failure)."""
    if _mp4_complete(tmp):
        return
    written = os.path.getsize(tmp)
    free = free_bytes(tmp)
    import resource

    fsize = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if fsize != resource.RLIM_INFINITY and written >= fsize:  # the file reached the file-size limit
        raise DiskFullError(path, needed=written + 1, at_least=True, file_size_limit=True)
    if free is not None and free < max(1 << 20, written // 10):
        # the free space once the partial file is gone
        raise DiskFullError(path, needed=written + 1, at_least=True, free=free + written)
    raise SuhmoError(f"{path}: OpenCV could not write the {n_frames}-frame video; try .gif")


def render_png(clips: Sequence[np.ndarray], path: str | Path, *, size: int = 256, max_samples: int = 4) -> Path:
    """Write :func:`preview_image` as a PNG (for MLflow artifacts and model cards), atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(preview_image(clips, size=size, max_samples=max_samples),
                                                cv2.COLOR_RGB2BGR))
    if not ok:
        raise SuhmoError(f"{path}: PNG encoding failed")
    atomic_write_bytes(Path(path), buf.tobytes())
    return Path(path)
