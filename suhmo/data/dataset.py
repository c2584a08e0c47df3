"""The canonical on-disk landmark format, its validation, and the in-memory ``LandmarkSet``.

Format (a compressed ``.npz`` that loads with ``allow_pickle=False``)::

    flat      float32 [N, 68, 2]   every frame of every clip, x right / y down (any unit)
    offsets   int64   [C + 1]      clip i is flat[offsets[i]:offsets[i + 1]]; offsets[0] = 0, offsets[-1] = N
    fps       float   scalar       frame rate of the stored frames
    <name>    any     [C, ...]     optional per-clip metadata: person, source, frame_wh, origin,
                                   kind, group (co-occurring clips share a group), ...
    <name>    any     other shape  dataset-level attributes (coords, layout, ...)

``../shared/data/real_dev_landmarks.npz`` is in this format. String metadata is stored as
numpy unicode arrays, never as object arrays, so that no pickle is needed.
"""

from __future__ import annotations

import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from suhmo.utils import check_memory, check_regular_file

NUM_POINTS = 68
class DataError(ValueError):
    """A problem with a landmark dataset; the message names the file and the clip."""


class ResampleNotice(UserWarning):
    """Emitted when a dataset is resampled to the training frame rate."""


class LargeDataNotice(UserWarning):
    """Emitted when an .npz large enough to be worth packing is loaded into memory."""


# above this, an .npz loaded whole costs enough memory per process to suggest `suhmo data pack`
PACK_HINT_BYTES = 256 << 20


@dataclass
class LandmarkSet:
    """Clips of 68-point landmarks at one frame rate.

    ``clips[i]`` is ``[T_i, 68, 2]`` float32. ``meta`` holds per-clip arrays (first axis = clip),
    ``attrs`` dataset-level values (e.g. ``layout``, ``coords``, ``normalized``).
    """

    clips: list[np.ndarray]
    fps: float
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    path: Optional[str] = None
    attrs: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    @property
    def lengths(self) -> np.ndarray:
        lazy = getattr(self.clips, "lengths", None)  # a packed set knows them from its index
        if lazy is not None:
            return np.asarray(lazy, dtype=np.int64)
        return np.array([len(c) for c in self.clips], dtype=np.int64)

    @property
    def lazy(self) -> bool:
        """True when the clips are read on access (a packed dataset), not held in memory."""
        return hasattr(self.clips, "window")

    def windows(self, clip_idx, starts, length: int) -> np.ndarray:
        """``[N, length, 68, 2]`` float32: frames ``starts[n]:starts[n] + length`` of clip
        ``clip_idx[n]``, reading only those frames from a packed set."""
        window = getattr(self.clips, "window", None)
        out = np.empty((len(clip_idx), int(length), NUM_POINTS, 2), np.float32)
        for j, (c, s) in enumerate(zip(clip_idx, starts)):
            c, s = int(c), int(s)
            out[j] = window(c, s, int(length)) if window is not None else self.clips[c][s:s + int(length)]
        return out

    def frames_at(self, idx) -> np.ndarray:
        """Frames ``[n, 68, 2]`` at global frame indices ``idx`` (clips laid end to end), as
        ``np.concatenate(self.clips)[idx]`` gives them, without concatenating."""
        idx = np.asarray(idx, np.int64)
        ends = np.cumsum(self.lengths)
        clip = np.searchsorted(ends, idx, side="right")
        local = idx - (ends[clip] - self.lengths[clip])
        if not self.lazy:
            return np.stack([self.clips[c][t] for c, t in zip(clip, local)]) if len(idx) else \
                np.zeros((0, NUM_POINTS, 2), np.float32)
        return self.windows(clip, local, 1)[:, 0]

    @property
    def name(self) -> str:
        return self.path or "<in-memory landmarks>"

    def persons(self) -> list[str]:
        """Identity label per clip (``person`` metadata, else one identity per clip)."""
        if "person" in self.meta:
            return [str(p) for p in self.meta["person"]]
        return [f"clip{i}" for i in range(len(self.clips))]

    def groups(self) -> Optional[list[str]]:
        """Co-occurrence label per clip (``group`` or ``pair_id`` metadata), or None."""
        for key in ("group", "pair_id"):
            if key in self.meta:
                return [str(g) for g in self.meta[key]]
        return None

    def subset(self, idx: Sequence[int]) -> "LandmarkSet":
        idx = [int(i) for i in idx]
        select = getattr(self.clips, "select", None)
        return LandmarkSet(
            clips=select(idx) if select is not None else [self.clips[i] for i in idx],
            fps=self.fps,
            meta={k: v[idx] for k, v in self.meta.items()},
            path=self.path,
            attrs=dict(self.attrs),
        )

    def split_by_person(self, test_fraction: float, seed: int) -> tuple["LandmarkSet", "LandmarkSet"]:
        """Hold out a random ``test_fraction`` of the persons (at least one, at most all but one).

        Clips of the same person, and clips of the same co-occurrence group, land on the same side.
        """
        persons = self.persons()
        groups = self.groups()
        # union persons linked by a co-occurrence group, so no group straddles the split
        unit = {p: p for p in persons}

        def root(p: str) -> str:
            while unit[p] != p:
                p = unit[p]
            return p

        if groups is not None:
            first: dict[str, str] = {}
            for p, g in zip(persons, groups):
                if g in first:
                    unit[root(p)] = root(first[g])
                else:
                    first[g] = p
        units = sorted({root(p) for p in persons})
        if len(units) < 2:
            raise DataError(
                f"{self.name}: cannot split by person: only {len(units)} independent person group(s)"
            )
        rng = np.random.default_rng(seed)
        n_test = min(len(units) - 1, max(1, int(round(test_fraction * len(units)))))
        test_units = set(rng.permutation(units)[:n_test].tolist())
        test_idx = [i for i, p in enumerate(persons) if root(p) in test_units]
        train_idx = [i for i, p in enumerate(persons) if root(p) not in test_units]
        return self.subset(train_idx), self.subset(test_idx)

    def copy_with(self, clips: list[np.ndarray], **attrs) -> "LandmarkSet":
        """Same metadata, new clip arrays (same count); extra ``attrs`` merged in."""
        assert len(clips) == len(self.clips)
        a = dict(self.attrs)
        a.update({k: np.asarray(v) for k, v in attrs.items()})
        return LandmarkSet(clips=clips, fps=self.fps, meta=dict(self.meta), path=self.path, attrs=a)


