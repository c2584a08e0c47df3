"""Training windows: motion features, horizontal flip, augmentation, pairing and batches.

Velocity and acceleration (paper Sec. 3.5, eq. 1 and 4)
    ``motion_features`` derives ``v_t = x_t - x_{t-1}`` and ``a_t = v_t - v_{t-1}`` by plain
    differences of POSITIONS, for real and generated sequences alike, on numpy arrays or torch
    tensors. The authors' code instead low-passes the velocity of real data only (a 3-frame
    trailing moving average, see paper-vs-code.md §0), so that for real data
    ``x_t - x_{t-1} != v_t`` while for generated data (integrated from v) it holds exactly: a
    discriminator can tell real from fake by that mismatch alone. Our choice: smoothing, if any
    (``cfg.data.smooth_frames`` > 1), is a trailing moving average applied to the POSITIONS of
    the real clips once, when the dataset is loaded (:func:`smooth_positions`, called by
    ``load_dataset``); velocity and acceleration are then derived from positions by the same
    differences for real and fake, so eq. 4 (``x_t = x_{t-1} + v_t``) holds for both.

Pairs
    Batch rows (2n, 2n+1) are a pair everywhere. ``pairing="random"`` pairs windows of two
    different random clips (the paper's i.i.d. pairs, eq. 7); ``pairing="cooccurring"`` pairs
    two clips of the same ``group`` (per-clip metadata, alias ``pair_id``) over the same frame
    span, i.e. real co-occurring dyads such as the two debaters of a CONFER clip.

Augmentation (authors' training-time augmentation, paper Sec. 3.3 for the test-time partner)
    Per sequence: random horizontal flip with probability ``aug_flip_p`` (x -> 1 - x AND the
    left/right landmark index swap of :data:`FLIP_PERM`), random rescale by a factor in
    ``[aug_scale_low, aug_scale_high]`` about the frame centre (0.5, 0.5), and a random
    translation that keeps every point of the whole sequence inside [0, 0.99] (the authors'
    bound, so [0, 1) holds).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from suhmo.data.dataset import DataError, LandmarkSet

UPPER = 0.99  # augmentation keeps every coordinate in [0, UPPER]


def _flip_perm() -> np.ndarray:
    """iBUG-68 left/right correspondence: an involution of the point indices."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw 0-16 (8 is the chin)
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nose base (27-30 bridge and 33 tip stay)
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips (51, 57 stay)
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips (62, 66 stay)
    perm = np.arange(68)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


FLIP_PERM = _flip_perm()


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def motion_features(pos):
    """``[..., T, 68, 2]`` positions -> ``[..., T-2, 68, 6]`` ``[pos | vel | acc]``.

    ``vel_t = x_t - x_{t-1}`` (eq. 1/4), ``acc_t = vel_t - vel_{t-1}``; the first two frames are
    consumed. Works on numpy arrays and torch tensors (gradients flow), identically for real
    and generated sequences.
    """
    if pos.shape[-3] < 3:
        raise ValueError(f"motion_features needs at least 3 frames, got shape {tuple(pos.shape)}")
    vel = pos[..., 1:, :, :] - pos[..., :-1, :, :]
    acc = vel[..., 1:, :, :] - vel[..., :-1, :, :]
    parts = (pos[..., 2:, :, :], vel[..., 1:, :, :], acc)
    if _is_torch(pos):
        import torch

        return torch.cat(parts, dim=-1)
    return np.concatenate(parts, axis=-1)


def smooth_positions(pos: np.ndarray, frames: int) -> np.ndarray:
    """Trailing moving average of positions over ``frames`` frames along the time axis (-3).

    Frame t is the mean of frames max(0, t - frames + 1) .. t, so the length is kept and the
    filter is causal. ``frames=1`` returns a copy.
    """
    pos = np.asarray(pos, dtype=np.float32)
    if frames <= 1:
        return pos.copy()
    c = np.cumsum(pos.astype(np.float64), axis=-3)
    T = pos.shape[-3]
    t = np.arange(T)
    lo = t - frames
    prev = np.where((lo >= 0)[:, None, None], np.take(c, np.clip(lo, 0, None), axis=-3), 0.0)
    n = np.minimum(t + 1, frames).astype(np.float64)[:, None, None]
    return ((c - prev) / n).astype(np.float32)


def hflip(pos):
    """Horizontal flip in the [0, 1] frame: ``x -> 1 - x`` AND swap left/right point indices,
    so that e.g. point 36 (right eye's outer corner, image left on a frontal face) is still on
    the image left after the flip. ``[..., 68, 2]``, numpy or torch."""
    if _is_torch(pos):
        import torch

        out = pos[..., torch.as_tensor(FLIP_PERM, device=pos.device), :].clone()
    else:
        out = np.array(pos[..., FLIP_PERM, :], copy=True)
    out[..., 0] = 1 - out[..., 0]
    return out


