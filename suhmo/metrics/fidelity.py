"""Fidelity and liveliness over long horizons: pose memory, the speed distribution, identity
drift and frozen or broken windows, each against real data under the same protocol.

The Fréchet distances of the landmark stack score 40-frame clips; they cannot see a head that
turns frontal over 200 frames, a tail of fast windows that is missing, or a face that slowly
becomes the mean face. This protocol (``fidelity``) generates ``horizon`` frames (default 200)
from the reference poses and compares, with real windows of ``horizon + 1`` frames of the
reference clips (a bounded seeded sample, :class:`suhmo.data.windows.WindowSet`):

Pose proxies (per frame, scale-free)
    ``yaw``: the nose tip (30) against the midpoint of the jaw ends (0, 16), along the jaw line,
    over the jaw width; ``pitch``: the nose tip against the line of the outer eye corners
    (36, 45), across it, over the eye-corner distance; ``roll``: the angle of that line, degrees.

Keys (the ``_err`` and ``_frac`` keys are the objectives, lower is better; the others show values)
    ``pose_mem_<proxy>_<lag>``  |corr_gen - corr_real| of the proxy's values at t and t + lag,
                                pooled over sequences and t, for lags 40, 80, 200 (within the
                                horizon): how long a pose is remembered, against people.
    ``pose_mem_err``            the mean of those cells.
    ``speed_p10/p50/p90``       percentiles of the per-window speed (40-frame windows, mean
                                landmark displacement per frame) over the real median window
                                speed (real data: its own percentiles, e.g. 0.64 / 1.00 / 1.59).
    ``speed_pct_err``           mean over the three of |log(generated / real percentile)|.
    ``id_drift``                the identity change over the horizon: RMS distance between the
                                Procrustes-aligned mean shape of the first and of the last 40
                                frames, generated over real (1 = drifts as much as people do);
                                ``id_drift_err`` = |log id_drift|.
    ``frozen_frac``             share of generated windows slower than 0.1 x the real median.
    ``broken_frac``             share of generated windows whose mean shape implausibility (the
                                landmark stack's, about 1 on real frames) exceeds twice the
                                most implausible real window's (a face that is no longer a face).
    ``block_speed_min/max``     the lowest and highest median window speed of consecutive
                                200-frame (8 s) blocks, over the real median: a long horizon
                                (``suhmo evaluate --horizon 1500``) shows whether it holds.
"""

from __future__ import annotations

import numpy as np

from suhmo.geometry import align_shapes, centre_scale
from suhmo.metrics import landmark as lm

VERSION = "fidelity-v1"
LAGS = (40, 80, 200)
PROXIES = ("yaw", "pitch", "roll")
HORIZON = 200  # generated frames by default: the longest lag
WINDOW = lm.SCORED_FRAMES  # frames per speed / identity window
BLOCK = 200  # frames per block of the long-horizon probe (8 s at 25 fps)
PERCENTILES = (10, 50, 90)
FROZEN = 0.1  # a window slower than this x the real median window speed is frozen
BROKEN = 2.0  # a window more implausible than this x the most implausible real window is broken
FLOOR = 1e-3  # ratios are floored here in the log errors (a frozen face: |log 1e-3| = 6.9)
MEM_KEYS = tuple(f"pose_mem_{p}_{lag}" for p in PROXIES for lag in LAGS)
KEYS = MEM_KEYS + ("pose_mem_err",) + tuple(f"speed_p{q}" for q in PERCENTILES) + (
    "speed_pct_err", "id_drift", "id_drift_err", "frozen_frac", "broken_frac", "block_speed_min",
    "block_speed_max")


def pose_proxies(x: np.ndarray) -> dict[str, np.ndarray]:
    """``x [..., 68, 2]`` -> ``{"yaw", "pitch", "roll"}`` each ``[...]`` (module docstring)."""
    x = np.asarray(x, np.float64)
    nose = x[..., 30, :]
    j0, j16 = x[..., 0, :], x[..., 16, :]
    jaw = j16 - j0
    jw = np.maximum(np.linalg.norm(jaw, axis=-1), 1e-9)
    e0, e1 = x[..., 36, :], x[..., 45, :]
    eye = e1 - e0
    iod = np.maximum(np.linalg.norm(eye, axis=-1), 1e-9)
    across = np.stack([-eye[..., 1], eye[..., 0]], -1) / iod[..., None]
    return {"yaw": ((nose - (j0 + j16) / 2) * jaw).sum(-1) / jw**2,
            "pitch": ((nose - (e0 + e1) / 2) * across).sum(-1) / iod,
            "roll": np.degrees(np.arctan2(eye[..., 1], eye[..., 0]))}


def lag_correlation(s: np.ndarray, lag: int) -> float:
    """Pearson correlation of ``s[:, t]`` with ``s[:, t + lag]`` pooled over rows and t
    (``s [N, T]``); 1.0 when both sides are the same constant per row (a frozen face)."""
    a, b = s[:, :s.shape[1] - lag].ravel(), s[:, lag:].ravel()
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    if den <= 1e-300:
        return 1.0
    return float((a * b).sum() / den)


def window_speeds(seqs: np.ndarray, start: int = 1) -> np.ndarray:
    """Mean landmark displacement per frame of consecutive ``WINDOW``-frame windows of
    ``seqs [N, T, 68, 2]`` from frame ``start`` -> ``[N, W]``."""
    seqs = np.asarray(seqs, np.float64)
    step = np.linalg.norm(np.diff(seqs, axis=1), axis=-1).mean(-1)  # [N, T-1]: into frame t
    step = step[:, start - 1:]
    w = step.shape[1] // WINDOW
    return step[:, :w * WINDOW].reshape(len(seqs), w, WINDOW).mean(-1)


