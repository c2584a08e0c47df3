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


def _umask_mode() -> int:
    """0666 minus the process umask: what open() would give, unlike mkstemp's 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_save(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save(path: Path, writer: Callable[[str], Any]) -> None:
    """Call ``writer(tmp_path)`` then rename onto ``path``: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
