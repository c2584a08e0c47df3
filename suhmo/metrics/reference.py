"""Real-data statistics, computed once and cached on disk.

The cache key is a hash of (dataset content, preprocessing, detector, protocol), as in
stylegan2-ada-pytorch's ``metrics``: every trial of a search that evaluates against the same
eval set reuses one file in ``suhmo.paths.cache_dir()``. A JSON file with the readable key
sits beside each ``.npz``. Files are written atomically, so concurrent trials that build the
same statistics at once simply both write the same content.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from suhmo.utils import atomic_save, atomic_write_text


def dataset_fingerprint(clips: list[np.ndarray], fps: float | None = None) -> str:
    """sha1 of the clip arrays (float32 bytes, with their lengths) and the frame rate."""
    h = hashlib.sha1()
    h.update(str(fps).encode())
    for c in clips:
        a = np.ascontiguousarray(np.asarray(c, np.float32))
        h.update(np.asarray(a.shape, np.int64).tobytes())
        h.update(a.tobytes())
    return h.hexdigest()


def cache_key(dataset: str, preprocessing: dict, detector: str, protocol: dict) -> dict:
    return {"dataset": dataset, "preprocessing": preprocessing, "detector": detector, "protocol": protocol}


def cache_path(key: dict, cache_dir: Optional[Path] = None, prefix: str = "ref") -> Path:
    from suhmo.paths import cache_dir as default_dir

    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return Path(cache_dir or default_dir()) / "metrics" / f"{prefix}-{digest}.npz"


def cached_arrays(key: dict, build: Callable[[], dict[str, np.ndarray]], *, cache_dir: Optional[Path] = None,
                  prefix: str = "ref", rebuild: bool = False) -> tuple[dict[str, np.ndarray], Path, bool]:
    """Load the arrays stored under ``key``, or ``build()`` and store them.

    Returns (arrays, path, hit) where ``hit`` says whether the cache was used.
    """
    path = cache_path(key, cache_dir, prefix)
    if path.is_file() and not rebuild:
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}, path, True
        except (OSError, ValueError, EOFError):
            pass  # unreadable (e.g. disk full when written): rebuild below
    arrays = build()
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_save(path, write)
    atomic_write_text(path.with_suffix(".json"), json.dumps(key, sort_keys=True, indent=1, default=str))
    return arrays, path, False
