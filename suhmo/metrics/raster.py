"""Rasterising landmarks for the detector metrics, and motion maps (t-FID, paper Sec. 4.1).

Frames
    A 224 x 224 image with three channels, as the authors' metric code does: channel 0 = jaw
    (points 0-16), channel 1 = brows, nose and eyes (17-47), channel 2 = mouth (48-67);
    black background. By default one pixel per landmark is set to 1 (pixel = ``int(coord *
    size)`` with coordinates clipped to [0, 0.99], row = y, column = x). ``lines=True`` draws
    the iBUG contour segments instead (points sampled densely along each segment), for
    visualisation or a denser detector input. Everything is vectorised over frames, points
    and segments: a scatter into a flat array, no Python loop per point or per frame.

Motion maps (t-FID)
    One image per sequence: a weighted sum of the rasterised frames (weights sum to 1, so a
    still face gives a sharp map with pixel value 1 and motion leaves a faint trail).
    ``mode="ema"`` (default, the paper: "an exponential moving average centred on the last
    time frame"): weight ``0.5 ** (age / half_life)``, age in frames before the last one,
    half-life 10 frames (0.4 s at 25 fps). ``mode="ramp"``: the authors' code,
    ``linspace(0.2, 0.8, T)`` (the last frame weighs 4x the first). ``norm="last"`` rescales
    the weights so that the last frame has weight 1 (clipped to 1), for display.
"""

from __future__ import annotations

import numpy as np

SIZE = 224
UPPER = 0.99
CHANNEL = np.zeros(68, np.int64)
CHANNEL[17:48] = 1
CHANNEL[48:] = 2


def _chain(a: int, b: int, closed: bool = False) -> list[tuple[int, int]]:
    seg = [(i, i + 1) for i in range(a, b)]
    return seg + [(b, a)] if closed else seg


# iBUG-68 contour segments: jaw, brows, nose bridge, nose base, eyes, outer and inner lips
SEGMENTS = np.array(
    _chain(0, 16) + _chain(17, 21) + _chain(22, 26) + _chain(27, 30) + [(30, 33)] + _chain(31, 35)
    + _chain(36, 41, True) + _chain(42, 47, True) + _chain(48, 59, True) + _chain(60, 67, True),
    dtype=np.int64,
)


def frame_weights(n: int, mode: str = "ema", half_life: float = 10.0) -> np.ndarray:
    """Weights of ``n`` frames in a motion map (sum 1, the last frame largest)."""
    if mode == "ema":
        age = np.arange(n - 1, -1, -1, dtype=np.float64)
        w = 0.5 ** (age / float(half_life))
    elif mode == "ramp":
        w = np.linspace(0.2, 0.8, n)
    else:
        raise ValueError(f"motion map mode {mode!r}: choose ema or ramp")
    return w / w.sum()


def _points(seqs: np.ndarray, lines: bool, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``[M, 68, 2]`` -> sample points ``[M, P, 2]`` and their channel ``[P]``."""
    if not lines:
        return seqs, CHANNEL
    a, b = seqs[:, SEGMENTS[:, 0]], seqs[:, SEGMENTS[:, 1]]  # [M, S, 2]
    longest = float(np.abs(b - a).max(initial=0.0)) * size
    n_sub = int(min(max(np.ceil(longest) + 1, 2), 4 * size))
    t = np.linspace(0.0, 1.0, n_sub)[None, None, :, None]
    pts = a[:, :, None] + t * (b - a)[:, :, None]  # [M, S, n_sub, 2]
    ch = np.repeat(CHANNEL[SEGMENTS[:, 0]], n_sub)
    return pts.reshape(len(seqs), -1, 2), ch


def _pixel_index(seqs: np.ndarray, lines: bool, size: int) -> np.ndarray:
    """Flat pixel index inside one ``[3, size, size]`` image, ``[M, P]``."""
    pts, ch = _points(np.asarray(seqs, np.float64), lines, size)
    ij = (np.clip(pts, 0.0, UPPER) * size).astype(np.int64)  # x -> column, y -> row
    return (ch[None] * size + ij[..., 1]) * size + ij[..., 0]


def rasterize(frames: np.ndarray, *, size: int = SIZE, lines: bool = False) -> np.ndarray:
    """Landmark frames ``[..., 68, 2]`` in [0, 1] -> uint8 images ``[..., 3, size, size]`` (0/255)."""
    frames = np.asarray(frames)
    lead = frames.shape[:-2]
    flat = frames.reshape(-1, 68, 2)
    m = len(flat)
    idx = _pixel_index(flat, lines, size) + (np.arange(m) * 3 * size * size)[:, None]
    out = np.zeros(m * 3 * size * size, np.uint8)
    out[idx.ravel()] = 255
    return out.reshape(*lead, 3, size, size)


def motion_maps(seqs: np.ndarray, mode: str = "ema", *, half_life: float = 10.0, size: int = SIZE,
                lines: bool = False, norm: str = "sum") -> np.ndarray:
    """Motion maps of ``seqs [N, T, 68, 2]`` -> float32 ``[N, 3, size, size]`` in [0, 1].

    Pixel value = sum of the weights of the frames whose raster covers that pixel (each
    frame counts once per pixel, as when summing the rasterised frames).
    """
    seqs = np.asarray(seqs)
    n, t = seqs.shape[:2]
    w = frame_weights(t, mode, half_life)
    if norm == "last":
        w = w / w[-1]
    elif norm != "sum":
        raise ValueError(f"motion map norm {norm!r}: choose sum or last")
    hw3 = 3 * size * size
    pix = _pixel_index(seqs.reshape(n * t, 68, 2), lines, size)  # [N*T, P]
    key = np.unique(pix + (np.arange(n * t) * hw3)[:, None])  # one hit per frame and pixel
    frame = key // hw3
    img_idx = (frame // t) * hw3 + key % hw3
    out = np.bincount(img_idx, weights=w[frame % t], minlength=n * hw3)
    return np.minimum(out, 1.0).astype(np.float32).reshape(n, 3, size, size)


def motion_map(frames: np.ndarray, mode: str = "ema", *, half_life: float = 10.0, size: int = SIZE,
               lines: bool = False, norm: str = "sum", channels_last: bool = False) -> np.ndarray:
    """Motion map of one sequence ``[T, 68, 2]`` -> float32 ``[3, size, size]`` in [0, 1]
    (``[size, size, 3]`` with ``channels_last``; channel order jaw, eyes/brows/nose, mouth)."""
    img = motion_maps(np.asarray(frames)[None], mode, half_life=half_life, size=size, lines=lines,
                      norm=norm)[0]
    return np.ascontiguousarray(img.transpose(1, 2, 0)) if channels_last else img