def mean_shapes(seqs: np.ndarray, mean_shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Procrustes-aligned mean shape of the first and of the last ``WINDOW`` frames of each
    sequence: ``([N, 68, 2], [N, 68, 2])``."""
    def aligned(x):
        _, _, xn = centre_scale(np.asarray(x, np.float64))
        return align_shapes(xn, mean_shape)[0].mean(1)

    return aligned(seqs[:, :WINDOW]), aligned(seqs[:, -WINDOW:])


def _id_distance(seqs: np.ndarray, mean_shape: np.ndarray) -> float:
    first, last = mean_shapes(seqs, mean_shape)
    return float(np.sqrt(((first - last) ** 2).sum(-1).mean(-1)).mean())


class FidelityReference:
    """The real side of the protocol, from real windows of ``horizon + 1`` frames (streamed)."""

    def __init__(self, arrays: dict):
        self.a = arrays

    @classmethod
    def fit(cls, windows, basis: lm.LandmarkBasis, chunk: int = 128) -> "FidelityReference":
        """``windows``: a WindowSet (or array) of real windows ``[N, L, 68, 2]``, L > 200."""
        n, length = len(windows), windows.shape[1]
        if n < 2:
            raise ValueError(f"fidelity: need at least 2 real windows of {length} frames, got {n}")
        pose = {p: [] for p in PROXIES}
        speeds, implaus, shapes = [], [], []
        mean_shape = basis.mean_shape
        it = windows.chunks(chunk) if hasattr(windows, "chunks") else (
            np.asarray(windows[lo:lo + chunk]) for lo in range(0, n, chunk))
        for w in it:
            w = np.asarray(w, np.float64)
            for p, v in pose_proxies(w).items():
                pose[p].append(v.astype(np.float32))
            speeds.append(window_speeds(w))
            u = basis.implausibility(w[:, 1:])  # [c, L-1]
            wn = (u.shape[1] // WINDOW) * WINDOW
            implaus.append(u[:, :wn].reshape(len(w), -1, WINDOW).mean(-1).ravel())
            first, last = mean_shapes(w, mean_shape)
            shapes.append(np.sqrt(((first - last) ** 2).sum(-1).mean(-1)))
        pose_all = {p: np.concatenate(v) for p, v in pose.items()}
        sp = np.concatenate(speeds).ravel()
        med = float(np.median(sp))
        a = {"lags": np.array([lag for lag in LAGS if lag < length]), "median_speed": np.asarray(med),
             "speed_pct": np.percentile(sp, PERCENTILES) / max(med, 1e-12),
             "id_distance": np.asarray(float(np.concatenate(shapes).mean())),
             "broken_level": np.asarray(BROKEN * float(np.concatenate(implaus).max())), "num_windows": np.asarray(n),
             "mean_shape": mean_shape}
        for p in PROXIES:
            a[f"corr.{p}"] = np.array([lag_correlation(pose_all[p], lag) for lag in a["lags"]])
        return cls(a)

    def to_arrays(self) -> dict:
        return dict(self.a)


def fidelity_metrics(seqs: np.ndarray, ref: FidelityReference, basis: lm.LandmarkBasis) -> dict[str, float]:
    """Every key of the protocol for generated ``seqs [N, H + 1, 68, 2]`` (frame 0 = reference)."""
    a = ref.a
    seqs = np.asarray(seqs, np.float64)
    if not (np.isfinite(seqs).all() and np.abs(seqs).max() < 1e6):
        return {k: float("inf") for k in KEYS}
    out: dict[str, float] = {}
    poses = pose_proxies(seqs)
    cells = []
    for p in PROXIES:
        for lag, real in zip(a["lags"], a[f"corr.{p}"]):
            if lag >= seqs.shape[1]:
                continue
            d = abs(lag_correlation(poses[p], int(lag)) - float(real))
            out[f"pose_mem_{p}_{int(lag)}"] = d
            cells.append(d)
    out["pose_mem_err"] = float(np.mean(cells)) if cells else float("nan")
    med = float(a["median_speed"])
    sp = window_speeds(seqs) / max(med, 1e-12)  # [N, W]
    pct = np.percentile(sp.ravel(), PERCENTILES)
    for q, v in zip(PERCENTILES, pct):
        out[f"speed_p{q}"] = float(v)
    out["speed_pct_err"] = float(np.mean(np.abs(np.log(np.maximum(pct, FLOOR) / a["speed_pct"]))))
    ratio = _id_distance(seqs, a["mean_shape"]) / max(float(a["id_distance"]), 1e-12)
    out["id_drift"] = float(ratio)
    out["id_drift_err"] = float(abs(np.log(max(ratio, FLOOR))))
    out["frozen_frac"] = float((sp < FROZEN).mean())
    u = basis.implausibility(seqs[:, 1:])
    wn = (u.shape[1] // WINDOW) * WINDOW
    win_u = u[:, :wn].reshape(len(seqs), -1, WINDOW).mean(-1)
    out["broken_frac"] = float((win_u > float(a["broken_level"])).mean())
    per_block = max(1, BLOCK // WINDOW)
    blocks = [np.median(sp[:, i:i + per_block]) for i in range(0, sp.shape[1] - per_block + 1, per_block)]
    blocks = blocks or [float(np.median(sp))]
    out["block_speed_min"], out["block_speed_max"] = float(min(blocks)), float(max(blocks))
    return out
