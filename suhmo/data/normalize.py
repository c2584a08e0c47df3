"""Normalisation of landmark clips into the paper's [0, 1] frame.

Two modes (``cfg.data.normalize``):

``bbox`` (default, keeps head translation; the authors' CONFER preprocessing)
    Per clip, take the bounding box of ALL its landmarks over all frames, make it square
    (side = the larger of width and height), enlarge it by ``scale`` (1.1) about its centre
    and map it onto the unit square: ``x' = (x - c) / side + 0.5``. Aspect ratio is kept,
    every point of the clip lands in [0.5 - 0.5/scale, 0.5 + 0.5/scale], and a head that
    moves across the frame still moves in the normalised clip.

``centred`` (suppresses translation, like VoxCeleb2's face-track crops)
    Per frame, subtract the face centre ``c_t`` (mean of the rigid points 27-47: nose and
    eyes, which do not move with the mouth or the brows), then apply the same square scaling
    with the side taken from the centred clip's extent: ``x'_t = (x_t - c_t) / side + 0.5``.
    Rotation and expression remain; head translation is gone.

Both are affine per frame and exactly invertible from the returned ``NormParams``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from suhmo.data.dataset import DataError, LandmarkSet

RIGID_POINTS = np.arange(27, 48)  # nose bridge, nose base, both eyes
MODES = ("bbox", "centred")


@dataclass
class NormParams:
    """``x_norm = (x - centre) / side + 0.5``; centre is [2] (bbox) or [T, 2] (centred)."""

    mode: str
    centre: np.ndarray
    side: float


def normalize_clip(clip: np.ndarray, mode: str = "bbox", scale: float = 1.1) -> tuple[np.ndarray, NormParams]:
    """Normalise one clip ``[T, 68, 2]``; returns the normalised clip and its parameters."""
    if mode not in MODES:
        raise DataError(f"normalize mode {mode!r}: choose one of {', '.join(MODES)}")
    if not scale > 0:
        raise DataError(f"normalize scale={scale}: must be > 0")
    clip = np.asarray(clip, dtype=np.float64)
    if mode == "bbox":
        lo = clip.reshape(-1, 2).min(0)
        hi = clip.reshape(-1, 2).max(0)
        centre = (lo + hi) / 2
        rel = clip - centre
        extent = hi - lo
    else:
        centre = clip[:, RIGID_POINTS].mean(axis=1)  # [T, 2]
        rel = clip - centre[:, None, :]
        extent = 2 * np.abs(rel).reshape(-1, 2).max(0)  # symmetric about the face centre
    side = float(max(extent.max(), 1e-6) * scale)
    out = rel / side + 0.5
    return out.astype(np.float32), NormParams(mode=mode, centre=centre, side=side)


def denormalize_clip(clip: np.ndarray, params: NormParams) -> np.ndarray:
    """Inverse of :func:`normalize_clip` (back to the original units)."""
    clip = np.asarray(clip, dtype=np.float64)
    centre = params.centre if params.centre.ndim == 1 else params.centre[:, None, :]
    return ((clip - 0.5) * params.side + centre).astype(np.float32)


def normalize_set(ls: LandmarkSet, mode: str = "bbox", scale: float = 1.1) -> LandmarkSet:
    """Normalise every clip of ``ls`` (see module docstring). Metadata is kept; the bbox
    parameters are stored per clip as ``norm_side`` [C] and, for bbox mode, ``norm_centre`` [C, 2]."""
    lazy = getattr(ls.clips, "with_normalization", None)
    if lazy is not None:  # a packed set: every window is normalised when it is read
        if mode not in MODES:
            raise DataError(f"normalize mode {mode!r}: choose one of {', '.join(MODES)}")
        clips = lazy(mode, scale)
        res = ls.copy_with(clips, normalized=np.asarray(mode))
        res.meta["norm_side"], res.meta["norm_centre"] = clips.norm_params()
        return res
    clips, sides, centres = [], [], []
    for c in ls.clips:
        out, p = normalize_clip(c, mode, scale)
        clips.append(out)
        sides.append(p.side)
        centres.append(p.centre if mode == "bbox" else p.centre.mean(0))
    res = ls.copy_with(clips, normalized=np.asarray(mode))
    res.meta["norm_side"] = np.asarray(sides, dtype=np.float32)
    res.meta["norm_centre"] = np.asarray(centres, dtype=np.float32)
    return res