# ---------------------------------------------------------------------------------- resampling
FRAME_BYTES = 68 * 2 * 4  # one float32 frame of landmarks


def resampled_length(n_frames: int, src_fps: float, dst_fps: float) -> int:
    """Frames :func:`resample_clip` makes of ``n_frames`` (computed in floats: no allocation)."""
    if src_fps == dst_fps or n_frames < 2:
        return int(n_frames)
    return int(np.floor((n_frames - 1) / float(src_fps) * dst_fps + 1e-6)) + 1


def check_resampled_size(lengths: Sequence[int], src_fps: Sequence[float], dst_fps: float, name: str) -> None:
    """Refuse, before any frame is made, a resampling whose output exceeds the limit on a
    landmark set (``SUHMO_MAX_DATA_BYTES``) or the memory here: a file whose ``fps`` is tiny
    turns each stored frame into thousands."""
    out = sum(resampled_length(int(n), float(f), float(dst_fps)) for n, f in zip(lengths, src_fps))
    nbytes = out * FRAME_BYTES
    limit = max_data_bytes()
    rates = ", ".join(f"{f:g}" for f in np.unique(np.asarray(src_fps, np.float64)))
    what = f"{name}: resampling {int(sum(lengths))} frames from {rates} fps to {dst_fps:g} fps"
    if nbytes > limit:
        raise DataError(f"{what} makes {out} frames ({format_size(nbytes)}), over the {format_size(limit)} limit on a "
                        f"landmark set (SUHMO_MAX_DATA_BYTES); check the file's fps")
    # the output, plus per clip its interpolation temporaries (float64 times, indices, weights)
    longest = max((resampled_length(int(n), float(f), float(dst_fps)) for n, f in zip(lengths, src_fps)), default=0)
    check_memory(nbytes + longest * (3 * FRAME_BYTES + 32), what, "check the file's fps", error=DataError)


