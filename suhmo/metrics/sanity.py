"""The degradation check: does every distance rank held-out real data closer to the reference
than degraded versions of it? (``suhmo metrics sanity``)

Split
    The clips are split BY PERSON into a reference half and a held-out half. Real datasets are
    heterogeneous (lab clips with little motion next to deliberately expressive ones), so a
    random split of a few dozen persons can give halves that differ by 2x in speed, and then a
    "2x slower" copy of the held-out half is genuinely closer to the reference than the held-out
    half itself. The split is therefore stratified: within each stratum (``origin`` metadata,
    else ``kind``, else one), persons are assigned to minimise the imbalance of frame count
    and of the typical landmark speed (frame-weighted mean of the log speed of 40-frame
    windows) between the halves (exhaustive search for up to 16 persons a
    stratum, greedy beyond), so that the halves are exchangeable samples of the same data.

Degradations of the held-out half (all seeded)
    ``frozen``    every window is its first frame repeated (a generator that does not move);
    ``shuffled``  the frames of every window in random order;
    ``jitter``    i.i.d. Gaussian noise on every coordinate, 2 % of the face's RMS radius;
    ``drift``     a smooth non-rigid distortion of the face shape (random quadratic warp in the
                  face frame) growing linearly from 0 at the first frame of the window to 10 %
                  of the face's RMS radius at its last;
    ``collapse``  mode collapse: the windows of ONE held-out clip (the one with the most
                  windows, i.e. the most varied) repeated to the size of the held-out set;
    ``fast``      2x faster: every other frame of each clip, continued back and forth
                  (ping-pong) to the clip's length, so each clip keeps its share of windows;
    ``slow``      2x slower: each clip linearly interpolated at half-frame steps, windows cut
                  with twice the stride (evenly thinned to the held-out count), so the number
                  of windows and the content stay the same.
    Windows are 41 frames (a reference frame + the 40 scored ones) with the given stride.
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional

import numpy as np

from suhmo.geometry import face_radius
from suhmo.metrics import landmark as lm

DEGRADATIONS = ("frozen", "shuffled", "jitter", "drift", "collapse", "fast", "slow")
CONDITIONS = ("real",) + DEGRADATIONS
JITTER = 0.02
DRIFT = 0.10
# distances of the landmark stack checked by the sanity command (lower = closer to real)
DISTANCES = lm.FD_KEYS
# scalar statistics shown for information: they summarise one aspect each and are not
# expected to separate every degradation (e.g. a frozen face has no shape drift at all)
DIAGNOSTICS = ("drift", "motion_energy_err")


def _log_speed(clip: np.ndarray, length: int = lm.SCORED_FRAMES + 1) -> float:
    """Mean over the clip's windows of the log of their mean landmark speed."""
    sp = np.sqrt((np.diff(np.asarray(clip, np.float64), axis=0) ** 2).sum(-1)).mean(-1)  # [T-1]
    n = min(len(sp), length - 1)
    win = np.convolve(sp, np.ones(n) / n, mode="valid")
    return float(np.log(win + 1e-12).mean())


def balanced_person_split(clips: list[np.ndarray], persons: list[str],
                          strata: Optional[list[str]] = None) -> tuple[list[int], list[int]]:
    """Clip indices (reference, held-out): persons never straddle the halves (module docstring)."""
    strata = strata if strata is not None else ["all"] * len(clips)
    totals = np.zeros((2, 2))  # half x (frames, frames * log speed)
    side_of: dict[str, int] = {}
    order = sorted(set(strata), key=lambda s: -sum(len(c) for c, t in zip(clips, strata) if t == s))
    for stratum in order:
        units: dict[str, list[int]] = {}
        for i, (p, t) in enumerate(zip(persons, strata)):
            if t == stratum and p not in side_of:
                units.setdefault(p, []).append(i)
        names = sorted(units)
        stats = np.array([[sum(len(clips[i]) for i in units[p]),
                           sum(len(clips[i]) * _log_speed(clips[i]) for i in units[p])] for p in names])
        if not names:
            continue

        def cost(assign) -> float:
            t = totals.copy()
            for a, s in zip(assign, stats):
                t[a] += s
            if (t[:, 0] == 0).any():
                return 1e9
            log_speed = t[:, 1] / t[:, 0]
            return abs(np.log(t[0, 0] / t[1, 0])) + 2 * abs(log_speed[0] - log_speed[1])

        if len(names) <= 16:
            cands = itertools.product((0, 1), repeat=len(names))
            best = min(cands, key=lambda a: (cost(a) if len(names) > 1 or totals[:, 0].all()
                                             else abs(a[0] - int(totals[1, 0] < totals[0, 0]))))
        else:  # greedy: largest first to the side that lowers the cost most
            best = [0] * len(names)
            for k in np.argsort(-stats[:, 0]):
                c = []
                for a in (0, 1):
                    best[k] = a
                    c.append(cost(best))
                best[k] = int(np.argmin(c))
        for p, a in zip(names, best):
            side_of[p] = a
            totals[a] += stats[names.index(p)]
    ref = [i for i, p in enumerate(persons) if side_of[p] == 0]
    held = [i for i, p in enumerate(persons) if side_of[p] == 1]
    if not ref or not held:
        raise ValueError("sanity: need clips of at least two persons to split into halves")
    return ref, held


