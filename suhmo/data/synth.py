"""Procedural talking heads: the embedded default dataset.

Every synthetic clip is built from the 3-D mean face shipped beside this module
(``mean_face_3d_68.csv``; its header names the source: the OpenFace 68-landmark 3-D model).

Per speaker (a clip):
  identity   global size, face width/height, jaw width, eye spacing, nose length, mouth width,
             brow height, and a small smooth per-point shape offset;
  style      amplitudes and time scales of idle sway, rates/amplitudes of nods and shakes,
             speech rate and mouth-opening amplitude, blink rate, brow-raise rate,
             translation amplitude, camera distance and framing, detector jitter level.
Dynamics (per frame):
  head pose  yaw, pitch, roll = per-speaker mean pose + smooth stochastic sway (low-passed
             Gaussian noise) + nods (damped pitch oscillations) and shakes (yaw oscillations)
             at Poisson times; rotation is about a neck pivot behind and below the face;
  position   smooth stochastic translation in x, y and depth;
  expression speech-like mouth opening (syllable bumps at 3-6 Hz grouped in phrases separated
             by pauses; the jaw and lower lip drop), blinks, brow raises;
  camera     perspective projection (pinhole, focal length in pixels) into a 640 x 480 frame,
             then small detector-like jitter (white plus slowly varying per-point noise).
Clips come in conversations of two speakers (metadata ``group``) who take turns: the
listener nods more and keeps the mouth mostly closed, so ``pairing=cooccurring`` has real
co-occurring pairs to work with.

Deterministic: clip k depends only on (seed, k // 2), so a smaller set is a prefix of a
larger one with the same seed and duration.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from suhmo.data.dataset import FRAME_BYTES, DataError, LandmarkSet
from suhmo.utils import check_memory

FRAME_WH = (640, 480)
_JAW_DROP = np.clip(1 - np.abs(np.arange(17) - 8) / 7.0, 0, 1) ** 1.3  # chin 1, ears 0
_LOWER_LIP = [55, 56, 57, 58, 59, 65, 66, 67]
_UPPER_LIP = [49, 50, 51, 52, 53, 61, 62, 63]
_CORNERS = [48, 54, 60, 64]
_UPPER_LID = {37: 41, 38: 40, 43: 47, 44: 46}  # upper eyelid point -> lower eyelid point below it


@lru_cache(maxsize=1)
def mean_face() -> np.ndarray:
    """The 3-D mean face ``[68, 3]`` in mm (x right, y down, z away from the camera)."""
    text = resources.files("suhmo.data").joinpath("mean_face_3d_68.csv").read_text()
    rows = [ln.split(",") for ln in text.splitlines() if ln and not ln.startswith(("#", "point"))]
    pts = np.array([[float(v) for v in r[1:4]] for r in rows], dtype=np.float64)
    assert pts.shape == (68, 3), pts.shape
    return pts


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, tau_s: float, dims: int = 1) -> np.ndarray:
    """Stationary Gaussian process ``[n, dims]`` with unit std, correlation time ~ ``tau_s`` seconds
    (white noise low-passed by a Gaussian kernel)."""
    sigma = max(tau_s * fps, 0.5)
    half = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    k /= np.sqrt((k ** 2).sum())
    w = rng.standard_normal((n + 2 * half, dims))
    out = np.stack([np.convolve(w[:, d], k, mode="valid") for d in range(dims)], 1)
    return out[:n]


def _events(rng: np.random.Generator, duration: float, rate: float) -> np.ndarray:
    """Poisson event times (s) over ``duration`` with ``rate`` per second."""
    n = rng.poisson(rate * duration)
    return np.sort(rng.uniform(0, duration, n))


def _oscillation(t: np.ndarray, t0: float, freq: float, cycles: float, amp: float) -> np.ndarray:
    """A windowed sine burst (one nod or shake): ``amp * sin(2 pi f (t - t0)) * hann``."""
    dur = cycles / freq
    u = (t - t0) / dur
    inside = (u >= 0) & (u <= 1)
    return np.where(inside, amp * np.sin(2 * np.pi * freq * (t - t0)) * np.sin(np.pi * u) ** 2 * 1.3, 0.0)


def _bump(t: np.ndarray, t0: float, rise: float, fall: float) -> np.ndarray:
    """0 -> 1 -> 0 bump starting at t0: smooth rise in ``rise`` s, decay in ``fall`` s."""
    up = np.clip((t - t0) / rise, 0, 1)
    down = np.clip((t - t0 - rise) / fall, 0, 1)
    return np.where(t < t0 + rise, np.sin(np.pi / 2 * up) ** 2, np.cos(np.pi / 2 * down) ** 2)


def _rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """``[T, 3, 3]`` = Rz(roll) @ Ry(yaw) @ Rx(pitch) (radians). Positive pitch: nose down."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1),
                   np.stack([zero, sp, cp], -1)], -2)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1),
                   np.stack([-sy, zero, cy], -1)], -2)
    rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


