"""Where suhmo keeps its working files.

Everything lives under one folder, ``$SUHMO_HOME`` or ``./suhmo-runs`` in the current
working directory: the MLflow sqlite database and artifacts, the Ray Tune storage, the
cached metric reference statistics and the default training outputs.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The working root (absolute), created on first use."""
    root = Path(os.environ.get("SUHMO_HOME", "suhmo-runs")).expanduser().resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)  # the owner's only (checkpoints, mlflow.db)
    return root


def cache_dir() -> Path:
    """Cached metric reference statistics and other derived data."""
    d = Path(os.environ.get("SUHMO_CACHE", home() / "cache")).expanduser().resolve()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def detector_dir() -> Path:
    """Folder searched for the pretrained detector files (Inception, I3D)."""
    return Path(os.environ.get("SUHMO_DETECTORS", home() / "detectors")).expanduser().resolve()


def dev_data() -> Path:
    """The real dev landmarks used by the tests, benchmarks and experiments of a checkout:
    ``$SUHMO_DEV_DATA``, else ``../shared/data/real_dev_landmarks.npz`` beside the repository
    (never copied into it). The file may be absent: callers skip or fall back."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_dev_landmarks.npz"
    return Path(os.environ.get("SUHMO_DEV_DATA", default))