def resample_clip(clip: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Linear interpolation of ``[T, ...]`` frames from ``src_fps`` to ``dst_fps``.

    Output frame k sits at time k / dst_fps and covers the clip's duration (T - 1) / src_fps.
    """
    clip = np.asarray(clip, dtype=np.float32)
    if src_fps == dst_fps or len(clip) < 2:
        return clip.copy()
    n_out = resampled_length(len(clip), src_fps, dst_fps)
    t_dst = np.arange(n_out) / float(dst_fps)
    pos = t_dst * src_fps
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(clip) - 2)
    w = (pos - i0).astype(np.float32).reshape((-1,) + (1,) * (clip.ndim - 1))
    return ((1 - w) * clip[i0] + w * clip[i0 + 1]).astype(np.float32)


# ---------------------------------------------------------------------------------- loading
_REQUIRED = ("flat", "offsets", "fps")


# Bounds checked before any array is read (a 3 MB zip can unpack to gigabytes; a 2 KB .npy
# header can declare 10^10 frames): the total of the members' declared sizes may not exceed
# SUHMO_MAX_DATA_BYTES (default 1 GiB, about 2 million frames) nor half of the memory available now.
DEFAULT_MAX_DATA_BYTES = 1 << 30


def max_data_bytes() -> int:
    """The documented cap on a landmark file's unpacked size (``$SUHMO_MAX_DATA_BYTES``)."""
    import os

    raw = os.environ.get("SUHMO_MAX_DATA_BYTES")
    try:
        return int(float(raw)) if raw else DEFAULT_MAX_DATA_BYTES
    except ValueError:
        raise DataError(f"SUHMO_MAX_DATA_BYTES={raw!r}: expected a number of bytes") from None


def _available_memory() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def format_size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def _npy_header(f) -> tuple[tuple, np.dtype]:
    """``(shape, dtype)`` from an open .npy stream, reading only its header."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(f, max_header_size=10000)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(f, max_header_size=10000)
    else:  # 3.0 (utf-8 field names) has no public reader; numpy's own loader takes it
        from numpy.lib._format_impl import _read_array_header

        shape, _, dtype = _read_array_header(f, version, max_header_size=10000)
    return tuple(shape), dtype


def _check_npz_sizes(path: Path) -> None:
    """Read every member's .npy header (a few bytes each) and refuse, in one DataError, a member
    whose declared array does not fit the data its zip entry holds, or a total above the limits."""
    limit = max_data_bytes()
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > 4096:
                raise DataError(f"{path}: {len(infos)} archive members; a landmark .npz has a few")
            for info in infos:
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with zf.open(info) as f:
                    try:
                        shape, dtype = _npy_header(f)
                        header_len = f.tell()
                    except ValueError as e:
                        raise DataError(f"{path}: entry {key!r} is not a readable .npy array "
                                        f"({first_line(e)})") from None
                count = int(np.prod(shape, dtype=object)) if shape else 1
                declared = count * max(1, dtype.itemsize)
                if declared > limit:
                    raise DataError(f"{path}: entry {key!r} declares shape {tuple(shape)} {dtype} = "
                                    f"{format_size(declared)}, over the {format_size(limit)} limit on a landmark file "
                                    f"(SUHMO_MAX_DATA_BYTES)")
                if not dtype.hasobject and declared > info.file_size - header_len:
                    raise DataError(f"{path}: entry {key!r} declares shape {tuple(shape)} ({format_size(declared)}) "
                                    f"but holds {format_size(max(0, info.file_size - header_len))}: a corrupt or "
                                    f"forged archive")
                total += max(declared, info.file_size)
    except zipfile.BadZipFile as e:
        raise DataError(f"{path}: not a readable .npz archive ({first_line(e)})") from None
    except (OSError, EOFError, zlib.error, NotImplementedError) as e:
        raise DataError(f"{path}: not a readable .npz archive ({first_line(e)})") from None
    if total > limit:
        raise DataError(f"{path}: unpacks to {format_size(total)}, over the {format_size(limit)} limit on a landmark file "
                        f"(SUHMO_MAX_DATA_BYTES)")
    avail = _available_memory()
    if avail is not None and 2 * total > avail:
        raise DataError(f"{path}: unpacks to {format_size(total)}; only {format_size(avail)} of memory is available here "
                        f"(a landmark file may use half of it)")


def _check_npy_size(path: Path) -> None:
    """The same bound for a bare ``.npy`` file (its header declares the array)."""
    with open(path, "rb") as f:
        try:
            shape, dtype = _npy_header(f)
        except ValueError as e:
            raise DataError(f"{path}: not a readable .npy array ({first_line(e)})") from None
        header_len = f.tell()
    declared = (int(np.prod(shape, dtype=object)) if shape else 1) * max(1, dtype.itemsize)
    limit = max_data_bytes()
    if declared > limit:
        raise DataError(f"{path}: declares shape {tuple(shape)} {dtype} = {format_size(declared)}, over the "
                        f"{format_size(limit)} limit (SUHMO_MAX_DATA_BYTES)")
    if not dtype.hasobject and declared > path.stat().st_size - header_len:
        raise DataError(f"{path}: declares shape {tuple(shape)} but the file is shorter: truncated or forged")


def precheck_npz(path: Path) -> None:
    """Everything checked before a landmark file's arrays are read: a regular file (a FIFO
    would block), a zip or .npy header, declared sizes within :func:`max_data_bytes` and
    the available memory. Raises DataError naming the file (and the entry)."""
    path = Path(path)
    check_regular_file(path, "landmark .npz file", error=DataError)
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:4] != b"PK\x03\x04" and magic != b"\x93NUMPY":
        what = "an empty file" if not magic else "no zip header"
        raise DataError(f"{path}: not a .npz archive ({what}); expected a compressed numpy .npz "
                        f"with flat, offsets and fps")
    if magic[:4] == b"PK\x03\x04":
        _check_npz_sizes(path)
    else:
        _check_npy_size(path)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    precheck_npz(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        # ValueError: numpy found neither a zip nor a .npy header and refuses to unpickle
        raise DataError(f"{path}: not a readable .npz archive ({first_line(e)})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, expected a landmark .npz archive")
    try:
        out = {}
        for k in z.files:
            try:
                out[k] = z[k]
            except ValueError as e:
                if "pickle" in str(e).lower():
                    raise DataError(f"{path}: entry {k!r} is an object array that needs pickle; "
                                    f"store strings as unicode arrays") from None
                raise DataError(f"{path}: entry {k!r} is unreadable ({first_line(e)})") from None
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
                raise DataError(f"{path}: entry {k!r} is corrupt ({first_line(e)})") from None
        return out
    finally:
        z.close()


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def validate_arrays(arrays: dict[str, np.ndarray], name: str, *, min_len: Optional[int] = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check the canonical keys; return ``(flat float32, offsets int64, fps [C] float64)``.

    Raises DataError naming ``name`` and the first faulty clip.
    """
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        what = "frame rate 'fps'" if missing == ["fps"] else f"key(s) {', '.join(map(repr, missing))}"
        raise DataError(f"{name}: missing {what}; the canonical format has flat [N, 68, 2], "
                        f"offsets [C+1] and fps")
    flat = np.asarray(arrays["flat"])
    offsets = np.asarray(arrays["offsets"])
    if offsets.ndim != 1 or offsets.size < 2 or not np.issubdtype(offsets.dtype, np.integer):
        raise DataError(f"{name}: offsets must be a 1-D integer array [C+1] with C >= 1 clips, "
                        f"got {offsets.dtype} {tuple(offsets.shape)}")
    offsets = offsets.astype(np.int64)
    n_clips = offsets.size - 1
    for i in range(n_clips):
        if offsets[i + 1] <= offsets[i]:
            raise DataError(f"{name}: clip {i}: non-increasing offsets (offsets[{i}]={offsets[i]}, "
                            f"offsets[{i + 1}]={offsets[i + 1]}); clip boundaries must strictly increase")
    if offsets[0] != 0:
        raise DataError(f"{name}: clip 0: offsets[0]={offsets[0]}, expected 0")
    if flat.ndim != 3 or flat.shape[1:] != (NUM_POINTS, 2):
        # locate the clip: the whole array has the wrong layout, so the first clip is faulty
        raise DataError(f"{name}: clip 0: wrong shape, flat is {tuple(flat.shape)}, "
                        f"expected [N, {NUM_POINTS}, 2] (x, y of the 68 iBUG points)")
    if offsets[-1] != flat.shape[0]:
        raise DataError(f"{name}: clip {n_clips - 1}: offsets[-1]={offsets[-1]} but flat holds "
                        f"{flat.shape[0]} frames (wrong shape of flat or offsets)")
    if not np.issubdtype(flat.dtype, np.floating) and not np.issubdtype(flat.dtype, np.integer):
        raise DataError(f"{name}: clip 0: flat has dtype {flat.dtype}, expected float32")
    flat = flat.astype(np.float32, copy=False)
    finite = np.isfinite(flat).all(axis=(1, 2))
    if not finite.all():
        frame = int(np.argmin(finite))
        clip = int(np.searchsorted(offsets, frame, side="right") - 1)
        raise DataError(f"{name}: clip {clip}: NaN or inf at frame {frame - offsets[clip]} "
                        f"(flat[{frame}]); fill or drop missing detections first")
    check_spread(flat, offsets, name)
    raw_fps = np.asarray(arrays["fps"])
    fps = raw_fps.astype(np.float64) if raw_fps.dtype.kind in "fiu" else None
    if fps is None or fps.size not in (1, n_clips) or fps.ndim > 1:
        raise DataError(f"{name}: fps must be a number (or one per clip), got {arrays['fps']!r}")
    fps = np.broadcast_to(fps.reshape(-1), (n_clips,)).astype(np.float64)
    bad = np.flatnonzero(~(np.isfinite(fps) & (fps > 0)))
    if bad.size:
        raise DataError(f"{name}: clip {int(bad[0])}: fps={fps[bad[0]]} must be a positive number")
    if min_len is not None:
        check_lengths([int(offsets[i + 1] - offsets[i]) for i in range(n_clips)], name, min_len)
    return flat, offsets, fps


