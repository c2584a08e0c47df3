"""Small shared helpers: atomic writes, seeding, device choice, user-facing errors, a full
disk and the memory an input may make suhmo allocate."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


class SuhmoError(RuntimeError):
    """An error meant for the user: the CLI prints its message on one line, no traceback."""


# Files suhmo writes (checkpoints, configs, metrics, datasets, renders) are the owner's only:
# checkpoints and the MLflow database are not for other users of a shared machine. The mode
# is given explicitly at creation; the process umask is never changed (that would race with
# other threads creating files).
FILE_MODE = 0o600
DIR_MODE = 0o700


# ---------------------------------------------------------------------- a full disk
# errno values that mean "no room for these bytes": no space, quota exceeded, over RLIMIT_FSIZE
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def format_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.00 GiB``."""
    n = float(n)
    if n < 1024:
        return f"{int(n)} B"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    if n < 1 << 30:
        return f"{n / 2**20:.1f} MiB"
    if n < 1 << 40:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**40:.1f} TiB"


def free_bytes(path) -> int | None:
    """Bytes free for this user on the filesystem holding ``path`` (its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def disk_full_cause(exc: BaseException | None) -> OSError | None:
    """The OSError that says a write found no room (ENOSPC, EDQUOT, EFBIG), anywhere in the chain
    of ``exc`` (libraries wrap it: torch, MLflow), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class DiskFullError(SuhmoError):
    """A write found its filesystem full: the message names the file, the free space and the
    space the write needed (``needed`` None when unknown), and says that what was there before is
    intact (every suhmo write is atomic or an append that is undone when it cannot complete)."""

    def __init__(self, path, *, needed: int | None = None, free: int | None = None,
                 at_least: bool = False, what: str = "", file_size_limit: bool = False):
        self.path = Path(path)
        self.needed = needed
        self.free = free_bytes(self.path) if free is None else free
        have = f"{format_bytes(self.free)} free" if self.free is not None else "free space unknown"
        if file_size_limit:
            have = "over the file-size limit, ulimit -f"
        need = "" if needed is None else f", {'at least ' if at_least else ''}{format_bytes(needed)} needed"
        super().__init__(f"disk full: cannot write {what + ' ' if what else ''}{self.path} ({have}{need}); "
                         f"the files written before are intact: free some space, then resume (suhmo train "
                         f"--resume, suhmo-search resume) or run the command again")

    @classmethod
    def check(cls, exc: BaseException, path, needed: int | None = None, *, at_least: bool = False,
              what: str = "") -> "DiskFullError | None":
        """The DiskFullError for ``exc`` when it (or its cause) is a full disk, else None:
        ``raise DiskFullError.check(e, path, n) or e`` style, see :func:`reraise_disk_full`."""
        cause = disk_full_cause(exc)
        if cause is None:
            return None
        # EFBIG: over RLIMIT_FSIZE, where the free space is not what stops the write
        return cls(path, needed=needed, at_least=at_least, what=what, file_size_limit=cause.errno == errno.EFBIG)


def reraise_disk_full(exc: BaseException, path, needed: int | None = None, **kw) -> None:
    """Raise :class:`DiskFullError` from ``exc`` when it is a full disk; return otherwise."""
    err = DiskFullError.check(exc, path, needed, **kw)
    if err is not None:
        raise err from None


