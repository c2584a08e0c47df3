"""Shared fixtures. Tests are CPU-only, tiny and deterministic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from suhmo.paths import dev_data as dev_data_path

DEV_DATA = dev_data_path()

# Quiet, local-only settings for every test process (and the Ray workers they start). Ray's
# authentication stays at its default (token auth for local instances): see README, cluster section.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# a local Ray started in this process stays on 127.0.0.1 (read when ray is imported, which
# collection does before any test starts one; launch.rayenv.start_ray sets it for the CLI)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own SUHMO_HOME so nothing leaks between tests."""
    monkeypatch.setenv("SUHMO_HOME", str(tmp_path / "suhmo-home"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    try:  # the optional video venv has no torch
        import torch
    except ImportError:
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture
def dev_data() -> Path:
    """The real dev landmarks from ../shared/data; the test is skipped without them."""
    if not DEV_DATA.is_file():
        pytest.skip(f"real dev data not found at {DEV_DATA} (set SUHMO_DEV_DATA)")
    return DEV_DATA