def check_spread(flat: np.ndarray, offsets: np.ndarray, name: str) -> None:
    """Refuse degenerate faces: a frame whose 68 points span no width or no height (all zero,
    one constant value, collapsed to a point or a line). Normalising such a frame divides by a
    zero box and training later dies in an SVD; a real detection never looks like that."""
    if not len(flat):
        return
    # [N, 2] width, height of each frame's points (per coordinate: numpy reduces a trailing
    # axis of 2 an order of magnitude slower; the values are the same)
    extent = np.stack([flat[..., j].max(axis=1) - flat[..., j].min(axis=1) for j in (0, 1)], axis=-1)
    scale = np.maximum(np.abs(flat).max(axis=(1, 2)), 1.0)
    flat_frame = (extent <= 1e-6 * scale[:, None]).any(axis=1)
    if flat_frame.any():
        frame = int(np.argmax(flat_frame))
        clip = int(np.searchsorted(offsets, frame, side="right") - 1)
        n_bad = int(flat_frame[offsets[clip]:offsets[clip + 1]].sum())
        w, h = extent[frame]
        raise DataError(f"{name}: clip {clip}: degenerate landmarks at frame {frame - offsets[clip]} "
                        f"(the 68 points span {w:.3g} x {h:.3g}: all equal or collapsed; {n_bad} such "
                        f"frame(s) in this clip); drop the clip or fix its detections")