def augment(seqs: np.ndarray, rng: np.random.Generator, *, scale_low: float = 0.6,
            scale_high: float = 1.0, flip_p: float = 0.5, upper: float = UPPER) -> np.ndarray:
    """Random flip (with index swap), rescale about (0.5, 0.5) and translation inside
    [0, upper], drawn independently per sequence. ``seqs [B, T, 68, 2]`` in the [0, 1] frame."""
    x = np.array(seqs, dtype=np.float32, copy=True)
    B = x.shape[0]
    flip = rng.random(B) < flip_p
    scale = rng.uniform(scale_low, scale_high, size=B).astype(np.float32)
    u = rng.random((B, 2)).astype(np.float32)
    if flip.any():
        x[flip] = hflip(x[flip])
    x = 0.5 + scale[:, None, None, None] * (x - 0.5)
    lo, hi = sequence_bounds(x)  # [B, 2] each
    room_lo, room_hi = -lo, upper - hi
    fits = room_hi >= room_lo
    shift = np.where(fits, room_lo + u * (room_hi - room_lo), (room_lo + room_hi) / 2)
    return (x + shift[:, None, None, :]).astype(np.float32, copy=False)


def sequence_bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence min and max of each coordinate of ``x [B, T, 68, 2]`` -> ``[B, 2]`` each.
    The same values as ``x.min(axis=(1, 2))`` (a min is exact in any order), ~15x faster: one
    contiguous reduction per coordinate instead of numpy's loop over the trailing axis of 2."""
    n = int(np.prod(x.shape[1:-1]))
    flat = [x[..., j].reshape(x.shape[0], n) for j in range(x.shape[-1])]
    return np.stack([f.min(1) for f in flat], -1), np.stack([f.max(1) for f in flat], -1)


