"""A packed dataset (:mod:`suhmo.data.packed`) as a ``LandmarkSet``: clips read on access.

:class:`PackedClips` stands in for the list of arrays a ``LandmarkSet`` holds: it reads a
clip, or one window of it, from the shards' memory maps when asked, and normalises it like
``suhmo.data.normalize.normalize_clip`` from the per-clip statistics of the index, so that a
window is normalised exactly as its whole clip would be. :func:`load_packed` wraps a folder
in a ``LandmarkSet``; :func:`verify_clips` reads every clip once to refuse bad frames early.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from suhmo.data.dataset import DataError, check_spread, format_size, max_data_bytes
from suhmo.data.packed import FRAME_BYTES, RIGID_POINTS, PackedDataset, shard_name


class PackedClips(Sequence):
    """The clips of a :class:`PackedDataset` (or a subset), read on access and normalised like
    ``suhmo.data.normalize.normalize_clip`` when ``normalize`` is set: a lazy stand-in for the
    list of arrays a ``LandmarkSet`` holds. ``window(i, start, length)`` reads only the frames
    of one window."""

    def __init__(self, ds: PackedDataset, idx: Optional[np.ndarray] = None, *, normalize: Optional[str] = None,
                 scale: float = 1.1, smooth_frames: int = 1):
        self.ds = ds
        self.idx = np.arange(len(ds), dtype=np.int64) if idx is None else np.asarray(idx, np.int64)
        self.normalize, self.scale, self.smooth_frames = normalize, float(scale), int(smooth_frames)

    # -- the Sequence protocol
    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} out of range ({len(self)} clips)")
        return self.window(i, 0, int(self.lengths[i]))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def lengths(self) -> np.ndarray:
        return self.ds.lengths[self.idx]

    def select(self, idx: Sequence[int]) -> "PackedClips":
        return PackedClips(self.ds, self.idx[np.asarray(idx, np.int64)], normalize=self.normalize,
                           scale=self.scale, smooth_frames=self.smooth_frames)

    def with_normalization(self, mode: Optional[str], scale: float = 1.1, smooth_frames: int = 1) -> "PackedClips":
        return PackedClips(self.ds, self.idx, normalize=mode, scale=scale, smooth_frames=smooth_frames)

    # -- normalisation parameters (as normalize_clip computes them)
    def side(self, i: int) -> float:
        j = self.idx[i]
        extent = self.ds.hi[j] - self.ds.lo[j] if self.normalize == "bbox" else self.ds.cext[j]
        return float(max(extent.max(), 1e-6) * self.scale)

    def norm_params(self) -> tuple[np.ndarray, np.ndarray]:
        """``(side [C], centre [C, 2])`` of every clip, as ``normalize_set`` stores them
        (centred mode: the mean over frames of the per-frame centre is not known without reading
        the clip, so the bounding box centre stands in)."""
        sides = np.array([self.side(i) for i in range(len(self))], np.float32)
        centre = ((self.ds.lo[self.idx] + self.ds.hi[self.idx]) / 2).astype(np.float32)
        return sides, centre

    def window(self, i: int, start: int, length: int) -> np.ndarray:
        """Frames ``start:start+length`` of clip ``i``, normalised (float32, a new array)."""
        j = int(self.idx[i])
        n = int(self.ds.lengths[j])
        if not (0 <= start and start + length <= n and length > 0):
            raise IndexError(f"window {start}:{start + length} outside clip {i} of {n} frames")
        if length * FRAME_BYTES > max_data_bytes():
            raise DataError(f"{self.ds.root}: clip {i}: {length} frames = {format_size(length * FRAME_BYTES)}, over the "
                            f"{format_size(max_data_bytes())} limit on what is loaded at once (SUHMO_MAX_DATA_BYTES)")
        margin = min(start, self.smooth_frames - 1) if self.smooth_frames > 1 else 0
        raw = self.ds.raw(j, start - margin, start + length)
        if self.normalize is None:
            out = np.array(raw, dtype=np.float32)
        else:
            x = np.asarray(raw, dtype=np.float64)
            side = self.side(i)
            if self.normalize == "bbox":
                centre = (self.ds.lo[j] + self.ds.hi[j]) / 2
                out = ((x - centre) / side + 0.5).astype(np.float32)
            else:
                centre = x[:, RIGID_POINTS].mean(axis=1)
                out = ((x - centre[:, None, :]) / side + 0.5).astype(np.float32)
        if self.smooth_frames > 1:
            out = _smooth_tail(out, self.smooth_frames, margin, start)
        return out

    def windows(self, clip_idx: Iterable[int], starts: Iterable[int], length: int) -> np.ndarray:
        """``[N, length, 68, 2]`` windows, one per (clip, start)."""
        return np.stack([self.window(int(c), int(s), int(length)) for c, s in zip(clip_idx, starts)])


def _smooth_tail(x: np.ndarray, frames: int, margin: int, start: int) -> np.ndarray:
    """The trailing moving average of :func:`suhmo.data.windows.smooth_positions` on a window
    read with ``margin`` frames before it (equal to smoothing the whole clip up to rounding)."""
    c = np.cumsum(x.astype(np.float64), axis=0)
    T = len(x)
    out = np.empty((T - margin,) + x.shape[1:], np.float32)
    for t in range(margin, T):
        lo = t - frames
        total = c[t] - (c[lo] if lo >= 0 else 0.0)
        n = min(start - margin + t + 1, frames)  # frames since the clip's first one, capped
        out[t - margin] = (total / n).astype(np.float32)
    return out


def load_packed(path: str | Path, *, fps: float = 25.0, min_len: Optional[int] = None):
    """A packed dataset as a ``LandmarkSet`` whose clips are read on access (``PackedClips``),
    in the stored units; ``suhmo.data.normalize.normalize_set`` makes it normalise lazily."""
    from suhmo.data.dataset import LandmarkSet, check_lengths

    ds = PackedDataset(path)
    if abs(ds.fps - float(fps)) > 1e-6:
        raise DataError(f"{ds.root}: packed at {ds.fps:g} fps, but {float(fps):g} fps was asked for (data.fps); "
                        f"pack it again with --fps {float(fps):g}")
    if min_len is not None:
        check_lengths(ds.lengths.tolist(), str(ds.root), int(min_len))
    return LandmarkSet(clips=PackedClips(ds), fps=ds.fps, meta=dict(ds.meta), path=str(ds.root),
                       attrs=dict(ds.attrs))


def verify_clips(ls, *, progress: bool = False) -> None:
    """Read every clip of a packed ``LandmarkSet`` once (bounded memory: one clip at a time)
    and refuse NaN/inf or degenerate frames in one DataError naming the clip: a shard edited
    after packing is caught here, not in the middle of a training run."""
    from tqdm import tqdm

    clips = ls.clips
    for i in tqdm(range(len(clips)), desc="check", unit="clip", disable=not progress, dynamic_ncols=True):
        c = clips[i]
        name = f"{ls.name}: clip {i}"
        if not np.isfinite(c).all():
            frame = int(np.argmin(np.isfinite(c).all(axis=(1, 2))))
            raise DataError(f"{name}: NaN or inf at frame {frame} (shard {shard_name(int(clips.ds.shard[clips.idx[i]]))})")
        check_spread(c, np.array([0, len(c)]), name)