def check_lengths(lengths: Sequence[int], name: str, min_len: int) -> None:
    short = [i for i, n in enumerate(lengths) if n < min_len]
    if short:
        i = short[0]
        more = f" ({len(short) - 1} more short clip(s))" if len(short) > 1 else ""
        raise DataError(f"{name}: clip {i}: {lengths[i]} frames, shorter than a training window of "
                        f"{min_len} frames (obs_len + seq_len){more}; drop it or lower data.seq_len")


def load_npz(path: str | Path, *, fps: float = 25.0, min_len: Optional[int] = None,
             notify: Optional[Callable[[str], None]] = None) -> LandmarkSet:
    """Load and validate a canonical landmark ``.npz``; resample other frame rates to ``fps``
    (``suhmo.data.load_landmarks`` opens packed folders too).

    ``min_len`` (frames, after resampling) rejects clips shorter than a training window.
    The resampling notice goes to ``notify`` when given, else to ``warnings`` (ResampleNotice).
    """
    path = Path(path)
    name = str(path)
    arrays = _read_npz(path)
    flat, offsets, src_fps = validate_arrays(arrays, name)
    n_clips = offsets.size - 1
    clips = [flat[offsets[i]:offsets[i + 1]].copy() for i in range(n_clips)]
    meta: dict[str, np.ndarray] = {}
    attrs: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        if k in _REQUIRED:
            continue
        if v.ndim >= 1 and v.shape[0] == n_clips:
            meta[k] = v
        else:
            attrs[k] = v
    if np.any(np.abs(src_fps - fps) > 1e-6):
        check_resampled_size([len(c) for c in clips], src_fps, float(fps), name)
        clips = [resample_clip(c, float(f), float(fps)) for c, f in zip(clips, src_fps)]
        rates = ", ".join(f"{f:g}" for f in np.unique(src_fps))
        msg = f"{name}: resampled {n_clips} clip(s) from {rates} fps to {fps:g} fps (linear interpolation)"
        if notify is not None:
            notify(msg)
        else:
            warnings.warn(msg, ResampleNotice, stacklevel=2)
        if "src_fps" not in meta:
            meta["src_fps"] = src_fps.astype(np.float32)
    if min_len is not None:
        check_lengths([len(c) for c in clips], name, min_len)
    if flat.nbytes > PACK_HINT_BYTES:
        msg = (f"{name}: {format_size(flat.nbytes)} of frames held in memory by every process that reads it; "
               f"`suhmo data pack {name} --out DIR` maps them from disk instead (README, Large datasets)")
        if notify is not None:
            notify(msg)
        else:
            warnings.warn(msg, LargeDataNotice, stacklevel=2)
    return LandmarkSet(clips=clips, fps=float(fps), meta=meta, path=name, attrs=attrs)


