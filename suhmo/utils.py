"""Small shared helpers: atomic writes, seeding, device choice, user-facing errors."""

from __future__ import annotations

import os
import random
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


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    atomic_save(path, lambda tmp: Path(tmp).write_bytes(data), mode=mode)


def atomic_write_text(path: Path, text: str, mode: int = FILE_MODE) -> None:
    atomic_write_bytes(path, text.encode(), mode=mode)


def make_dirs(path: Path) -> Path:
    """``mkdir -p`` with :data:`DIR_MODE` for the folders it creates (existing ones are kept)."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return path


def atomic_save(path: Path, writer: Callable[[str], Any], mode: int = FILE_MODE) -> None:
    """Call ``writer(tmp_path)`` then rename onto ``path``: a reader never sees half a file.

    The temporary file is created with ``mode`` (mkstemp: 0600; chmod for another mode) in
    the destination folder, named ``.NAME.*.tmp``; a crash can leave one behind, which
    :func:`remove_stale_tmp` deletes on the next start.
    """
    path = Path(path)
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if mode != 0o600:
            os.chmod(tmp, mode)
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        os.write(fd, data)
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
