"""The landmark metric stack: Fréchet distances, diversity, drift and motion energy computed
from normalised landmarks directly. No network weights; fast on a CPU.

What is scored
    A generated sequence is ``[F + 1, 68, 2]`` (frame 0 = the reference pose). As in the
    paper's Table 1, only the LAST 40 generated frames are scored; the frame before them is
    kept as a "segment" of 41 frames so that the velocity of the first scored frame exists.
    Real data is cut into overlapping 41-frame windows of the reference clips.

The state of a frame (17 numbers, :class:`LandmarkBasis`)
    Each frame is Procrustes-aligned to the mean face shape of the reference data, which
    splits it into
      * pose (4): centroid x, y, log scale, in-plane rotation (roll);
      * shape (12): coefficients on the first 12 principal components of the aligned shapes
        of the reference data (out-of-plane rotations and expressions live here);
      * implausibility (1): log of the residual of the aligned shape off that 12-d PCA
        subspace, i.e. how far the face is from the space of plausible face shapes.
    The basis (mean shape, PCA, scales) is fitted on the reference data and stored with the
    reference statistics, so real and generated frames go through the same fixed map.

Feature families (each standardised with the reference mean/std, then one Fréchet distance)
    ``fd_frame``  per frame: [state, log |velocity|, log |acceleration|] (51-d). Like the
                  paper's frame discriminator D_F, which sees position, velocity and
                  acceleration of each frame (Sec. 3.5), "frame realism" is the realism of the
                  kinematic state of a frame, not only of its static shape.
    ``fd_clip{L}`` for L in 10, 20, 40: the 40 scored frames are cut into 40/L chunks; per
                  chunk and state dimension, the net displacement and the log power of the
                  velocity in frequency bands (rfft bins [1,3), [3,6), [6,11), [11,21),
                  those that exist for L: 2, 3, 4 bands). The landmark analogue of the
                  paper's FVD_10/20/40 (Table 2).
    ``fd_motion`` the landmark analogue of the t-FID motion map: with the exponential moving
                  average weights of :func:`suhmo.metrics.raster.frame_weights` (centred on the
                  last frame, half-life 10 frames), per state dimension: the weighted mean
                  (where the trail is), the log |weighted slope| of position against time (the
                  direction in which the trail brightens), the log weighted spread (its
                  length) and the log weighted mean squared step (the spacing of its dots):
                  what a one-pixel-per-landmark motion map shows, as moments (68-d).

Velocities and accelerations enter on a log scale (amplitudes in units of the reference
velocity std, floor 0.1, i.e. a power floor of 1e-2): real speeds span orders of magnitude
(still lab clips next to expressive ones) and a Gaussian fitted on raw velocities would be
dominated by the few fastest windows; a still dimension gets a finite, very low value.

Scalar statistics
    ``apd``  average pairwise distance (higher = more diverse): sequences sharing the same
             reference pose (identical frame 0) form a group; the mean over groups and pairs of
             the RMS landmark distance over the scored frames (normalised units).
    ``drift`` error accumulation beyond the training length: per frame, the shape
             implausibility ``u = (sum_j (b_j / s_j)^2 + (r / r_ref)^2) / 13`` (Mahalanobis
             in the shape PCA plus the normalised PCA residual; about 1 on real frames);
             ``drift = |log(mean u over frames 41-80 / mean u over frames 1-40)|``, 0 for a
             stationary process. Sequences shorter than 80 frames use their second half
             against their first half.
    ``motion_energy`` mean landmark speed of the scored frames over the real one (1.0 =
             real speed; ~0 for the static sequences of MLE models); ``motion_energy_err``
             ``= |log(motion_energy)|`` is the minimisable form.
    ``fd_clip40_dyn`` a selection score that a frozen or drifting face cannot win:
             ``fd_clip40 * exp(motion_energy_err + drift)``, the clip distance inflated by the
             log-ratio of the speed to real speed and by the growth of shape implausibility
             (both 0 for real data: the score then equals fd_clip40; infinite for a frozen
             face). fd_clip40 alone ranks a near-still model close to a frozen face, which is
             what searches on it selected (experiments/README.md, "natural motion").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from suhmo.geometry import align_shapes, centre_scale, mean_shape_gpa, shape_pca  # noqa: F401 - mean_shape_gpa re-exported
from suhmo.metrics.frechet import feature_stats, frechet_distance
from suhmo.metrics.raster import frame_weights

VERSION = "landmark-v1"  # bump when features change: it is part of the reference cache key
SCORED_FRAMES = 40
CLIP_LENGTHS = (10, 20, 40)
SHAPE_PCS = 12
STATE_DIM = 4 + SHAPE_PCS + 1
BAND_EDGES = (1, 3, 6, 11, 21)  # rfft bins of the velocity grouped into bands
POWER_FLOOR = 1e-2
MOTION_HALF_LIFE = 10.0
FD_KEYS = ("fd_frame",) + tuple(f"fd_clip{L}" for L in CLIP_LENGTHS) + ("fd_motion",)
KEYS = FD_KEYS + ("apd", "drift", "motion_energy", "motion_energy_err", "fd_clip40_dyn")


# -------------------------------------------------------------------------------- PCA
@dataclass
class LandmarkBasis:
    """Fixed map from a frame ``[68, 2]`` to its 17-d state (see module docstring)."""

    mean_shape: np.ndarray  # [68, 2] centred, unit RMS
    pca_basis: np.ndarray  # [136, SHAPE_PCS]
    pca_std: np.ndarray  # [SHAPE_PCS] std of the coefficients on reference frames
    resid_rms: float  # RMS PCA residual on reference frames
    vel_std: np.ndarray  # [STATE_DIM] std of the per-frame state change on reference windows

    MAX_FRAMES = 20000  # frames the shape basis is fitted on (a seeded sample beyond)

    @classmethod
    def fit(cls, frames: np.ndarray, seed: int = 0, max_frames: int = MAX_FRAMES) -> "LandmarkBasis":
        frames = np.asarray(frames, np.float64).reshape(-1, 68, 2)
        if len(frames) > max_frames:
            frames = frames[np.random.default_rng(seed).choice(len(frames), max_frames, replace=False)]
        m, d, vt = shape_pca(frames)
        basis = vt[:SHAPE_PCS].T  # [136, k]
        coef = d @ basis
        resid = np.sqrt(((d - coef @ basis.T) ** 2).sum(-1))
        return cls(mean_shape=m, pca_basis=basis, pca_std=np.maximum(coef.std(0), 1e-9),
                   resid_rms=float(max(np.sqrt((resid**2).mean()), 1e-12)),
                   vel_std=np.ones(STATE_DIM))

    def decompose(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``x [..., 68, 2]`` -> (pose [..., 4], shape coefficients [..., k], residual [...])."""
        c, s, xn = centre_scale(np.asarray(x, np.float64))
        aligned, roll = align_shapes(xn, self.mean_shape)
        d = (aligned - self.mean_shape).reshape(*aligned.shape[:-2], -1)
        coef = d @ self.pca_basis
        resid = np.sqrt(((d - coef @ self.pca_basis.T) ** 2).sum(-1))
        pose = np.concatenate([c, np.log(s)[..., None], roll[..., None]], axis=-1)
        return pose, coef, resid

    def state(self, x: np.ndarray) -> np.ndarray:
        """``x [..., 68, 2]`` -> state ``[..., 17]`` = [pose, shape coefficients, log residual]."""
        pose, coef, resid = self.decompose(x)
        return np.concatenate([pose, coef, np.log(resid / self.resid_rms + 1e-6)[..., None]], axis=-1)

    def implausibility(self, x: np.ndarray) -> np.ndarray:
        """Per frame ``u`` (about 1 on real frames; module docstring, "drift")."""
        _, coef, resid = self.decompose(x)
        m = ((coef / self.pca_std) ** 2).sum(-1) + (resid / self.resid_rms) ** 2
        return m / (SHAPE_PCS + 1)

    def to_arrays(self, prefix: str = "basis.") -> dict[str, np.ndarray]:
        return {prefix + "mean_shape": self.mean_shape, prefix + "pca_basis": self.pca_basis,
                prefix + "pca_std": self.pca_std, prefix + "resid_rms": np.asarray(self.resid_rms),
                prefix + "vel_std": self.vel_std}

    @classmethod
    def from_arrays(cls, a: dict, prefix: str = "basis.") -> "LandmarkBasis":
        return cls(mean_shape=a[prefix + "mean_shape"], pca_basis=a[prefix + "pca_basis"],
                   pca_std=a[prefix + "pca_std"], resid_rms=float(a[prefix + "resid_rms"]),
                   vel_std=a[prefix + "vel_std"])


