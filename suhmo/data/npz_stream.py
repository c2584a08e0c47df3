"""Reading a canonical landmark ``.npz`` clip by clip, with memory bounded by one clip.

``np.load`` decompresses a member whole: for a corpus of hours that is gigabytes at once.
:class:`NpzClipReader` reads the small members (offsets, fps, per-clip metadata) whole, each
within ``SUHMO_MAX_DATA_BYTES``, and streams ``flat`` through the zip member's decompressor,
one clip at a time, in order. Used by ``suhmo data pack``.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from suhmo.data.dataset import NUM_POINTS, DataError, first_line, format_size, max_data_bytes
from suhmo.utils import check_regular_file


class NpzClipReader:
    """One canonical ``.npz``: headers and small members read at construction (every size
    checked), ``flat`` streamed by :meth:`clips`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        check_regular_file(self.path, "landmark .npz file", error=DataError)
        name = str(self.path)
        limit = max_data_bytes()
        try:
            with zipfile.ZipFile(self.path) as zf:
                shape, small = self._read_members(zf, name, limit)
        except DataError:
            raise
        except zipfile.BadZipFile as e:
            raise DataError(f"{name}: not a readable .npz archive ({first_line(e)})") from None
        except (OSError, EOFError, zlib.error, ValueError) as e:
            raise DataError(f"{name}: not a readable .npz archive ({first_line(e)})") from None
        self._index(name, small, shape, limit)

    def _read_members(self, zf: zipfile.ZipFile, name: str, limit: int) -> tuple[tuple, dict[str, np.ndarray]]:
        """Check the archive's members and ``flat``'s header; read the small members whole
        (each within ``limit`` bytes); set the archive's digest. Returns ``(flat's shape, small members)``."""
        small: dict[str, np.ndarray] = {}
        infos = zf.infolist()
        if len(infos) > 4096:
            raise DataError(f"{name}: {len(infos)} archive members; a landmark .npz has a few")
        names = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in infos}
        if "flat" not in names or "offsets" not in names or "fps" not in names:
            missing = [k for k in ("flat", "offsets", "fps") if k not in names]
            raise DataError(f"{name}: missing key(s) {', '.join(map(repr, missing))}; the canonical "
                            f"format has flat [N, 68, 2], offsets [C+1] and fps")
        self._flat_info = names["flat"]
        with zf.open(self._flat_info) as f:
            shape, fortran, dtype = _header(f, name)
            self._flat_header = f.tell()
        if len(shape) != 3 or shape[1:] != (NUM_POINTS, 2):
            raise DataError(f"{name}: clip 0: wrong shape, flat is {shape}, expected [N, {NUM_POINTS}, 2]")
        if fortran or dtype.hasobject or dtype.kind not in "fiu":
            raise DataError(f"{name}: flat is {dtype}{' (Fortran order)' if fortran else ''}; "
                            f"expected C-ordered float32")
        self._dtype = dtype
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if declared > self._flat_info.file_size - self._flat_header:
            raise DataError(f"{name}: entry 'flat' declares shape {shape} ({format_size(declared)}) but holds "
                            f"{format_size(max(0, self._flat_info.file_size - self._flat_header))}: a corrupt "
                            f"or forged archive")
        for key, info in names.items():
            if key == "flat":
                continue
            with zf.open(info) as f:
                shp, _, dt = _header(f, name, key)
            size = (int(np.prod(shp, dtype=object)) if shp else 1) * max(1, dt.itemsize)
            if size > limit:
                raise DataError(f"{name}: entry {key!r} declares {format_size(size)}, over the {format_size(limit)} "
                                f"limit on what is loaded (SUHMO_MAX_DATA_BYTES)")
            if dt.hasobject:
                raise DataError(f"{name}: entry {key!r} is an object array that needs pickle; "
                                f"store strings as unicode arrays")
            with zf.open(info) as f:
                small[key] = np.lib.format.read_array(f, allow_pickle=False)
        crc = hashlib.sha1()
        for i in sorted(infos, key=lambda i: i.filename):
            crc.update(f"{i.filename}:{i.CRC}:{i.file_size};".encode())
        self.digest = crc.hexdigest()[:16]
        return shape, small

    def _index(self, name: str, small: dict[str, np.ndarray], shape: tuple, limit: int) -> None:
        """Clip offsets, frame rates, per-clip metadata and attributes from the small members,
        each checked; the longest clip within ``limit`` bytes."""
        offsets = small.pop("offsets")
        if offsets.ndim != 1 or offsets.size < 2 or not np.issubdtype(offsets.dtype, np.integer):
            raise DataError(f"{name}: offsets must be a 1-D integer array [C+1] with C >= 1 clips, "
                            f"got {offsets.dtype} {tuple(offsets.shape)}")
        offsets = offsets.astype(np.int64)
        d = np.diff(offsets)
        if offsets[0] != 0 or (d <= 0).any() or offsets[-1] != shape[0]:
            bad = int(np.argmax(d <= 0)) if (d <= 0).any() else (0 if offsets[0] != 0 else len(d) - 1)
            raise DataError(f"{name}: clip {bad}: offsets do not cut flat's {shape[0]} frames into clips "
                            f"(they must start at 0, strictly increase and end at {shape[0]})")
        self.offsets = offsets
        self.num_clips = offsets.size - 1
        self.num_frames = int(shape[0])
        raw_fps = small.pop("fps")
        fps = raw_fps.astype(np.float64) if raw_fps.dtype.kind in "fiu" else None
        if fps is None or fps.size not in (1, self.num_clips) or fps.ndim > 1:
            raise DataError(f"{name}: fps must be a number (or one per clip), got {raw_fps!r}")
        self.fps = np.broadcast_to(fps.reshape(-1), (self.num_clips,)).astype(np.float64)
        bad = np.flatnonzero(~(np.isfinite(self.fps) & (self.fps > 0)))
        if bad.size:
            raise DataError(f"{name}: clip {int(bad[0])}: fps={self.fps[bad[0]]} must be a positive number")
        self.meta = {k: v for k, v in small.items() if v.ndim >= 1 and v.shape[0] == self.num_clips}
        self.attrs = {k: v for k, v in small.items() if k not in self.meta}
        longest = int(d.max()) * NUM_POINTS * 2 * 4
        if longest > limit:
            raise DataError(f"{name}: clip {int(np.argmax(d))}: {int(d.max())} frames = {format_size(longest)}, over the "
                            f"{format_size(limit)} limit on what is loaded at once (SUHMO_MAX_DATA_BYTES)")

    def clips(self, skip: int = 0, on_frames: Optional[Callable[[int], None]] = None
              ) -> Iterator[tuple[int, np.ndarray, dict]]:
        """``(index, clip [T, 68, 2] float32, metadata with "_fps")`` for clips ``skip..C-1``, in
        order, decompressing ``flat`` as a stream (the skipped clips are read past, not kept)."""
        frame_bytes = NUM_POINTS * 2 * self._dtype.itemsize
        name = str(self.path)
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self._flat_info) as f:
                f.read(self._flat_header)
                for i in range(self.num_clips):
                    n = int(self.offsets[i + 1] - self.offsets[i])
                    if i < skip:
                        _read_exact(f, n * frame_bytes, name, i, keep=False)
                        if on_frames:
                            on_frames(n)
                        continue
                    buf = _read_exact(f, n * frame_bytes, name, i)
                    clip = np.frombuffer(buf, dtype=self._dtype).reshape(n, NUM_POINTS, 2).astype(np.float32)
                    meta = {k: v[i] for k, v in self.meta.items()}
                    meta["_fps"] = float(self.fps[i])
                    yield i, clip, meta
                    if on_frames:
                        on_frames(n)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise DataError(f"{name}: entry 'flat' is corrupt ({first_line(e)})") from None


def _read_exact(f, n: int, name: str, clip: int, keep: bool = True) -> bytes:
    chunks, left = [], n
    while left:
        b = f.read(min(left, 1 << 24))
        if not b:
            raise DataError(f"{name}: clip {clip}: entry 'flat' ends early; a truncated archive")
        left -= len(b)
        if keep:
            chunks.append(b)
    return b"".join(chunks)


def _header(f, name: str, key: str = "flat"):
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            return fmt.read_array_header_1_0(f, max_header_size=10000)
        if version == (2, 0):
            return fmt.read_array_header_2_0(f, max_header_size=10000)
        raise ValueError(f"npy format version {version} (1.0 or 2.0 expected)")
    except ValueError as e:
        raise DataError(f"{name}: entry {key!r} is not a readable .npy array ({first_line(e)})") from None


__all__ = ["NpzClipReader"]
