"""Where the runs of a search live and how they are found: the MLflow store (sqlite by default,
or a tracking server), the tags that make a run a search or a trial, and small logging helpers.

Everything goes through an explicit ``MlflowClient(tracking_uri)``: no fluent API, so no
process-global "active run" that would leak between trials when Ray reuses a worker.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import mlflow  # noqa: F401  (telemetry is disabled in tracking/__init__)
from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException

from suhmo.utils import SuhmoError

TRIAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
LAST_STEP_TAG = "last_step"
KIND_TAG = "suhmo.kind"  # "search" (parent) | "trial" (child)
OBJECTIVES_TAG = "suhmo.objectives"  # JSON [[metric, mode], ...]
PARENT_TAG = "mlflow.parentRunId"
OUTCOME_TAG = "outcome"  # what happened to a trial, in words: a column of the runs page
EVAL_DIR = "evals"
CKPT_DIR = "checkpoints"
_PARAM_MAX = 6000  # MLflow's limit on a param value
_BATCH = 100  # MLflow's limit on params/tags per log_batch


def default_tracking_uri() -> str:
    """``sqlite:////ABS/suhmo-runs/mlflow.db`` under the working root (suhmo.paths.home())."""
    from suhmo.paths import home

    return f"sqlite:///{(home() / 'mlflow.db').as_posix()}"


def artifact_root(tracking_uri: str) -> str | None:
    """Folder URI that holds the experiments' artifact folders, or None for a server.

    For a sqlite store it is ``mlartifacts/`` next to the database file; a tracking server
    (http://...) chooses its own (``--serve-artifacts`` / ``--artifacts-destination``).
    """
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.resolve().parent / "mlartifacts").as_uri()
    if tracking_uri.startswith("file:"):
        return tracking_uri.rstrip("/")
    return None


def mlflow_client(tracking_uri: str) -> MlflowClient:
    if tracking_uri.startswith("sqlite:///"):
        private_sqlite(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def private_sqlite(tracking_uri: str) -> None:
    """Create the sqlite database file with mode 0600 before MLflow opens it (sqlite would
    create it with the umask's mode, usually world-readable); an existing file is kept."""
    import os

    db = Path(tracking_uri[len("sqlite:///"):])
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not db.exists():
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "experiment"


def latest_search_experiment(tracking_uri: str) -> str | None:
    """Id of the experiment that holds the most recent search run, or None."""
    client = mlflow_client(tracking_uri)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    if not exp_ids:
        return None
    runs = client.search_runs(exp_ids, filter_string=f"tags.`{KIND_TAG}` = 'search'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.experiment_id if runs else None

# ---------------------------------------------------------------------- small helpers
def now_ms() -> int:
    return int(time.time() * 1000)


def param_value(v: Any) -> str:
    if isinstance(v, (list, tuple, dict)):
        s = json.dumps(v, sort_keys=True, default=str)
    else:
        s = str(v)
    return s if len(s) <= _PARAM_MAX else s[: _PARAM_MAX - 3] + "..."


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Log params in batches, skipping those already logged (a resumed run) with the same value."""
    existing = client.get_run(run_id).data.params
    items = []
    for k, v in params.items():
        value = param_value(v)
        if k in existing:
            if existing[k] != value:
                # MLflow params are immutable; a resumed trial must not change its config.
                raise SuhmoError(
                    f"run {run_id}: param {k!r} was {existing[k]!r}, now {value!r}; "
                    "a resumed trial must keep its config"
                )
            continue
        items.append(Param(k, value))
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[i:i + _BATCH])


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, Any]) -> None:
    items = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, tags=items[i:i + _BATCH])


def one_line(reason: Any, limit: int = 500) -> str:
    text = " ".join(str(reason).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_status(status: str) -> str:
    status = str(status).upper()
    if status not in TRIAL_STATUSES:
        raise SuhmoError(f"run status {status!r}: choose one of {', '.join(TRIAL_STATUSES)}")
    return status


def objective_pairs(objectives: Iterable[Sequence[str]] | None) -> list[tuple[str, str]]:
    out = []
    for item in objectives or []:
        metric, mode = item
        if mode not in ("min", "max"):
            raise SuhmoError(f"objective {metric!r}: mode {mode!r} must be min or max")
        out.append((str(metric), str(mode)))
    return out


def search_objectives(parent, children: list) -> list[tuple[str, str]]:
    """The objectives of a search, ``[(metric, mode), ...]``: the parent run's tag, else the
    first trial run's that names some."""
    objectives = json.loads(parent.data.tags.get(OBJECTIVES_TAG, "[]"))
    if not objectives:
        objectives = next((json.loads(c.data.tags[OBJECTIVES_TAG]) for c in children
                           if c.data.tags.get(OBJECTIVES_TAG, "[]") != "[]"), [])
    return [(str(m), str(d)) for m, d in objectives]


# ---------------------------------------------------------------------- finding runs
def resolve_search(client, tracking_uri: str, experiment: str | None, search_run_id: str | None):
    """(experiment, parent run) of the search run ``search_run_id``, else of the latest search of
    ``experiment`` (or of the whole store)."""
    if search_run_id:
        try:
            parent = client.get_run(search_run_id)
        except MlflowException:
            raise SuhmoError(f"search run {search_run_id} not found at {tracking_uri}") from None
        exp = client.get_experiment(parent.info.experiment_id)
        return exp, parent
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None or exp.lifecycle_stage != "active":
            names = [e.name for e in client.search_experiments() if e.name != "Default"]
            known = ", ".join(sorted(names)) or "none"
            raise SuhmoError(f"experiment {experiment!r} not found at {tracking_uri} (known: {known})")
        exp_ids = [exp.experiment_id]
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
        if not exp_ids:
            raise SuhmoError(f"no experiment at {tracking_uri}; run a search first (suhmo-search run)")
    runs = client.search_runs(exp_ids, filter_string=f"tags.`{KIND_TAG}` = 'search'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        where = f"experiment {experiment!r}" if experiment else tracking_uri
        raise SuhmoError(f"no search run in {where}; run a search first (suhmo-search run)")
    parent = runs[0]
    return client.get_experiment(parent.info.experiment_id), parent


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs

def find_trial_run(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    """The run id of trial ``trial_id`` under ``parent_run_id``, or None."""
    client = mlflow_client(tracking_uri)
    page = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.trial_id = '{trial_id}'",
        max_results=1, order_by=["attributes.start_time DESC"])
    return page[0].info.run_id if page else None