def _to_storable(key: str, v: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(v)
    if v.dtype == object:
        try:
            v = v.astype(str)
        except Exception:  # pragma: no cover - exotic objects
            raise DataError(f"{name}: metadata {key!r} holds objects that cannot be stored "
                            f"without pickle") from None
    return v


def save_landmarks(path: str | Path, ls: LandmarkSet) -> None:
    """Write ``ls`` as a canonical compressed ``.npz`` (atomically: no half-written file)."""
    from suhmo.utils import atomic_save

    path = Path(path)
    name = str(path)
    if not ls.clips:
        raise DataError(f"{name}: refusing to save an empty landmark set")
    for i, c in enumerate(ls.clips):
        if c.ndim != 3 or c.shape[1:] != (NUM_POINTS, 2) or len(c) == 0:
            raise DataError(f"{name}: clip {i}: wrong shape {tuple(c.shape)}, expected [T, 68, 2]")
    lengths = [len(c) for c in ls.clips]
    arrays: dict[str, np.ndarray] = {
        "flat": np.concatenate(ls.clips).astype(np.float32),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "fps": np.asarray(ls.fps, dtype=np.float32),
    }
    for k, v in ls.meta.items():
        v = _to_storable(k, v, name)
        if v.ndim == 0 or v.shape[0] != len(ls.clips):
            raise DataError(f"{name}: metadata {k!r} has {v.shape[0] if v.ndim else 0} entries for "
                            f"{len(ls.clips)} clips")
        arrays[k] = v
    for k, v in ls.attrs.items():
        arrays.setdefault(k, _to_storable(k, v, name))

    def writer(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
            np.savez_compressed(f, **arrays)

    atomic_save(path, writer)
