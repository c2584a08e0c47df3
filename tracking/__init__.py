"""MLflow side of the search platform: run hierarchy, best-export, the UI.

This package is the only place that imports mlflow. Telemetry is switched off before the
first import (MLflow writes an installation id under ``~/.config/mlflow`` otherwise).

Public API (the contract with ``launch/``)::

    default_tracking_uri() -> "sqlite:////ABS/suhmo-runs/mlflow.db"
    setup_experiment(tracking_uri, name) -> experiment_id            # driver side
    start_search_run(tracking_uri, experiment_id, *, space_file, cli_options, study_seed,
                     run_name, objectives=None, run_id=None) -> parent_run_id
    finish_search_run(tracking_uri, parent_run_id, summary, status="FINISHED")
    TrialLogger(tracking_uri, experiment_id, parent_run_id, *, trial_id, trial_name, config,
                seed, objectives, run_id=None)                       # inside the trial
        .log_eval(step, metrics, checkpoint_path, samples) ; .close(status, reason)
        used as a context manager: closes FINISHED / KILLED / FAILED on exit
    close_run(tracking_uri, run_id, status, reason=None)             # driver-side safety net
    tracking.outbox.OutboxLogger(folder, tracking_uri=..., ...)      # inside the trial: records to
        disk, replayed by a thread (TrialLogger), the driver, `suhmo-search sync` (replay_search)
    export_best(...) / select_best(...)                              # see tracking.export
    UIServer(tracking_uri, port)                                      # see tracking.ui

The names are resolved lazily so that ``import tracking`` (and ``--help``) stays fast.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in CLI output

_LAZY = {
    "default_tracking_uri": "tracking.store",
    "artifact_root": "tracking.store",
    "setup_experiment": "tracking.search_run",
    "start_search_run": "tracking.search_run",
    "finish_search_run": "tracking.search_run",
    "TrialLogger": "tracking.trial_log",
    "close_run": "tracking.search_run",
    "find_trial_run": "tracking.store",
    "mlflow_client": "tracking.store",
    "TRIAL_STATUSES": "tracking.store",
    "select_best": "tracking.export",
    "export_best": "tracking.export",
    "Selection": "tracking.export",
    "UIServer": "tracking.ui",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tracking' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
