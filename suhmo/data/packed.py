"""The packed landmark format: a folder of memory-mapped shards for corpora larger than memory.

Layout of a packed dataset ``DIR``::

    DIR/dataset.json       format, version, dataset id (uuid4), frame rate, dataset attributes
    DIR/shard-00000.f32    64-byte header, then float32 frames [n, 68, 2], appended clip by clip
    DIR/shard-00001.f32    ... a new shard starts when the current one would pass shard_bytes
    DIR/clips.jsonl        the index: one JSON line per committed clip, in clip order:
                           {"shard", "start", "frames", "lo", "hi", "cext", "meta": {...}}

Why plain numpy memory maps of uncompressed shards (and not zarr or Arrow): a training
window is one contiguous slice of one shard, so ``np.memmap`` reads exactly its pages with
no decompression and no new dependency; the pages are the kernel's page cache, which every
process on a node that maps the same file shares, so concurrent trials hold one copy of the
data and the private memory of each stays flat in the corpus size; and an append-only
file plus an append-only index make the writer crash-safe with two ``write`` calls.

Crash safety: a clip is committed by appending its frames to the current shard (then
``fsync``) and then its index line with a single ``write`` on an ``O_APPEND`` descriptor
(then ``fsync``); a writer may commit several clips at once. A crash in between leaves frames past the last committed clip, or a
last index line without its newline; readers ignore both and :class:`PackWriter` cuts them
off when it reopens the folder, so nothing already committed is lost and a rerun continues.

Shard header (64 bytes): ``b"SUHMOSH1"``, the dataset id (16 bytes), the shard number
(uint32 little-endian), zeros. A shard copied from another dataset, or renumbered, is
refused by its header; a shard shorter than its index says is refused as truncated.

Per clip the index stores, beside its place, the statistics that normalisation needs
(``lo``/``hi``: the bounding box of all its points; ``cext``: the extent about the
per-frame face centre, for ``data.normalize=centred``), so that any window is normalised
exactly as the whole clip would be (``suhmo.data.normalize``) without reading the clip
(:mod:`suhmo.data.packed_clips`, the folder as a ``LandmarkSet``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from suhmo.data.dataset import NUM_POINTS, DataError, check_spread, format_size, max_data_bytes
from suhmo.utils import DIR_MODE, FILE_MODE, atomic_write_text, make_dirs

FORMAT = "suhmo-landmark-shards"
VERSION = 1
INDEX_FILE = "dataset.json"
CLIPS_FILE = "clips.jsonl"
MAGIC = b"SUHMOSH1"
HEADER_BYTES = 64
FRAME_BYTES = NUM_POINTS * 2 * 4
DEFAULT_SHARD_BYTES = 256 << 20
RIGID_POINTS = np.arange(27, 48)  # as suhmo.data.normalize (centred mode's face centre)
_RESERVED = ("shard", "start", "frames", "lo", "hi", "cext")


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.f32"


def is_packed(path: str | Path) -> bool:
    """True when ``path`` is a packed dataset folder (or its ``dataset.json``)."""
    p = Path(path)
    return (p.is_dir() and (p / INDEX_FILE).exists()) or (p.name == INDEX_FILE and p.is_file())


def _header(dataset_id: str, k: int) -> bytes:
    h = MAGIC + uuid.UUID(dataset_id).bytes + int(k).to_bytes(4, "little")
    return h + bytes(HEADER_BYTES - len(h))


def clip_norm_stats(clip: np.ndarray) -> dict[str, list[float]]:
    """What normalising ``clip [T, 68, 2]`` needs (as ``normalize_clip`` computes it, float64):
    its bounding box ``lo``/``hi`` and ``cext``, twice the largest offset from the per-frame
    centre of the rigid points."""
    c = np.asarray(clip, dtype=np.float64)
    rel = c - c[:, RIGID_POINTS].mean(axis=1)[:, None, :]
    # per coordinate: numpy reduces a trailing axis of 2 an order of magnitude slower (same values)
    return {"lo": [float(c[..., j].min()) for j in (0, 1)], "hi": [float(c[..., j].max()) for j in (0, 1)],
            "cext": [float(2 * np.abs(rel[..., j]).max()) for j in (0, 1)]}


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, np.str_):
        return str(v)
    return v


# ------------------------------------------------------------------------------ writing
class PackWriter:
    """Append clips to a packed dataset folder, each committed as soon as :meth:`add` returns
    (``commit_every=0``), or in groups at most ``commit_every`` seconds apart (a crash then
    loses at most the last group: ``suhmo data pack`` uses 2 s).

    Opening an existing folder continues it (after a crash: the uncommitted tail is cut off);
    its frame rate must match. ``sources()`` lists the ``source`` metadata already committed,
    so a rerun can skip finished inputs. Use as a context manager.
    """

    def __init__(self, out_dir: str | Path, *, fps: float, attrs: Optional[dict] = None,
                 shard_bytes: int = DEFAULT_SHARD_BYTES, commit_every: float = 0.0):
        self.dir = Path(out_dir)
        self.commit_every = float(commit_every)
        self.fps = float(fps)
        self.shard_bytes = max(int(shard_bytes), HEADER_BYTES + FRAME_BYTES)
        index = self.dir / INDEX_FILE
        if self.dir.exists() and not self.dir.is_dir():
            raise DataError(f"{self.dir}: exists and is not a folder; a packed dataset is a folder")
        if index.is_file():
            info = read_index(self.dir)
            if abs(float(info["fps"]) - self.fps) > 1e-6:
                raise DataError(f"{self.dir}: an existing packed dataset at {info['fps']:g} fps; "
                                f"continue it with --fps {info['fps']:g} or write to another --out")
            self.id = info["id"]
            self.records = _repair(self.dir, self.id)
        else:
            if self.dir.is_dir() and any(self.dir.iterdir()):
                raise DataError(f"{self.dir}: a folder that is not empty and holds no {INDEX_FILE}; "
                                f"choose a new --out folder")
            make_dirs(self.dir)
            os.chmod(self.dir, DIR_MODE)
            self.id = str(uuid.uuid4())
            meta = {"format": FORMAT, "version": VERSION, "id": self.id, "fps": self.fps,
                    "points": NUM_POINTS, "attrs": {k: _jsonable(np.asarray(v).tolist()) if
                                                    isinstance(v, np.ndarray) else _jsonable(v)
                                                    for k, v in (attrs or {}).items()}}
            atomic_write_text(index, json.dumps(meta, indent=1, sort_keys=True) + "\n")
            self.records = []
        self._shard = max((r["shard"] for r in self.records), default=0)
        self._fill = sum(r["frames"] for r in self.records if r["shard"] == self._shard)
        self._fd: Optional[int] = None
        self._index_fd: Optional[int] = None
        self._pending: list[str] = []
        self._committed_at = time.monotonic()

    # -- public
    @property
    def num_clips(self) -> int:
        return len(self.records)

    @property
    def num_frames(self) -> int:
        return int(sum(r["frames"] for r in self.records))

    def sources(self) -> set[str]:
        return {str(r["meta"].get("source")) for r in self.records if "source" in r["meta"]}

    def add(self, clip: np.ndarray, meta: Optional[dict] = None, *, name: str = "clip") -> int:
        """Validate and append one clip ``[T, 68, 2]`` (any unit) with its metadata; returns its index.
        ``name`` says where it came from in an error."""
        clip = np.ascontiguousarray(clip, dtype=np.float32)
        if clip.ndim != 3 or clip.shape[1:] != (NUM_POINTS, 2) or len(clip) == 0:
            raise DataError(f"{name}: wrong shape {tuple(clip.shape)}, expected [T, 68, 2]")
        if not np.isfinite(clip).all():
            frame = int(np.argmin(np.isfinite(clip).all(axis=(1, 2))))
            raise DataError(f"{name}: NaN or inf at frame {frame}; fill or drop missing detections first")
        check_spread(clip, np.array([0, len(clip)]), name)
        nbytes = clip.nbytes
        if nbytes > max_data_bytes():
            raise DataError(f"{name}: {len(clip)} frames = {format_size(nbytes)}, over the {format_size(max_data_bytes())} "
                            f"limit on what is loaded at once (SUHMO_MAX_DATA_BYTES); split the clip")
        if self._fill and HEADER_BYTES + (self._fill + len(clip)) * FRAME_BYTES > self.shard_bytes:
            self._roll()
        fd = self._shard_fd()
        offset = HEADER_BYTES + self._fill * FRAME_BYTES
        _write_all(fd, clip.tobytes(), offset, self.dir / shard_name(self._shard))
        rec = {"shard": self._shard, "start": self._fill, "frames": len(clip), **clip_norm_stats(clip),
               "meta": {k: _jsonable(v) for k, v in (meta or {}).items()}}
        self._pending.append(json.dumps(rec, sort_keys=True, allow_nan=False) + "\n")
        self._fill += len(clip)
        self.records.append(rec)
        if time.monotonic() - self._committed_at >= self.commit_every:
            self.commit()
        return len(self.records) - 1

    def commit(self) -> None:
        """Make the clips added so far durable: their frames reach the disk (fsync), then their
        index lines are appended in one write (fsync). Called by :meth:`add` at most every
        ``commit_every`` seconds, and by :meth:`close`."""
        if self._fd is not None:
            os.fsync(self._fd)
        if self._pending:
            if self._index_fd is None:
                self._index_fd = os.open(self.dir / CLIPS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                         FILE_MODE)
            _write_all(self._index_fd, "".join(self._pending).encode(), None, self.dir / CLIPS_FILE)
            os.fsync(self._index_fd)
            self._pending = []
        self._committed_at = time.monotonic()

    def close(self) -> None:
        self.commit()
        for fd in (self._fd, self._index_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._index_fd = None

    def __enter__(self) -> "PackWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals
    def _roll(self) -> None:
        self.commit()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._shard += 1
        self._fill = 0

    def _shard_fd(self) -> int:
        if self._fd is None:
            path = self.dir / shard_name(self._shard)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            if os.fstat(fd).st_size < HEADER_BYTES:
                _write_all(fd, _header(self.id, self._shard), 0, path)
            self._fd = fd
        return self._fd


def _write_all(fd: int, data: bytes, offset: Optional[int], path: Path) -> None:
    """Write all of ``data`` (at ``offset``, or appended); a full disk is one DataError naming the file."""
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset) if offset is not None else os.write(fd, view)
            view = view[n:]
            if offset is not None:
                offset += n
    except OSError as e:
        from suhmo.utils import DiskFullError

        full = DiskFullError.check(e, path, len(data), what="landmark shard or index")
        if full is not None:  # the uncommitted tail is cut off when the folder is opened again
            raise full from None
        raise DataError(f"{path}: cannot write ({e.strerror})") from None


def _repair(root: Path, dataset_id: str) -> list[dict]:
    """Cut off what a crash left uncommitted (a torn last index line, frames past the last
    committed clip of each shard); return the committed records."""
    records, torn = _read_records(root)
    if torn:
        path = root / CLIPS_FILE
        with open(path, "rb+") as f:
            f.truncate(torn)
    ends: dict[int, int] = {}
    for r in records:
        ends[r["shard"]] = max(ends.get(r["shard"], 0), r["start"] + r["frames"])
    for p in sorted(root.glob("shard-*.f32")):
        try:
            k = int(p.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        _check_header(p, dataset_id, k)
        want = HEADER_BYTES + ends.get(k, 0) * FRAME_BYTES
        if p.stat().st_size > want:
            with open(p, "rb+") as f:
                f.truncate(want)
    _check_records(root, records, dataset_id)
    return records


# ------------------------------------------------------------------------------ reading
def read_index(root: Path) -> dict:
    path = Path(root) / INDEX_FILE
    try:
        if path.stat().st_size > 1 << 20:
            raise DataError(f"{path}: {path.stat().st_size} bytes; a dataset.json holds a few hundred")
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{root}: no {INDEX_FILE}: not a packed dataset (suhmo data pack writes one)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} index")
    if info.get("version") != VERSION:
        raise DataError(f"{path}: format version {info.get('version')!r}; this suhmo reads version {VERSION}")
    try:
        uuid.UUID(str(info["id"]))
        fps = float(info["fps"])
    except (KeyError, ValueError, TypeError):
        raise DataError(f"{path}: missing or malformed id / fps") from None
    if not (np.isfinite(fps) and fps > 0):
        raise DataError(f"{path}: fps={info['fps']!r} must be a positive number")
    if int(info.get("points", NUM_POINTS)) != NUM_POINTS:
        raise DataError(f"{path}: {info.get('points')} points per frame; expected {NUM_POINTS}")
    return info


def _read_records(root: Path) -> tuple[list[dict], Optional[int]]:
    """The committed index lines, and the byte offset of a torn last line (None when whole)."""
    path = Path(root) / CLIPS_FILE
    if not path.exists():
        return [], None
    size = path.stat().st_size
    if size > max_data_bytes():
        raise DataError(f"{path}: {format_size(size)}, over the {format_size(max_data_bytes())} limit on what is loaded "
                        f"(SUHMO_MAX_DATA_BYTES)")
    records: list[dict] = []
    pos = 0
    torn = None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                torn = pos  # a crash during the commit of the last clip: not committed
                break
            pos += len(raw)
            try:
                rec = json.loads(raw)
                rec = {"shard": int(rec["shard"]), "start": int(rec["start"]), "frames": int(rec["frames"]),
                       "lo": [float(v) for v in rec["lo"]], "hi": [float(v) for v in rec["hi"]],
                       "cext": [float(v) for v in rec["cext"]], "meta": dict(rec.get("meta") or {})}
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{path}: line {lineno}: malformed clip record ({type(e).__name__}: "
                                f"{str(e)[:80]})") from None
            records.append(rec)
    return records, torn


def _check_header(path: Path, dataset_id: str, k: int) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as e:
        raise DataError(f"{path}: cannot read shard ({e.strerror})") from None
    if len(head) < HEADER_BYTES or head[:8] != MAGIC:
        raise DataError(f"{path}: not a suhmo landmark shard (bad header)")
    if head[8:24] != uuid.UUID(dataset_id).bytes:
        raise DataError(f"{path}: a shard of another dataset ({uuid.UUID(bytes=head[8:24])}, this one is "
                        f"{dataset_id}); the folder mixes two packed datasets")
    if int.from_bytes(head[24:28], "little") != k:
        raise DataError(f"{path}: header says shard {int.from_bytes(head[24:28], 'little')}; renamed or moved")


def _check_records(root: Path, records: list[dict], dataset_id: str) -> dict[int, int]:
    """Every record within its shard, clips of a shard in order without overlap, shards
    whole and of this dataset. Returns frames per shard."""
    need: dict[int, int] = {}
    for i, r in enumerate(records):
        k, s, n = r["shard"], r["start"], r["frames"]
        if k < 0 or s < 0 or n <= 0 or len(r["lo"]) != 2 or len(r["hi"]) != 2 or len(r["cext"]) != 2:
            raise DataError(f"{root / CLIPS_FILE}: clip {i}: impossible record (shard {k}, start {s}, "
                            f"{n} frames); a damaged or forged index")
        if s < need.get(k, 0):
            raise DataError(f"{root / CLIPS_FILE}: clip {i}: starts at frame {s} of shard {k}, inside the "
                            f"previous clip; a damaged or forged index")
        need[k] = s + n
    for k, frames in need.items():
        path = root / shard_name(k)
        if not path.is_file():
            raise DataError(f"{path}: missing; the index names {frames} frames in it")
        _check_header(path, dataset_id, k)
        have = (path.stat().st_size - HEADER_BYTES) // FRAME_BYTES
        if have < frames:
            raise DataError(f"{path}: holds {max(have, 0)} frames but the index needs {frames}: a truncated "
                            f"shard (copy it again, or pack again)")
    return need


class PackedDataset:
    """A packed dataset opened for reading: the index in memory (a few numbers per clip), the
    frames memory-mapped shard by shard on first use."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if root.name == INDEX_FILE:
            root = root.parent
        self.root = root
        info = read_index(root)
        self.id = str(info["id"])
        self.fps = float(info["fps"])
        self.attrs = {k: np.asarray(v) for k, v in (info.get("attrs") or {}).items()}
        records, _ = _read_records(root)
        if not records:
            raise DataError(f"{root}: a packed dataset with no committed clip")
        _check_records(root, records, self.id)
        self.shard = np.array([r["shard"] for r in records], np.int64)
        self.start = np.array([r["start"] for r in records], np.int64)
        self.lengths = np.array([r["frames"] for r in records], np.int64)
        self.lo = np.array([r["lo"] for r in records], np.float64)
        self.hi = np.array([r["hi"] for r in records], np.float64)
        self.cext = np.array([r["cext"] for r in records], np.float64)
        self.meta = _meta_arrays([r["meta"] for r in records])
        self._maps: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    def _map(self, k: int) -> np.ndarray:
        m = self._maps.get(k)
        if m is None:
            path = self.root / shard_name(k)
            n = (path.stat().st_size - HEADER_BYTES) // FRAME_BYTES
            m = np.memmap(path, dtype=np.float32, mode="r", offset=HEADER_BYTES, shape=(int(n), NUM_POINTS, 2))
            self._maps[k] = m
        return m

    def raw(self, i: int, lo: int = 0, hi: Optional[int] = None) -> np.ndarray:
        """Frames ``lo:hi`` of clip ``i`` as stored: a read-only view of the memory map."""
        n = int(self.lengths[i])
        hi = n if hi is None else min(int(hi), n)
        lo = max(0, int(lo))
        s = int(self.start[i])
        return self._map(int(self.shard[i]))[s + lo:s + hi]

    def __getstate__(self) -> dict:  # memory maps are reopened, not pickled, in another process
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state