def test_partner(ref: np.ndarray, rng: np.random.Generator | int, *, scale_low: float = 0.6,
                 scale_high: float = 1.0, flip_p: float = 0.5) -> np.ndarray:
    """The paper's test-time second sample (Sec. 3.3, Fig. 2): a transformed copy of each
    reference pose, by random flip (index swap), rescale and translation (paper-vs-code §1.4).

    ``ref [K, 68, 2]`` in the [0, 1] frame -> ``[K, 68, 2]``.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    ref = np.asarray(ref, dtype=np.float32)
    if ref.ndim != 3 or ref.shape[1:] != (68, 2):
        raise ValueError(f"test_partner expects [K, 68, 2] reference poses, got {ref.shape}")
    return augment(ref[:, None], rng, scale_low=scale_low, scale_high=scale_high, flip_p=flip_p)[:, 0]


test_partner.__test__ = False  # not a pytest test, although test files import it by name


class BatchSampler:
    """Deterministic stream of training batches ``[B, obs_len + seq_len, 68, 2]`` float32.

    Each row is a window of ``obs_len + seq_len`` consecutive frames with a random start,
    drawn uniformly over all windows of the set (so a clip is picked in proportion to the
    windows it holds). Rows (2n, 2n+1) are a pair (see module docstring); augmentation
    follows ``cfg.data.augment``. ``state_dict()`` / ``load_state_dict()`` resume the stream.
    """

    def __init__(self, ls: LandmarkSet, cfg, seed: int = 0, *, batch_size: Optional[int] = None,
                 augment: Optional[bool] = None):
        d = cfg.data
        self.window = int(d.obs_len + d.seq_len)
        self.batch_size = int(batch_size if batch_size is not None else cfg.train.batch_size)
        if self.batch_size < 2 or self.batch_size % 2:
            raise DataError(f"batch size {self.batch_size}: must be even and >= 2 (rows come in pairs)")
        self.augment = bool(d.augment if augment is None else augment)
        self.scale_low, self.scale_high, self.flip_p = d.aug_scale_low, d.aug_scale_high, d.aug_flip_p
        self.pairing = d.pairing
        self.name = ls.name
        lengths = ls.lengths
        # in memory: one array of every frame, a window is one fancy index; a packed set is
        # read window by window from its memory maps (ls.windows), so nothing is copied
        self.source = ls if ls.lazy else None
        self.flat = None if ls.lazy else np.concatenate(ls.clips).astype(np.float32)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.lengths = lengths
        ok = np.flatnonzero(lengths >= self.window)
        if ok.size == 0:
            raise DataError(f"{ls.name}: clip 0: no clip holds a training window of {self.window} frames "
                            f"(longest has {int(lengths.max())}); lower data.seq_len or add data")
        self.eligible = ok
        if self.pairing == "cooccurring":
            groups = ls.groups()
            if groups is None:
                raise DataError(f"{ls.name}: data.pairing=cooccurring needs per-clip 'group' (or "
                                f"'pair_id') metadata naming co-occurring clips; use pairing=random")
            by_group: dict[str, list[int]] = {}
            for i in ok:
                by_group.setdefault(groups[i], []).append(int(i))
            self.groups = [np.array(v) for _, v in sorted(by_group.items()) if len(v) >= 2]
            if not self.groups:
                raise DataError(f"{ls.name}: data.pairing=cooccurring but no group has two clips of "
                                f">= {self.window} frames")
            spans = np.array([lengths[g].min() - self.window + 1 for g in self.groups], dtype=np.float64)
            self.group_p = spans / spans.sum()
        else:
            w = (lengths[ok] - self.window + 1).astype(np.float64)
            self.clip_p = w / w.sum()
        self.rng = np.random.default_rng(seed)
        self.batches = 0

    def _gather(self, clips: np.ndarray, rel: np.ndarray) -> np.ndarray:
        """Rows ``[B, window, 68, 2]``: frames ``rel:rel + window`` of each clip."""
        if self.source is not None:
            return self.source.windows(clips, rel, self.window)
        idx = (self.offsets[clips] + rel)[:, None] + np.arange(self.window)[None, :]
        return self.flat[idx]

    def next(self) -> np.ndarray:
        n_pairs = self.batch_size // 2
        if self.pairing == "cooccurring":
            g = self.rng.choice(len(self.groups), size=n_pairs, p=self.group_p)
            first, second, span = [], [], []
            for gi in g:
                members = self.groups[gi]
                a, b = self.rng.choice(len(members), size=2, replace=False)
                first.append(members[a])
                second.append(members[b])
                span.append(min(self.lengths[members[a]], self.lengths[members[b]]) - self.window + 1)
            rel = (self.rng.random(n_pairs) * np.array(span)).astype(np.int64)
            clips = np.stack([first, second], 1).reshape(-1)
            rel = np.repeat(rel, 2)
        else:
            k = len(self.eligible)
            a = self.rng.choice(k, size=n_pairs, p=self.clip_p)
            b = self.rng.choice(k, size=n_pairs, p=self.clip_p)
            if k > 1:  # partner from another clip: a pair of two unrelated sequences
                same = a == b
                while same.any():
                    b[same] = self.rng.choice(k, size=int(same.sum()), p=self.clip_p)
                    same = a == b
            clips = self.eligible[np.stack([a, b], 1).reshape(-1)]
            rel = (self.rng.random(len(clips)) * (self.lengths[clips] - self.window + 1)).astype(np.int64)
        batch = self._gather(np.asarray(clips, np.int64), rel)
        if self.augment:
            batch = augment(batch, self.rng, scale_low=self.scale_low, scale_high=self.scale_high,
                            flip_p=self.flip_p)
        self.batches += 1
        return np.ascontiguousarray(batch, dtype=np.float32)

    __next__ = next

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.batches = int(state.get("batches", 0))


class MixedSampler:
    """Batches whose first ``round(mix * B / 2)`` pairs come from the procedural speakers and
    the rest from the real training set (``data.synth_mix``), for the first ``until`` batches
    (``data.synth_mix_until``; None = always): ``mix=1, until=N`` pretrains on the synthetic
    heads for N iterations. Pairs never mix the two sources. Same interface as BatchSampler."""

    def __init__(self, real: LandmarkSet, synth: LandmarkSet, cfg, seed: int = 0):
        d = cfg.data
        B = int(cfg.train.batch_size)
        self.n_synth = int(round(float(d.synth_mix) * B / 2)) * 2
        self.until = d.synth_mix_until
        self.batch_size = B
        self.real = BatchSampler(real, cfg, seed=seed)
        self.synth = BatchSampler(synth, cfg, seed=seed + 104729, batch_size=max(2, self.n_synth))
        self.batches = 0

    def next(self) -> np.ndarray:
        mixing = self.n_synth > 0 and (self.until is None or self.batches < int(self.until))
        self.batches += 1
        if not mixing:
            return self.real.next()
        synth = self.synth.next()
        if self.n_synth >= self.batch_size:
            return synth
        real = self.real.next()[: self.batch_size - self.n_synth]
        return np.ascontiguousarray(np.concatenate([synth, real]), dtype=np.float32)

    __next__ = next

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        return {"real": self.real.state_dict(), "synth": self.synth.state_dict(), "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        if "real" not in state:  # a checkpoint written before mixing was switched on
            self.real.load_state_dict(state)
            self.batches = int(state.get("batches", 0))
            return
        self.real.load_state_dict(state["real"])
        self.synth.load_state_dict(state["synth"])
        self.batches = int(state["batches"])


# Real windows for statistics (metrics, scale rows): every window at a stride, or a bounded,
# seeded sample of them when a corpus holds more, so that memory and time stay flat in the
# corpus size. 4096 windows of 41 frames are 91 MB as float32; tests/test_data_scale.py shows
# the statistics they give are stable (two disjoint samples of a tiled corpus agree).
MAX_WINDOWS = 4096


def clip_lengths(clips) -> np.ndarray:
    """Frames per clip of a list of arrays or of a lazy clip sequence (read from its index)."""
    lengths = getattr(clips, "lengths", None)
    if lengths is not None:
        return np.asarray(lengths, np.int64)
    return np.array([len(c) for c in clips], np.int64)


def window_starts(lengths: np.ndarray, length: int, stride: int, max_windows: Optional[int] = MAX_WINDOWS,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(clip index [N], start frame [N])`` of the windows of ``length`` frames at ``stride``
    over clips of ``lengths``, in clip order; when there are more than ``max_windows``, a
    uniform sample of ``max_windows`` of them without replacement (seeded), still in order."""
    lengths = np.asarray(lengths, np.int64)
    stride = max(1, int(stride))
    per_clip = np.where(lengths >= length, (lengths - length) // stride + 1, 0)
    total = int(per_clip.sum())
    if max_windows is not None and total > int(max_windows):
        k = np.sort(np.random.default_rng(seed).choice(total, int(max_windows), replace=False))
    else:
        k = np.arange(total, dtype=np.int64)
    ends = np.cumsum(per_clip)
    clip = np.searchsorted(ends, k, side="right")
    first = ends[clip] - per_clip[clip]
    return clip.astype(np.int64), ((k - first) * stride).astype(np.int64)


class WindowSet:
    """Windows of real clips read on demand: ``len``, ``ws[idx]`` -> ``[n, length, 68, 2]``,
    :meth:`chunks` to stream them. The clips may be a list of arrays or a lazy clip sequence
    (``suhmo.data.packed_clips.PackedClips``): only the windows asked for are read."""

    def __init__(self, clips, length: int, stride: int = 5, max_windows: Optional[int] = MAX_WINDOWS,
                 seed: int = 0):
        self.clips = clips
        self.length = int(length)
        self.lengths = clip_lengths(clips)
        self.clip_idx, self.starts = window_starts(self.lengths, self.length, stride, max_windows, seed)

    def __len__(self) -> int:
        return len(self.clip_idx)

    @property
    def shape(self) -> tuple:
        return (len(self), self.length, 68, 2)

    def __getitem__(self, idx) -> np.ndarray:
        sel = np.arange(len(self))[idx]
        if np.ndim(sel) == 0:
            return self._gather([int(sel)])[0]
        return self._gather(np.asarray(sel, np.int64))

    def _gather(self, sel) -> np.ndarray:
        out = np.empty((len(sel), self.length, 68, 2), np.float32)
        window = getattr(self.clips, "window", None)
        for j, i in enumerate(sel):
            c, s = int(self.clip_idx[i]), int(self.starts[i])
            out[j] = window(c, s, self.length) if window is not None else self.clips[c][s:s + self.length]
        return out

    def first_frames(self, idx) -> np.ndarray:
        """Frame 0 of the windows ``idx`` ``[n, 68, 2]`` (reads one frame each)."""
        idx = np.asarray(idx, np.int64)
        window = getattr(self.clips, "window", None)
        out = [window(int(self.clip_idx[i]), int(self.starts[i]), 1)[0] if window is not None
               else self.clips[int(self.clip_idx[i])][int(self.starts[i])] for i in idx]
        return np.stack(out).astype(np.float32) if out else np.zeros((0, 68, 2), np.float32)

    def chunks(self, size: int = 256):
        """The windows in order, ``size`` at a time."""
        for lo in range(0, len(self), size):
            yield self._gather(np.arange(lo, min(lo + size, len(self))))

    def fingerprint(self) -> str:
        """sha1 of the clip lengths, the window places and the windows' frames (a bounded read)."""
        import hashlib

        h = hashlib.sha1()
        h.update(self.lengths.tobytes())
        h.update(self.clip_idx.tobytes())
        h.update(self.starts.tobytes())
        h.update(np.asarray(self.length).tobytes())
        for chunk in self.chunks():
            h.update(np.ascontiguousarray(chunk, np.float32).tobytes())
        return h.hexdigest()