class _RecordingFile:
    """A binary file for writers that swallow the OSError of a failed write (torch.save turns
    ENOSPC into "unexpected pos"): the first OSError is kept in ``error``."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as e:
            self.error = self.error or e
            raise


class _CountingSink:
    """A binary file that only counts the bytes written to it (the size a write needs)."""

    def __init__(self):
        self.n = 0

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self.n += n
        return n

    def flush(self) -> None:
        pass


def atomic_write_stream(path: Path, write_fn: Callable[[Any], Any], mode: int = FILE_MODE) -> None:
    """:func:`atomic_save` for writers of a binary file object (``torch.save(obj, f)``). On a full
    disk the bytes the write needs are counted by writing again into a sink that keeps nothing."""

    def writer(tmp: str) -> None:
        with open(tmp, "wb") as raw:
            f = _RecordingFile(raw)
            try:
                write_fn(f)
                f.flush()
            except BaseException as e:
                if f.error is not None and e is not f.error:
                    raise f.error from e
                raise

    def needed() -> int | None:
        sink = _CountingSink()
        try:
            write_fn(sink)
        except Exception:  # noqa: BLE001 - the size is a courtesy; the disk-full error stands
            return None
        return sink.n

    atomic_save(path, writer, mode=mode, needed=needed)


# ---------------------------------------------------------------------- memory computed from inputs
def _address_space_limit() -> int | None:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        return None if soft == resource.RLIM_INFINITY else int(soft)
    except (ImportError, ValueError, OSError):
        return None


def memory_budget() -> tuple[int, str]:
    """``(bytes, where the figure comes from)``: what one allocation whose size comes from an
    input (a file, a flag, a config) may take: ``$SUHMO_MAX_ALLOC_BYTES`` when set, else half of
    the memory available now (and of the address-space limit, when one is set)."""
    raw = os.environ.get("SUHMO_MAX_ALLOC_BYTES")
    if raw:
        try:
            return int(float(raw)), "SUHMO_MAX_ALLOC_BYTES"
        except ValueError:
            raise SuhmoError(f"SUHMO_MAX_ALLOC_BYTES={raw!r}: expected a number of bytes") from None
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    budget, why = ((avail // 2), "half of the memory available") if avail else (8 << 30, "the default")
    limit = _address_space_limit()
    if limit is not None and limit // 2 < budget:
        budget, why = limit // 2, "half of the address-space limit (ulimit -v)"
    return budget, why


def check_memory(nbytes: float, what: str, fix: str = "", error: type = SuhmoError) -> None:
    """Refuse, before allocating, ``nbytes`` computed from an input: ``error`` naming ``what``
    (e.g. ``"--frames 100000000 x --samples 64"``), the bytes it needs against
    :func:`memory_budget`, and ``fix``."""
    budget, why = memory_budget()
    if nbytes > budget:
        raise error(f"{what} needs {format_bytes(nbytes)} of memory, over the {format_bytes(budget)} "
                    f"allowed here ({why}; SUHMO_MAX_ALLOC_BYTES sets it)" + (f"; {fix}" if fix else ""))


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    atomic_save(path, lambda tmp: Path(tmp).write_bytes(data), mode=mode, needed=len(data))


def atomic_write_text(path: Path, text: str, mode: int = FILE_MODE) -> None:
    atomic_write_bytes(path, text.encode(), mode=mode)


def make_dirs(path: Path) -> Path:
    """``mkdir -p`` with :data:`DIR_MODE` for the folders it creates (existing ones are kept)."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return path


def atomic_save(path: Path, writer: Callable[[str], Any], mode: int = FILE_MODE,
                needed: int | Callable[[], int | None] | None = None) -> None:
    """Call ``writer(tmp_path)`` then rename onto ``path``: a reader never sees half a file.

    The temporary file is created with ``mode`` (mkstemp: 0600; chmod for another mode) in
    the destination folder, named ``.NAME.*.tmp``; a crash can leave one behind, which
    :func:`remove_stale_tmp` deletes on the next start. A full disk raises
    :class:`DiskFullError` (``needed``: the file's size, or a function computing it, when
    known; else the bytes written before the disk filled are reported as a lower bound) and
    ``path`` keeps its old content.
    """
    path = Path(path)
    try:
        make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        if disk_full_cause(e) is not None:
            reraise_disk_full(e, path, needed() if callable(needed) else needed)
        raise
    try:
        if mode != 0o600:
            os.chmod(tmp, mode)
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, Exception) and disk_full_cause(e) is not None:
            if needed is None:
                reraise_disk_full(e, path, written or None, at_least=True)
            reraise_disk_full(e, path, needed() if callable(needed) else needed)
        raise


def remove_stale_tmp(folder: Path, names) -> list[Path]:
    """Delete ``.NAME.*.tmp`` leftovers of :func:`atomic_save` for ``names`` in ``folder``."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for name in names:
        for p in folder.glob(f".{name}.*.tmp"):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def append_line(path: Path, line: str, mode: int = FILE_MODE) -> None:
    """Append one text line with a single ``write`` on an ``O_APPEND`` descriptor: concurrent or
    interrupted writers never interleave half lines (a torn last line is repaired on resume)."""
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    except OSError as e:
        reraise_disk_full(e, path, len(data))
        raise
    try:
        before = os.fstat(fd).st_size
        try:
            n = os.write(fd, data)
            if n != len(data):  # a short write: the filesystem filled up mid-line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        except OSError as e:
            # take back the half line (the file keeps its whole lines), then say why
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_size > before:
                    os.ftruncate(fd, before)
            reraise_disk_full(e, path, len(data))
            raise
    finally:
        os.close(fd)


def check_regular_file(path, what: str = "file", error: type = SuhmoError) -> Path:
    """``path`` must be an existing regular file (not a folder, FIFO, device or socket: reading
    a FIFO blocks forever); else ``error`` (SuhmoError, or e.g. DataError) naming it."""
    import stat

    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a folder, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file (a pipe, device or socket), expected a {what}")
    return path


def check_output_path(path, option: str, *, folder: bool = False) -> Path:
    """Fail before any work when ``path`` cannot be written: a parent that is a file, an
    existing folder where a file goes (or a file where a folder goes), no write permission."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise SuhmoError(f"{option} {path}: exists and is not a folder")
        if not folder and path.is_dir():
            raise SuhmoError(f"{option} {path}: is a folder, expected a file name")
    parent = path if folder else path.parent
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise SuhmoError(f"{option} {path}: {probe} is a file, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise SuhmoError(f"{option} {path}: no permission to write in {probe}")
    return path


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> "torch.device":  # noqa: F821
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SuhmoError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return torch.device(name)