def _face_radius(w: np.ndarray) -> np.ndarray:
    return face_radius(w)[..., None, None]


def _pingpong(clip: np.ndarray, n: int) -> np.ndarray:
    if len(clip) == 1:
        return np.repeat(clip, n, 0)
    period = 2 * (len(clip) - 1)
    i = np.arange(n) % period
    return clip[np.where(i >= len(clip), period - i, i)]


def _half_speed(clip: np.ndarray) -> np.ndarray:
    t = np.arange(0, len(clip) - 1 + 1e-9, 0.5)
    i = np.minimum(np.floor(t).astype(int), len(clip) - 2)
    f = (t - i)[:, None, None]
    return ((1 - f) * clip[i] + f * clip[i + 1]).astype(np.float32)


def _drift(w: np.ndarray, rng: np.random.Generator, amp: float) -> np.ndarray:
    c = w.mean(-2, keepdims=True)
    s = _face_radius(w)
    u = (w - c) / s
    co = rng.normal(size=(len(w), 1, 1, 4))
    co /= np.linalg.norm(co, axis=-1, keepdims=True)
    x, y = u[..., 0], u[..., 1]
    d = np.stack([co[..., 0] * x**2 + co[..., 1] * x * y, co[..., 2] * y**2 + co[..., 3] * x**2], -1)
    d -= d.mean(-2, keepdims=True)
    d /= np.sqrt((d**2).sum(-1).mean(-1))[..., None, None]
    ramp = np.linspace(0.0, 1.0, w.shape[1])[None, :, None, None]
    return (w + amp * s * ramp * d).astype(np.float32)


def degraded_sets(held_clips: list[np.ndarray], *, length: int = lm.SCORED_FRAMES + 1, stride: int = 5,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """{condition: windows [N, length, 68, 2]} for the held-out clips (module docstring)."""
    rng = np.random.default_rng(seed)
    real = lm.real_windows(held_clips, length, stride)
    if len(real) < 2:
        raise ValueError(f"sanity: the held-out half has {len(real)} windows of {length} frames; need 2+")
    out = {"real": real}
    out["frozen"] = np.repeat(real[:, :1], length, axis=1)
    perm = np.argsort(rng.random(real.shape[:2]), axis=1)
    out["shuffled"] = np.take_along_axis(real, perm[:, :, None, None], axis=1)
    out["jitter"] = (real + rng.normal(size=real.shape) * JITTER * _face_radius(real)).astype(np.float32)
    out["drift"] = _drift(real, rng, DRIFT)
    per_clip = [lm.real_windows([c], length, stride) for c in held_clips]
    big = per_clip[int(np.argmax([len(p) for p in per_clip]))]
    out["collapse"] = big[np.arange(len(real)) % len(big)]
    out["fast"] = lm.real_windows([_pingpong(c[::2], len(c)) for c in held_clips], length, stride)
    slow = lm.real_windows([_half_speed(c) for c in held_clips], length, 2 * stride)
    # the same number of windows in every condition (the Fréchet estimate's bias depends on it)
    out["slow"] = slow[np.linspace(0, len(slow) - 1, min(len(slow), len(real))).round().astype(int)]
    return out


def run_sanity(clips: list[np.ndarray], persons: list[str], *, strata: Optional[list[str]] = None,
               stride: int = 5, seed: int = 0,
               extra: Optional[Callable[[dict, list, list], dict]] = None) -> dict:
    """Fit the landmark reference on one half, score every condition of the other.

    Returns ``{"metrics": {name: {condition: d}}, "diagnostics": {...}, "split": {...}}``;
    ``extra(sets, ref_clips, held_clips)`` may add more ``{name: {condition: d}}`` rows (the
    detector stack).
    """
    ref_idx, held_idx = balanced_person_split(clips, persons, strata)
    ref_clips = [clips[i] for i in ref_idx]
    held_clips = [clips[i] for i in held_idx]
    ref_windows = lm.real_windows(ref_clips, lm.SCORED_FRAMES + 1, stride)
    ref = lm.LandmarkReference.fit(ref_windows, seed=seed)
    sets = degraded_sets(held_clips, stride=stride, seed=seed)
    scores = {cond: lm.landmark_metrics(w, ref) for cond, w in sets.items()}
    metrics = {k: {c: scores[c][k] for c in CONDITIONS} for k in DISTANCES}
    if extra is not None:
        metrics.update(extra(sets, ref_clips, held_clips))
    diagnostics = {k: {c: scores[c][k] for c in CONDITIONS} for k in DIAGNOSTICS}
    split = {
        "reference": {"clips": len(ref_idx), "persons": len({persons[i] for i in ref_idx}),
                      "windows": int(len(ref_windows)), "speed": ref.speed},
        "held_out": {"clips": len(held_idx), "persons": len({persons[i] for i in held_idx}),
                     "windows": int(len(sets["real"])), "speed": lm._speed(sets["real"])},
    }
    return {"metrics": metrics, "diagnostics": diagnostics, "split": split}


def failures(result: dict) -> list[str]:
    """``"name: condition"`` for every distance that does not rank real strictly closest."""
    bad = []
    for name, row in result["metrics"].items():
        for cond in DEGRADATIONS:
            if cond in row and not row["real"] < row[cond]:
                bad.append(f"{name}: {cond}")
    return bad