# ------------------------------------------------------------------------------- features
def scored_segment(seqs: np.ndarray, frames: int | None = None) -> np.ndarray:
    """The last 40 scored frames plus the one before: ``[N, F + 1, 68, 2]`` -> ``[N, 41, 68, 2]``.

    ``frames`` (default: all) scores the last 40 of the first ``frames`` generated frames.
    """
    seqs = np.asarray(seqs)
    if seqs.ndim != 4 or seqs.shape[-2:] != (68, 2):
        raise ValueError(f"expected sequences [N, T, 68, 2], got shape {seqs.shape}")
    f = seqs.shape[1] - 1 if frames is None else int(frames)
    if f < SCORED_FRAMES or f > seqs.shape[1] - 1:
        raise ValueError(f"need at least {SCORED_FRAMES} generated frames (sequences of "
                         f"{SCORED_FRAMES + 1}), got sequences of {seqs.shape[1]} frames (frames={f})")
    return seqs[:, f - SCORED_FRAMES:f + 1]


def _band_slices(L: int) -> list[slice]:
    top = L // 2 + 1
    out = []
    for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:]):
        if lo < top:
            out.append(slice(lo, min(hi, top)))
    return out


def raw_features(basis: LandmarkBasis, segments: np.ndarray) -> dict[str, np.ndarray]:
    """Un-standardised feature sets of ``segments [N, 41, 68, 2]`` -> {family: [M, D]}."""
    seg = np.asarray(segments, np.float64)
    n = seg.shape[0]
    z = basis.state(seg)  # [N, 41, S]
    v = np.diff(z, axis=1) / basis.vel_std  # [N, 40, S] velocity of the scored frames, in ref stds
    a = np.diff(v, axis=1)  # [N, 39, S]
    amp_floor = np.sqrt(POWER_FLOOR)
    out = {
        "fd_frame": np.concatenate(
            [z[:, 2:], np.log(np.abs(v[:, 1:]) + amp_floor), np.log(np.abs(a) + amp_floor)], axis=-1
        ).reshape(-1, 3 * STATE_DIM),
    }
    for L in CLIP_LENGTHS:
        chunks = v.reshape(n * (SCORED_FRAMES // L), L, STATE_DIM)
        disp = chunks.sum(1)  # net displacement (velocity units)
        power = np.abs(np.fft.rfft(chunks, axis=1)) ** 2 / L  # [M, L//2+1, S]
        bands = [np.log(power[:, sl].mean(1) + POWER_FLOOR) for sl in _band_slices(L)]
        out[f"fd_clip{L}"] = np.concatenate([disp] + bands, axis=-1)
    w = frame_weights(SCORED_FRAMES, "ema", MOTION_HALF_LIFE)[None, :, None]
    zs = z[:, 1:] / basis.vel_std
    mu = (w * zs).sum(1)
    spread = (w * (zs - mu[:, None]) ** 2).sum(1)
    age = np.arange(SCORED_FRAMES, dtype=np.float64)[None, :, None]
    age = age - (w * age).sum(1, keepdims=True)
    slope = (w * age * zs).sum(1) / (w * age**2).sum(1)  # the direction the trail brightens in
    spacing = (w * v**2).sum(1)  # squared distance between consecutive dots of the trail
    out["fd_motion"] = np.concatenate(
        [mu, np.log(np.abs(slope) + amp_floor), 0.5 * np.log(spread + POWER_FLOOR),
         0.5 * np.log(spacing + POWER_FLOOR)], axis=-1)
    return out


# ------------------------------------------------------------------------------ reference
@dataclass
class LandmarkReference:
    """Real-data statistics of the landmark stack: basis, standardisation, Gaussians, speed."""

    basis: LandmarkBasis
    norm: dict = field(default_factory=dict)  # family -> (mean [D], std [D])
    gauss: dict = field(default_factory=dict)  # family -> (mu [D], sigma [D, D]) standardised
    speed: float = 1.0  # mean landmark speed of the scored frames (normalised units / frame)
    num_windows: int = 0

    @classmethod
    def fit(cls, windows, seed: int = 0, chunk: int = 256) -> "LandmarkReference":
        """Fit on real windows ``[N, 41, 68, 2]`` (or longer: the last 41 frames are used): an
        array or a ``suhmo.data.windows.WindowSet``, streamed ``chunk`` windows at a time, so
        memory is bounded by one chunk whatever N is. Three passes: the shape basis on a
        seeded sample of at most 20000 scored frames, the state velocity scale, then the
        moments of every feature family (combined across chunks exactly, Chan et al.)."""
        n = len(windows)
        length = windows.shape[1]
        if n < 2 or length < SCORED_FRAMES + 1:
            raise ValueError(f"need at least 2 real windows of {SCORED_FRAMES + 1} frames, got "
                             f"{n} of {length}")

        def segments():
            if hasattr(windows, "chunks"):
                yield from (scored_segment(w) for w in windows.chunks(chunk))
            else:
                for lo in range(0, n, chunk):
                    yield scored_segment(np.asarray(windows[lo:lo + chunk]))

        frames_total = n * SCORED_FRAMES
        pick = (np.random.default_rng(seed).choice(frames_total, LandmarkBasis.MAX_FRAMES, replace=False)
                if frames_total > LandmarkBasis.MAX_FRAMES else np.arange(frames_total))
        basis = LandmarkBasis.fit(_scored_frames(windows, pick), seed=seed)
        vel, speed = _Moments(diagonal=True), 0.0
        for seg in segments():
            seg = seg.astype(np.float64)
            vel.add(np.diff(basis.state(seg), axis=1).reshape(-1, STATE_DIM))
            speed += float(np.sqrt((np.diff(seg, axis=1) ** 2).sum(-1)).sum())
        basis.vel_std = np.maximum(vel.std(), 1e-9)
        ref = cls(basis=basis, speed=speed / (n * SCORED_FRAMES * 68), num_windows=n)
        fam: dict[str, _Moments] = {}
        for seg in segments():
            for name, f in raw_features(basis, seg).items():
                fam.setdefault(name, _Moments()).add(f)
        for name, m in fam.items():
            std = np.maximum(m.std(), 1e-9)
            ref.norm[name] = (m.mean, std)
            ref.gauss[name] = (np.zeros_like(m.mean), m.cov() / np.outer(std, std))
        return ref

    def to_arrays(self) -> dict[str, np.ndarray]:
        a = self.basis.to_arrays()
        a["speed"] = np.asarray(self.speed)
        a["num_windows"] = np.asarray(self.num_windows)
        for k in self.norm:
            a[f"norm.{k}.mean"], a[f"norm.{k}.std"] = self.norm[k]
            a[f"gauss.{k}.mu"], a[f"gauss.{k}.sigma"] = self.gauss[k]
        return a

    @classmethod
    def from_arrays(cls, a: dict) -> "LandmarkReference":
        ref = cls(basis=LandmarkBasis.from_arrays(a), speed=float(a["speed"]),
                  num_windows=int(a["num_windows"]))
        for k in FD_KEYS:
            ref.norm[k] = (a[f"norm.{k}.mean"], a[f"norm.{k}.std"])
            ref.gauss[k] = (a[f"gauss.{k}.mu"], a[f"gauss.{k}.sigma"])
        return ref


def _scored_frames(windows, pick: np.ndarray) -> np.ndarray:
    """Scored frames number ``pick`` (window-major, 40 per window) of ``windows``: the frames
    ``scored_segment(windows)[:, 1:].reshape(-1, 68, 2)[pick]`` without building that array."""
    pick = np.asarray(pick, np.int64)
    w, t = pick // SCORED_FRAMES, pick % SCORED_FRAMES
    first = windows.shape[1] - SCORED_FRAMES  # the scored frames are the last 40 of a window
    out = np.empty((len(pick), 68, 2), np.float64)
    for lo in range(0, len(pick), 4096):
        sel = slice(lo, lo + 4096)
        uniq, inv = np.unique(w[sel], return_inverse=True)
        rows = np.asarray(windows[uniq])
        out[sel] = rows[inv, first + t[sel]]
    return out


class _Moments:
    """Count, mean and centred second moments of rows added in chunks, combined exactly
    (the pairwise update of Chan, Golub and LeVeque): the same statistics as one pass over
    all the rows, with memory of one chunk. ``diagonal``: variances only."""

    def __init__(self, diagonal: bool = False):
        self.n, self.mean, self.m2, self.diagonal = 0, None, None, diagonal

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        nb = len(x)
        if nb == 0:
            return
        mb = x.mean(0)
        xc = x - mb
        m2b = (xc**2).sum(0) if self.diagonal else xc.T @ xc
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + (delta**2 if self.diagonal else np.outer(delta, delta)) * (self.n * nb / n)
        self.n = n

    def std(self) -> np.ndarray:  # population std (ddof 0), as np.std
        return np.sqrt((self.m2 if self.diagonal else np.diag(self.m2)) / self.n)

    def cov(self) -> np.ndarray:  # sample covariance (ddof 1), as feature_stats
        return self.m2 / (self.n - 1)


def _speed(seg: np.ndarray) -> float:
    return float(np.sqrt((np.diff(seg, axis=1) ** 2).sum(-1)).mean())


# -------------------------------------------------------------------------------- metrics
def fd_metrics(seqs: np.ndarray, ref: LandmarkReference, frames: int | None = None) -> dict[str, float]:
    """The five Fréchet distances of generated ``seqs [N, F + 1, 68, 2]`` to the reference."""
    seg = scored_segment(seqs, frames)
    out = {}
    for name, f in raw_features(ref.basis, seg).items():
        mean, std = ref.norm[name]
        out[name] = frechet_distance(*feature_stats((f - mean) / std), *ref.gauss[name])
    return out


def apd(seqs: np.ndarray, frames: int | None = None) -> float:
    """Average pairwise distance between sequences that share their frame 0 (module docstring).

    NaN when no two sequences share a reference pose.
    """
    seqs = np.asarray(seqs)
    scored = scored_segment(seqs, frames)[:, 1:].astype(np.float64)
    keys = {}
    for i, r in enumerate(np.ascontiguousarray(seqs[:, 0])):
        keys.setdefault(r.tobytes(), []).append(i)
    vals = []
    for idx in keys.values():
        if len(idx) < 2:
            continue
        g = scored[idx].reshape(len(idx), SCORED_FRAMES, -1)  # [K, T, 136]
        d = g[:, None] - g[None]  # [K, K, T, 136]
        rms = np.sqrt((d**2).sum(-1) / 68).mean(-1)  # [K, K]
        iu = np.triu_indices(len(idx), 1)
        vals.append(rms[iu].mean())
    return float(np.mean(vals)) if vals else float("nan")


def drift(seqs: np.ndarray, basis: LandmarkBasis, frames: int | None = None) -> float:
    """Growth of shape implausibility: frames 41-80 against 1-40 (module docstring)."""
    seqs = np.asarray(seqs)
    f = seqs.shape[1] - 1 if frames is None else int(frames)
    if f < 2:
        return float("nan")
    if not np.isfinite(seqs[:, :f + 1]).all():
        return float("inf")
    if f >= 2 * SCORED_FRAMES:
        early, late = seqs[:, 1:SCORED_FRAMES + 1], seqs[:, SCORED_FRAMES + 1:2 * SCORED_FRAMES + 1]
    else:
        h = f // 2
        early, late = seqs[:, 1:h + 1], seqs[:, f - h + 1:f + 1]
    ue = basis.implausibility(early.astype(np.float64)).mean()
    ul = basis.implausibility(late.astype(np.float64)).mean()
    return float(abs(np.log(ul / ue)))


def motion_energy(seqs: np.ndarray, ref: LandmarkReference, frames: int | None = None) -> float:
    """Mean landmark speed of the scored frames over the real speed (1.0 = real)."""
    return _speed(scored_segment(seqs, frames).astype(np.float64)) / ref.speed


def dynamic_score(fd_clip40: float, motion_energy_err: float, drift: float) -> float:
    """``fd_clip40 * exp(motion_energy_err + drift)`` (module docstring, ``fd_clip40_dyn``)."""
    e = motion_energy_err + (drift if np.isfinite(drift) else np.inf)
    return float(fd_clip40 * np.exp(e)) if e < 700 else float("inf")


def landmark_metrics(seqs: np.ndarray, ref: LandmarkReference, frames: int | None = None,
                     drift_seqs: np.ndarray | None = None) -> dict[str, float]:
    """All keys of the landmark stack for ``seqs [N, F + 1, 68, 2]``.

    ``frames`` picks the scored part (the last 40 of the first ``frames`` generated frames);
    ``drift_seqs`` (default ``seqs``) are the sequences drift is measured on.
    """
    seg = scored_segment(seqs, frames)
    if not (np.isfinite(seg).all() and np.abs(seg).max() < 1e6):
        # a diverged generator: infinitely far from real, no meaningful diversity or speed
        return {**{k: float("inf") for k in FD_KEYS}, "apd": float("nan"), "drift": float("inf"),
                "motion_energy": float("nan"), "motion_energy_err": float("inf"), "fd_clip40_dyn": float("inf")}
    out = fd_metrics(seqs, ref, frames)
    out["apd"] = apd(seqs, frames)
    out["drift"] = drift(seqs if drift_seqs is None else drift_seqs, ref.basis)
    me = motion_energy(seqs, ref, frames)
    out["motion_energy"] = me
    out["motion_energy_err"] = float(abs(np.log(max(me, 1e-12))))
    out["fd_clip40_dyn"] = dynamic_score(out["fd_clip40"], out["motion_energy_err"], out["drift"])
    return out


def real_windows(clips, length: int = SCORED_FRAMES + 1, stride: int = 5,
                 max_windows: int | None = None) -> np.ndarray:
    """Overlapping windows ``[N, length, 68, 2]`` of real clips (clips shorter than
    ``length`` contribute none); with ``max_windows``, a seeded sample of at most that many
    (``suhmo.data.windows.WindowSet``, which reads them lazily, is what the metric stack uses)."""
    from suhmo.data.windows import WindowSet
    from suhmo.utils import check_memory

    ws = WindowSet(clips, length, stride, max_windows)
    check_memory(len(ws) * length * 68 * 2 * 4, f"{len(ws)} real windows of {length} frames every "
                 f"{max(1, int(stride))} frames", "raise --stride")
    return ws[:]