def _identity(rng: np.random.Generator) -> np.ndarray:
    """A speaker's neutral 3-D face ``[68, 3]``: the mean face with identity variation."""
    f = mean_face().copy()
    f *= rng.uniform(0.9, 1.1)
    f[:, 0] *= rng.normal(1.0, 0.05)
    f[:, 1] *= rng.normal(1.0, 0.05)
    side = np.sign(f[:, 0])
    f[:17, 0] *= rng.normal(1.0, 0.05)  # jaw width
    f[36:48, 0] += side[36:48] * rng.normal(0, 2.0)  # eye spacing
    f[31:36, 1] += rng.normal(0, 2.0)  # nose length
    f[27:36, 2] -= rng.uniform(-3, 3) * np.linspace(0.2, 1, 9)  # nose depth
    mc = f[48:68].mean(0)
    f[48:68, 0] = mc[0] + (f[48:68, 0] - mc[0]) * rng.normal(1.0, 0.07)  # mouth width
    f[48:68, 1] += rng.normal(0, 2.0)
    f[17:27, 1] += rng.normal(0, 2.0)  # brow height
    f += rng.normal(0, 0.8, f.shape)  # small per-point shape offsets
    return f


def _turns(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Turn-taking schedule: list of (start, end, speaker 0/1) covering ``duration`` seconds."""
    out, t, who = [], 0.0, int(rng.integers(2))
    while t < duration:
        d = rng.uniform(1.5, 4.5)
        out.append((t, min(t + d, duration), who))
        t += d
        if rng.random() < 0.8:
            who = 1 - who
    return np.array(out)


def _speech(rng: np.random.Generator, t: np.ndarray, speaking: np.ndarray, rate: float) -> np.ndarray:
    """Mouth-opening envelope in [0, 1]: syllable bumps in phrases while ``speaking``."""
    o = np.zeros_like(t)
    dur = t[-1] + 1e-9
    s = 0.0
    while s < dur:
        phrase = rng.uniform(0.8, 2.5)
        e = min(s + phrase, dur)
        u = s
        while u < e:
            d = rng.uniform(0.6, 1.4) / rate
            inside = (t >= u) & (t < u + d)
            peak = rng.uniform(0.25, 1.0)
            o[inside] = np.maximum(o[inside], peak * np.sin(np.pi * (t[inside] - u) / d) ** 2)
            u += d
        s = e + rng.uniform(0.2, 0.9)  # pause between phrases
    return o * speaking


def _clip(rng: np.random.Generator, n: int, fps: float, turns: np.ndarray, who: int,
          listening_style: float) -> np.ndarray:
    """One speaker's ``[n, 68, 2]`` pixel landmarks."""
    t = np.arange(n) / fps
    dur = n / fps
    face = _identity(rng)
    speaking = np.zeros(n)
    for s, e, w in turns:
        if int(w) == who:
            speaking[(t >= s) & (t < e)] = 1.0
    # soften turn edges over ~0.2 s
    speaking = np.convolve(np.pad(speaking, 3, mode="edge"), np.ones(7) / 7, mode="valid")
    talk = 0.7 + 0.6 * speaking  # speakers move more while talking

    # ----------------------------------------------------------------- style
    sway = np.radians(rng.uniform([1.0, 0.8, 0.4], [4.0, 3.0, 1.6]))  # yaw, pitch, roll std
    sway_tau = rng.uniform(0.25, 0.8)
    mean_pose = np.radians(rng.normal(0, [8.0, 6.0, 3.0]))
    nod_rate, shake_rate = rng.uniform(0.08, 0.35), rng.uniform(0.03, 0.15)
    syll_rate = rng.uniform(3.5, 5.5)
    mouth_amp = rng.uniform(10.0, 22.0)  # mm of lip separation at a full syllable
    blink_rate = rng.uniform(0.2, 0.5)
    brow_rate = rng.uniform(0.05, 0.25)
    trans_amp = rng.uniform([2.0, 1.5, 5.0], [12.0, 7.0, 25.0])  # mm, x y z
    dist = rng.uniform(500.0, 900.0)  # camera distance, mm
    focal = rng.uniform(700.0, 1100.0)  # px
    centre = np.array(FRAME_WH) / 2 + rng.normal(0, [40.0, 25.0])
    jitter_px = rng.uniform(0.1, 0.35)

    # ----------------------------------------------------------------- head pose
    pose = mean_pose + _smooth_noise(rng, n, fps, sway_tau, 3) * sway * talk[:, None]
    slow = _smooth_noise(rng, n, fps, 2.5, 3) * sway * 0.8  # idle drift
    pose += slow
    for t0 in _events(rng, dur, nod_rate * (1 + listening_style * (1 - speaking.mean()))):
        pose[:, 1] += _oscillation(t, t0, rng.uniform(1.5, 3.0), rng.integers(1, 4),
                                   np.radians(rng.uniform(2.0, 7.0)))
    for t0 in _events(rng, dur, shake_rate):
        pose[:, 0] += _oscillation(t, t0, rng.uniform(1.5, 3.0), rng.integers(1, 4),
                                   np.radians(rng.uniform(3.0, 9.0)))
    trans = _smooth_noise(rng, n, fps, rng.uniform(0.6, 1.8), 3) * trans_amp

    # ----------------------------------------------------------------- expression (3-D, face frame)
    pts = np.broadcast_to(face, (n, 68, 3)).copy()
    iod = np.linalg.norm(face[45] - face[36])
    mouth = _speech(rng, t, speaking, syll_rate) * mouth_amp
    mouth += 1.2 * (1 - speaking) * np.clip(_smooth_noise(rng, n, fps, 1.0)[:, 0], 0, None)  # idle
    pts[:, _LOWER_LIP, 1] += mouth[:, None] * 0.8
    pts[:, _UPPER_LIP, 1] -= mouth[:, None] * 0.2
    pts[:, _CORNERS, 1] += mouth[:, None] * 0.3
    pts[:, :17, 1] += mouth[:, None] * _JAW_DROP[None, :] * 0.7
    width = _smooth_noise(rng, n, fps, 0.4)[:, 0] * 0.04 * iod * speaking  # rounding / spreading
    mc = face[48:68, 0].mean()
    pts[:, 48:68, 0] += (face[48:68, 0] - mc)[None, :] / iod * width[:, None] * 2
    blink = np.zeros(n)
    for t0 in _events(rng, dur, blink_rate):
        blink = np.maximum(blink, _bump(t, t0, 0.07, 0.15))
    for up, lo in _UPPER_LID.items():
        pts[:, up, 1] += blink * (face[lo, 1] - face[up, 1]) * 0.9
    brow = np.zeros(n)
    for t0 in _events(rng, dur, brow_rate * (0.5 + speaking.mean())):
        brow = np.maximum(brow, rng.uniform(0.5, 1.0) * _bump(t, t0, 0.25, rng.uniform(0.4, 1.2)))
    pts[:, 17:27, 1] -= brow[:, None] * rng.uniform(3.0, 7.0)

    # ----------------------------------------------------------------- rotate, translate, project
    pivot = np.array([0.0, 60.0, 95.0])  # neck: below and behind the face centre
    rot = _rotation(pose[:, 0], pose[:, 1], pose[:, 2])
    world = np.einsum("tij,tpj->tpi", rot, pts - pivot) + pivot + trans[:, None, :]
    depth = dist + world[..., 2]
    uv = focal * world[..., :2] / depth[..., None] + centre
    uv += rng.normal(0, jitter_px, uv.shape)
    uv += _smooth_noise(rng, n, fps, 0.15, 68 * 2).reshape(n, 68, 2) * jitter_px * 0.7
    return uv.astype(np.float32)


def synthesize(clips: int, seconds: float, seed: int, fps: float = 25.0) -> LandmarkSet:
    """``clips`` procedural talking-head clips of ``seconds`` s at ``fps`` (pixel coordinates of
    a 640 x 480 frame). Metadata per clip: person, group (conversation), source, origin,
    kind, frame_wh. Deterministic by ``seed``."""
    if clips < 1:
        raise ValueError(f"synthesize: clips={clips} must be >= 1")
    n = int(round(seconds * fps))
    if n < 3:
        raise ValueError(f"synthesize: seconds={seconds} gives {n} frames at {fps} fps; need >= 3")
    # the clips and, per clip, a few float64 frames of the same length while it is drawn
    check_memory(clips * n * FRAME_BYTES + 4 * n * 2 * FRAME_BYTES,
                 f"synthetic data of {clips} clips x {seconds:g} s at {fps:g} fps ({clips * n} frames)",
                 "use fewer or shorter clips", error=DataError)
    out, person, group = [], [], []
    for conv in range((clips + 1) // 2):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), conv]))
        turns = _turns(rng, n / fps)
        listening_style = rng.uniform(0.5, 2.0)
        for who in range(2):
            k = 2 * conv + who
            if k >= clips:
                break
            out.append(_clip(rng, n, fps, turns, who, listening_style))
            person.append(f"synth_s{seed}_p{k:03d}")
            group.append(f"synth_s{seed}_c{conv:03d}")
    c = len(out)
    meta = {
        "person": np.asarray(person),
        "group": np.asarray(group),
        "source": np.asarray([f"suhmo.data.synth:seed={seed}"] * c),
        "origin": np.asarray(["synthetic"] * c),
        "kind": np.asarray(["speech"] * c),
        "frame_wh": np.tile(np.asarray(FRAME_WH, dtype=np.int32), (c, 1)),
    }
    attrs = {"coords": np.asarray("pixels of a synthetic 640x480 frame, x right, y down")}
    return LandmarkSet(clips=out, fps=float(fps), meta=meta, path=None, attrs=attrs)