def _meta_arrays(metas: list[dict]) -> dict[str, np.ndarray]:
    """Per-clip metadata as arrays: the keys every clip has, strings as unicode arrays."""
    if not metas:
        return {}
    keys = set(metas[0])
    for m in metas[1:]:
        keys &= set(m)
    out = {}
    for k in sorted(keys):
        vals = [m[k] for m in metas]
        try:
            arr = np.asarray(vals)
        except ValueError:
            continue
        if arr.dtype == object:
            continue
        out[k] = arr
    return out


# ------------------------------------------------------------------------------ packing
def pack_npz(inputs: Sequence[str | Path], out_dir: str | Path, *, fps: float = 25.0,
             shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = True,
             echo: Callable[[str], None] = print) -> PackWriter:
    """Convert canonical ``.npz`` files into a packed dataset, clip by clip with bounded memory:
    each file's ``flat`` member is decompressed as a stream and never held whole. Clips at
    another rate are resampled to ``fps``. Inputs already packed into ``out_dir`` (by
    ``source_file`` metadata) are skipped, so an interrupted pack continues where it stopped."""
    from tqdm import tqdm

    from suhmo.data.dataset import resample_clip
    from suhmo.data.npz_stream import NpzClipReader

    readers = [NpzClipReader(p) for p in inputs]  # every header checked before anything is written
    total = sum(r.num_frames for r in readers)
    attrs = {}
    for r in readers:
        for k, v in r.attrs.items():
            attrs.setdefault(k, v)
    with PackWriter(out_dir, fps=fps, attrs=attrs, shard_bytes=shard_bytes, commit_every=2.0) as w:
        done: dict[str, int] = {}
        for rec in w.records:
            key = str(rec["meta"].get("source_file"))
            done[key] = done.get(key, 0) + 1
        bar = tqdm(total=total, unit="frame", unit_scale=True, desc="pack", disable=not progress,
                   dynamic_ncols=True)
        try:
            for r in readers:
                key = f"{r.path.name}:{r.digest}"
                skip = done.get(key, 0)
                if skip >= r.num_clips:
                    echo(f"{r.path}: already packed into {w.dir}, skipped")
                elif skip:
                    echo(f"{r.path}: continuing after its {skip} clip(s) already packed")
                for i, clip, meta in r.clips(skip=skip, on_frames=bar.update):
                    src = float(meta.pop("_fps"))
                    if abs(src - fps) > 1e-6:
                        clip = resample_clip(clip, src, fps)
                        meta.setdefault("src_fps", src)
                    meta["source_file"], meta["source_clip"] = key, i
                    w.add(clip, meta, name=f"{r.path}: clip {i}")
        finally:
            bar.close()
    return w
