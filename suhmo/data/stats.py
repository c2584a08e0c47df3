"""Per-clip motion statistics of landmark clips (for ``suhmo data check`` and benchmarks).

All statistics are computed on bbox-normalised clips (see ``normalize.py``), so clips of
different frame sizes compare. Ranges are robust: the 5th-95th percentile spread over the
clip's frames, so a single detector glitch does not define them.

- ``speed``: mean landmark speed, normalised units per second (mean over frames and points
  of ``|x_t - x_{t-1}| * fps``).
- ``roll_range``: range of the eye-line angle (outer eye corners 36 -> 45), degrees.
- ``yaw_range``: range of the yaw proxy, the horizontal offset of the nose tip (30) from the
  midpoint of the outer eye corners divided by the eye-corner distance (0 = frontal).
- ``pitch_range``: same for the vertical offset (nose tip below the eye line).
- ``mouth_range``: range of the inner-lip opening (62 <-> 66) divided by the eye-corner distance.
"""

from __future__ import annotations

import numpy as np

from suhmo.data.dataset import LandmarkSet
from suhmo.data.normalize import normalize_clip

STAT_KEYS = ("speed", "roll_range", "yaw_range", "pitch_range", "mouth_range", "mouth_max")


def _spread(x: np.ndarray) -> float:
    lo, hi = np.percentile(x, [5, 95])
    return float(hi - lo)


def pose_signals(clip: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame roll (deg), yaw and pitch proxies and mouth opening of a ``[T, 68, 2]`` clip."""
    c = np.asarray(clip, dtype=np.float64)
    r, l = c[:, 36], c[:, 45]
    eye = l - r
    iod = np.maximum(np.linalg.norm(eye, axis=-1), 1e-9)
    mid = (r + l) / 2
    nose = c[:, 30] - mid
    # express the nose offset in the eye-line frame so that roll does not leak into yaw
    ex = eye / iod[:, None]
    ey = np.stack([-ex[:, 1], ex[:, 0]], -1)
    return {
        "roll": np.degrees(np.arctan2(eye[:, 1], eye[:, 0])),
        "yaw": (nose * ex).sum(-1) / iod,
        "pitch": (nose * ey).sum(-1) / iod,
        "mouth": np.linalg.norm(c[:, 66] - c[:, 62], axis=-1) / iod,
    }


def clip_stats(clip: np.ndarray, fps: float, *, normalized: bool = False) -> dict[str, float]:
    if not normalized:
        clip, _ = normalize_clip(clip, "bbox", 1.1)
    s = pose_signals(clip)
    v = np.linalg.norm(np.diff(np.asarray(clip, dtype=np.float64), axis=0), axis=-1)
    return {
        "speed": float(v.mean() * fps) if len(v) else 0.0,
        "roll_range": _spread(s["roll"]),
        "yaw_range": _spread(s["yaw"]),
        "pitch_range": _spread(s["pitch"]),
        "mouth_range": _spread(s["mouth"]),
        "mouth_max": float(np.percentile(s["mouth"], 95)),
    }


def set_stats(ls: LandmarkSet, *, normalized: bool = False) -> dict[str, np.ndarray]:
    """``{stat: [C]}`` for every clip of ``ls``."""
    rows = [clip_stats(c, ls.fps, normalized=normalized) for c in ls.clips]
    return {k: np.array([r[k] for r in rows]) for k in STAT_KEYS}


def summarize(ls: LandmarkSet) -> dict:
    """A JSON-ready summary: counts, durations, per-clip lengths and motion statistics."""
    lengths = ls.lengths
    st = set_stats(ls, normalized="normalized" in ls.attrs)
    persons = ls.persons()

    def mmm(x) -> dict:
        x = np.asarray(x, dtype=np.float64)
        return {"min": round(float(x.min()), 4), "median": round(float(np.median(x)), 4),
                "max": round(float(x.max()), 4)}

    out = {
        "file": ls.path,
        "clips": len(ls.clips),
        "frames": int(lengths.sum()),
        "fps": float(ls.fps),
        "duration_s": round(float(lengths.sum() / ls.fps), 2),
        "persons": len(set(persons)),
        "clip_frames": mmm(lengths),
        "clip_seconds": mmm(lengths / ls.fps),
    }
    for k in STAT_KEYS:
        out[k] = mmm(st[k])
    if "group" in ls.meta or "pair_id" in ls.meta:
        out["groups"] = len(set(ls.groups() or []))
    return out
