"""The MLflow run hierarchy of a search: one parent run per search, one nested child per trial.

Everything goes through an explicit ``MlflowClient(tracking_uri)``: no fluent API, so no
process-global "active run" that would leak between trials when Ray reuses a worker.

Layout of a trial's artifacts::

    evals/step_<k>/metrics.json     every metric at evaluation step k
    evals/step_<k>/samples.gif      generated samples at step k (suhmo.render)
    evals/step_<k>/motion_map.png   motion map of the same samples
    evals/step_<k>/checkpoint.json  where the trainer's checkpoint of step k lives
    checkpoints/step_<k>/<file>     a copy of the checkpoint, kept when step k improves
                                    the best-so-far value of an objective (every
                                    checkpoint with keep_checkpoints="all")

Metrics of a trial: every metric at its step, plus per objective ``best_<metric>`` (the
best value so far) and ``best_<metric>_step`` (the step of the checkpoint holding it).
``metrics.<name>`` in the MLflow table is the LAST value; ``best_<name>`` compares trials
on their best checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import mlflow  # noqa: F401  (telemetry is disabled in tracking/__init__)
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from suhmo.selection import Objective
from suhmo.utils import SuhmoError, atomic_write_text

TRIAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
LAST_STEP_TAG = "last_step"
KIND_TAG = "suhmo.kind"  # "search" (parent) | "trial" (child)
OBJECTIVES_TAG = "suhmo.objectives"  # JSON [[metric, mode], ...]
PARENT_TAG = "mlflow.parentRunId"
OUTCOME_TAG = "outcome"  # what happened to a trial, in words: a column of the runs page
# How MLflow 3.17's UI reads an experiment (its web app's constants): the kind of experiment
# ("custom_model_development" = classic model training, not a GenAI app), the metric of the
# first chart, a saved view of the runs table (columns, sort, filter) that a URL names with
# ?viewStateShareKey=<key>, and a run's or experiment's description (Markdown).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PRIMARY_METRIC_TAG = "mlflow.experiment.primaryMetric.name"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_KEY = "suhmo-trials"
NOTE_TAG = "mlflow.note.content"
EVAL_DIR = "evals"
CKPT_DIR = "checkpoints"
_PARAM_MAX = 6000  # MLflow's limit on a param value
_BATCH = 100  # MLflow's limit on params/tags per log_batch


# ---------------------------------------------------------------------- storage
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


def setup_experiment(tracking_uri: str, name: str) -> str:
    """Create (or find) experiment ``name`` with an explicit artifact location; idempotent.

    Call it in the driver, before any trial starts: concurrent creation from trial
    processes races on the experiment name (UNIQUE constraint). A lost race here is
    handled by reading the winner's experiment back.
    """
    if not name or not name.strip():
        raise SuhmoError("experiment name is empty; pass --experiment NAME")
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        root = artifact_root(tracking_uri)
        location = f"{root}/{_safe_name(name)}" if root else None
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if EXPERIMENT_KIND_TAG not in exp.tags:  # created before the kind was set
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def _space_params(space_file: str | Path | None) -> list[str]:
    """The searched fields of a space file (``params`` and their ``when`` sub-parameters)."""
    if space_file is None or not Path(space_file).is_file():
        return []
    import yaml

    try:
        data = yaml.safe_load(Path(space_file).read_text()) or {}
    except (yaml.YAMLError, OSError):
        return []
    out: list[str] = []

    def walk(params) -> None:
        for key, spec in (params or {}).items() if isinstance(params, dict) else []:
            if key not in out:
                out.append(str(key))
            for sub in (spec.get("when") or {}).values() if isinstance(spec, dict) else []:
                walk(sub)

    walk(data.get("params") if isinstance(data, dict) else None)
    return out


def _varying_params(runs: list) -> list[str]:
    """Params whose value differs between ``runs`` (the searched fields), seed excluded."""
    keys: dict[str, set] = {}
    for r in runs:
        for k, v in r.data.params.items():
            keys.setdefault(k, set()).add(v)
    return sorted(k for k, vals in keys.items()
                  if k != "seed" and not k.endswith(".seed") and (len(vals) > 1 or any(k not in r.data.params for r in runs)))


def set_runs_view(tracking_uri: str, experiment_id: str, objectives: Sequence[Sequence[str]] | None,
                  params: Sequence[str] = (), *, max_params: int = 8) -> str:
    """Make the experiment open on its trials in the MLflow UI; returns the view key.

    Sets the objective's ``best_<metric>`` as the experiment's primary metric (the first
    chart) and saves a view of the runs table: the trial runs only (the parent is one
    collapsed row otherwise), sorted best first, with ``best_<metric>`` per objective, the
    step of the best checkpoint, the trial's outcome and the searched hyperparameters as
    the first columns. :func:`runs_page_url` opens that view.
    """
    objs = _objectives(objectives)
    client = mlflow_client(tracking_uri)
    cols = [f"metrics.`best_{m}`" for m, _ in objs]
    if objs:
        cols.append(f"metrics.`best_{objs[0][0]}_step`")
    cols.append(f"tags.`{OUTCOME_TAG}`")
    cols += [f"params.`{p}`" for p in list(params)[:max_params]]
    view = {"selectedColumns": cols, "searchFilter": f"tags.`{KIND_TAG}` = 'trial'",
            "orderByKey": f"metrics.`best_{objs[0][0]}`" if objs else "attributes.start_time",
            "orderByAsc": bool(objs) and objs[0][1] == "min"}
    if objs:
        client.set_experiment_tag(experiment_id, PRIMARY_METRIC_TAG, f"best_{objs[0][0]}")
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + VIEW_KEY, json.dumps(view))
    return VIEW_KEY


def runs_page_url(base_url: str, experiment_id: str | None = None) -> str:
    """The runs page of an experiment in the model-training view, with the trials' saved view
    (the home page when there is no experiment)."""
    base = base_url.rstrip("/")
    if experiment_id is None:
        return base + "/#/experiments"
    return (f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_KEY}")


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
def _now_ms() -> int:
    return int(time.time() * 1000)


def _param_value(v: Any) -> str:
    if isinstance(v, (list, tuple, dict)):
        s = json.dumps(v, sort_keys=True, default=str)
    else:
        s = str(v)
    return s if len(s) <= _PARAM_MAX else s[: _PARAM_MAX - 3] + "..."


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Log params in batches, skipping those already logged (a resumed run) with the same value."""
    existing = client.get_run(run_id).data.params
    items = []
    for k, v in params.items():
        value = _param_value(v)
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


def _one_line(reason: Any, limit: int = 500) -> str:
    text = " ".join(str(reason).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_status(status: str) -> str:
    status = str(status).upper()
    if status not in TRIAL_STATUSES:
        raise SuhmoError(f"run status {status!r}: choose one of {', '.join(TRIAL_STATUSES)}")
    return status


def _objectives(objectives: Iterable[Sequence[str]] | None) -> list[tuple[str, str]]:
    out = []
    for item in objectives or []:
        metric, mode = item
        if mode not in ("min", "max"):
            raise SuhmoError(f"objective {metric!r}: mode {mode!r} must be min or max")
        out.append((str(metric), str(mode)))
    return out


# ---------------------------------------------------------------------- parent run
def start_search_run(tracking_uri: str, experiment_id: str, *, space_file: str | Path | None,
                     cli_options: dict, study_seed: int | None, run_name: str,
                     objectives: Sequence[Sequence[str]] | None = None,
                     run_id: str | None = None) -> str:
    """Open the parent run of one search and return its id.

    Logs the search-space file as an artifact (``search/<file>``), the resolved CLI options
    and the study seed as params, and the objectives as a tag. With ``run_id`` (a resumed
    search) the existing run is reopened instead.
    """
    client = mlflow_client(tracking_uri)
    objs = _objectives(objectives)
    if run_id is not None:
        try:
            client.get_run(run_id)
        except MlflowException:
            raise SuhmoError(f"search run {run_id} not found at {tracking_uri}") from None
        client.update_run(run_id, status="RUNNING")
        set_tags(client, run_id, {"status": "RUNNING"})
        return run_id
    tags = {KIND_TAG: "search", "status": "RUNNING"}
    if objs:
        tags[OBJECTIVES_TAG] = json.dumps(objs)
    searched = _space_params(space_file)
    tags[NOTE_TAG] = _search_note(run_name, space_file, objs, searched, cli_options)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    rid = run.info.run_id
    params = {f"search.{k}": v for k, v in _flatten(dict(cli_options or {})).items()}
    params["study_seed"] = study_seed
    _log_params(client, rid, params)
    if space_file is not None:
        p = Path(space_file)
        if not p.is_file():
            raise SuhmoError(f"search space file {p} not found")
        client.log_artifact(rid, str(p), "search")
    set_runs_view(tracking_uri, experiment_id, objs, searched)
    client.set_experiment_tag(experiment_id, NOTE_TAG, tags[NOTE_TAG])  # shown above the runs table
    return rid


def _search_note(name: str, space_file, objs, searched: Sequence[str], cli_options: dict | None) -> str:
    """The parent run's description (Markdown, shown on the run's page and the runs list)."""
    opts = dict(cli_options or {})
    goal = ", ".join(f"`best_{m}` ({'lower' if mode == 'min' else 'higher'} is better)" for m, mode in objs)
    lines = [f"Hyperparameter search **{name}**"
             + (f" on `{Path(space_file).name}`" if space_file else "")
             + (f": {opts['num_samples']} trials" if opts.get("num_samples") else "") + "."]
    if goal:
        lines.append(f"Objective: {goal}, the value at each trial's best checkpoint.")
    if searched:
        lines.append("Searched: " + ", ".join(f"`{p}`" for p in searched) + ".")
    lines.append("Each trial is a nested child run (expand this row, or open the saved view of the "
                 "trials that `suhmo-search ui` prints). A trial stopped early by the scheduler is "
                 f"FINISHED with `{OUTCOME_TAG}` = stopped early; FAILED runs carry `error_reason`.")
    return "\n\n".join(lines)


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


def close_run(tracking_uri: str, run_id: str, status: str, reason: str | None = None, *,
              stopped_by_scheduler: bool | None = None) -> None:
    """End ``run_id`` with ``status`` and the status tags (driver-side safety net).

    The ``outcome`` tag says in words what happened (a column of the runs page): completed,
    stopped early by the scheduler, interrupted, or failed with the reason.
    """
    status = _check_status(status)
    client = mlflow_client(tracking_uri)
    stopped = status == "KILLED" if stopped_by_scheduler is None else stopped_by_scheduler
    if status == "FAILED":
        outcome = "failed: " + (_one_line(reason, 200) if reason else "error")
    elif stopped:
        last = client.get_run(run_id).data.tags.get(LAST_STEP_TAG)
        outcome = "stopped early by the scheduler" + (f" at iteration {last}" if last else "")
    elif status == "KILLED":
        outcome = "interrupted" + (f": {_one_line(reason, 200)}" if reason else "")
    else:
        outcome = "completed"
    set_tags(client, run_id, {"status": status, "stopped_by_scheduler": str(bool(stopped)).lower(),
                               "error_reason": _one_line(reason) if reason else "", OUTCOME_TAG: outcome})
    client.set_terminated(run_id, status=status)


def _leaderboard(children: list, objectives: list[tuple[str, str]]) -> list[dict]:
    rows = []
    for r in children:
        m, t = r.data.metrics, r.data.tags
        row = {"run_id": r.info.run_id, "run_name": r.info.run_name, "trial_id": t.get("trial_id"),
               "variant": t.get("variant"), "status": r.info.status}
        for metric, _ in objectives:
            row[f"best_{metric}"] = m.get(f"best_{metric}")
            step = m.get(f"best_{metric}_step")
            row[f"best_{metric}_step"] = int(step) if step is not None else None
        rows.append(row)
    if objectives:
        obj = Objective.of(objectives[0])
        key = f"best_{obj.metric}"
        rows.sort(key=lambda r: (r[key] is None or not math.isfinite(r[key]),
                                 obj.key(r[key]) if r[key] is not None and math.isfinite(r[key]) else 0.0))
    return rows


def _markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no trials)\n"
    cols = list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.5g}"
        return "" if v is None else str(v)

    lines = ["| rank | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | " + " | ".join(fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def finish_search_run(tracking_uri: str, parent_run_id: str, summary: dict | None = None,
                      status: str = "FINISHED", trial_states: Mapping[str, str] | None = None,
                      trial_errors: Mapping[str, str] | None = None) -> list[dict]:
    """Close the parent run: leaderboard + summary artifacts, summary metrics/tags, status.

    Children still RUNNING at this point belong to trial processes that ended without closing
    their run (Ray may tear a worker down right after its final report, or kill it). They are
    closed as the trial would have closed itself, by the state the driver read from Tune
    (``trial_states``, trial id -> finished | stopped | error | ...): finished -> FINISHED,
    error -> FAILED with ``trial_errors[id]``. A trial stopped by the scheduler (ASHA) is a
    normal outcome of the search, not a failure: its run ends FINISHED tagged
    ``stopped_by_scheduler=true`` and ``outcome``, also when the trial had closed it KILLED
    itself (inside the trial a scheduler stop and an interrupted search look the same). A trial without a known state (a caller that passes none) counts as
    finished when its last evaluation reached its iteration budget; any other is closed KILLED
    with the reason, so no run of a finished search stays RUNNING. Returns the leaderboard rows
    (best first).
    """
    status = _check_status(status)
    client = mlflow_client(tracking_uri)
    parent = client.get_run(parent_run_id)
    exp_id = parent.info.experiment_id
    states, errors = dict(trial_states or {}), dict(trial_errors or {})
    for child in child_runs(client, exp_id, parent_run_id):
        run_id, tid = child.info.run_id, child.data.tags.get("trial_id")
        if child.info.status == "KILLED" and states.get(tid) == "stopped":
            close_run(tracking_uri, run_id, "FINISHED", child.data.tags.get("error_reason") or None,
                      stopped_by_scheduler=True)
            continue
        if child.info.status not in ("RUNNING", "SCHEDULED"):
            continue
        state = states.get(tid)
        if state is None:
            last = child.data.tags.get(LAST_STEP_TAG)
            budget = child.data.params.get("train.iterations")
            if last is not None and budget is not None and int(last) >= int(budget):
                state = "finished"
        if state == "finished":
            close_run(tracking_uri, run_id, "FINISHED", None, stopped_by_scheduler=False)
        elif state == "stopped":
            close_run(tracking_uri, run_id, "FINISHED", "stopped by the scheduler (run closed by the driver)",
                      stopped_by_scheduler=True)
        elif state == "error":
            close_run(tracking_uri, run_id, "FAILED", errors.get(tid) or "trial failed (run closed by the driver)",
                      stopped_by_scheduler=False)
        else:
            close_run(tracking_uri, run_id, "KILLED",
                      "trial process ended without closing its run (search " + status.lower() + ")",
                      stopped_by_scheduler=False)
    children = child_runs(client, exp_id, parent_run_id)
    objectives = json.loads(parent.data.tags.get(OBJECTIVES_TAG, "[]"))
    if not objectives:
        for c in children:
            if OBJECTIVES_TAG in c.data.tags:
                objectives = json.loads(c.data.tags[OBJECTIVES_TAG])
                break
    objectives = [tuple(o) for o in objectives]
    rows = _leaderboard(children, objectives)
    summary = dict(summary or {})
    metrics, tags = [], {"status": status}
    ts = _now_ms()
    for k, v in _flatten(summary).items():
        if isinstance(v, bool) or v is None:
            tags[f"summary.{k}"] = v
        elif isinstance(v, (int, float, np.integer, np.floating)):
            metrics.append(Metric(f"summary.{k}", float(v), ts, 0))
        elif isinstance(v, str):
            tags[f"summary.{k}"] = _one_line(v, 5000)
    metrics.append(Metric("summary.trials", float(len(children)), ts, 0))
    for st in TRIAL_STATUSES:
        metrics.append(Metric(f"summary.trials_{st.lower()}",
                              float(sum(c.info.status == st for c in children)), ts, 0))
    if objectives and rows and rows[0].get(f"best_{objectives[0][0]}") is not None:
        metrics.append(Metric(f"best_{objectives[0][0]}", float(rows[0][f"best_{objectives[0][0]}"]), ts, 0))
        tags["best_run_id"] = rows[0]["run_id"]
    client.log_batch(parent_run_id, metrics=metrics)
    set_tags(client, parent_run_id, tags)
    view = json.loads(client.get_experiment(exp_id).tags.get(VIEW_TAG_PREFIX + VIEW_KEY, "{}"))
    if objectives and not any(c.startswith("params.") for c in view.get("selectedColumns", [])):
        # no space file named the searched fields: show those that varied between the trials
        set_runs_view(tracking_uri, exp_id, objectives, _varying_params(children))
    with tempfile.TemporaryDirectory(prefix="suhmo-lb-") as tmp:
        d = Path(tmp)
        atomic_write_text(d / "leaderboard.json", json.dumps(rows, indent=2, default=str))
        title = "objective " + ", ".join(f"{m} ({mode})" for m, mode in objectives) if objectives else ""
        atomic_write_text(d / "leaderboard.md",
                          f"# Leaderboard {parent.info.run_name}\n\n{title}\n\n" + _markdown_table(rows))
        atomic_write_text(d / "summary.json", json.dumps(summary, indent=2, default=str))
        client.log_artifacts(parent_run_id, str(d), "search")
    client.set_terminated(parent_run_id, status=status)
    return rows


# ---------------------------------------------------------------------- child run
def find_trial_run(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
    """The run id of trial ``trial_id`` under ``parent_run_id``, or None."""
    client = mlflow_client(tracking_uri)
    page = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.trial_id = '{trial_id}'",
        max_results=1, order_by=["attributes.start_time DESC"])
    return page[0].info.run_id if page else None


class TrialLogger:
    """Logs one trial into a nested child run of the search's parent run (inside the trial).

    ``config`` is the flat dotted config (``{"optim.lr_g": 1e-4, ...}``; a nested dict is
    flattened); every field becomes a param. ``objectives`` is ``[(metric, "min"|"max")]``.
    A resumed trial reuses its run: pass ``run_id`` (stored in the Tune checkpoint), or let
    the logger find the run by ``trial_id`` under the same parent.

    Use as a context manager so that the run is always closed: a normal exit ends it
    FINISHED, ``SystemExit``/``KeyboardInterrupt`` (Ray Tune stops a trial by raising
    ``SystemExit`` from ``tune.report``) KILLED, any other exception FAILED with the
    exception as error reason. ``close()`` may also be called explicitly first.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, *,
                 trial_id: str, trial_name: str | None = None, config: dict | None = None,
                 seed: int | None = None, objectives: Sequence[Sequence[str]] | None = None,
                 run_id: str | None = None, keep_checkpoints: str = "best",
                 render_samples: int = 4, render_size: int = 128) -> None:
        if keep_checkpoints not in ("best", "all"):
            raise SuhmoError(f"keep_checkpoints={keep_checkpoints!r}: choose best or all")
        flat = _flatten(dict(config or {}))
        self.tracking_uri = tracking_uri
        self.client = mlflow_client(tracking_uri)
        self.experiment_id = str(experiment_id)
        self.parent_run_id = parent_run_id
        self.trial_id = str(trial_id)
        self.objectives = _objectives(objectives)
        self.keep_checkpoints = keep_checkpoints
        self.render_samples = render_samples
        self.render_size = render_size
        self.fps = float(flat.get("data.fps", 25.0))
        self.closed = False
        self.best: dict[str, tuple[float, int]] = {}  # metric -> (value, step)
        self.last_logged_step = -1  # a resumed run: steps up to this one are in MLflow already
        if run_id is None:
            run_id = find_trial_run(tracking_uri, self.experiment_id, parent_run_id, self.trial_id)
        if run_id is not None:
            self.run_id = run_id
            self._reopen()
        else:
            tags = {PARENT_TAG: parent_run_id, KIND_TAG: "trial", "trial_id": self.trial_id,
                    "status": "RUNNING", "stopped_by_scheduler": "false", "error_reason": "",
                    OBJECTIVES_TAG: json.dumps(self.objectives)}
            variant = flat.get("model.variant")
            if variant is not None:
                tags["variant"] = variant
            run = self.client.create_run(self.experiment_id, run_name=trial_name or self.trial_id, tags=tags)
            self.run_id = run.info.run_id
        params = dict(flat)
        if seed is not None:
            params["seed"] = seed
        _log_params(self.client, self.run_id, params)

    # -------------------------------------------------------------- lifecycle
    def _reopen(self) -> None:
        try:
            run = self.client.get_run(self.run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":  # the store did not answer: not a verdict on the run
                raise
            raise SuhmoError(f"trial run {self.run_id} not found at {self.tracking_uri}") from None
        if run.data.tags.get(PARENT_TAG) != self.parent_run_id:
            raise SuhmoError(f"run {self.run_id} is not a child of search run {self.parent_run_id}")
        try:
            self.last_logged_step = int(run.data.tags.get(LAST_STEP_TAG, -1))
        except ValueError:
            self.last_logged_step = -1
        m = run.data.metrics
        for metric, _ in self.objectives:
            if f"best_{metric}" in m and f"best_{metric}_step" in m:
                self.best[metric] = (float(m[f"best_{metric}"]), int(m[f"best_{metric}_step"]))
        self.client.update_run(self.run_id, status="RUNNING")
        set_tags(self.client, self.run_id, {"status": "RUNNING", "resumed": "true"})

    def __enter__(self) -> "TrialLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.closed:
            return False
        if exc_type is None:
            self.close("FINISHED")
        elif issubclass(exc_type, (SystemExit, KeyboardInterrupt, GeneratorExit)):
            why = "stopped by the Tune scheduler" if exc_type is SystemExit else f"interrupted ({exc_type.__name__})"
            self.close("KILLED", why)
        else:
            self.close("FAILED", f"{exc_type.__name__}: {exc}")
        return False

    def close(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED); idempotent."""
        if self.closed:
            return
        close_run(self.tracking_uri, self.run_id, status, reason)
        self.closed = True

    # -------------------------------------------------------------- evaluation
    def log_eval(self, step: int, metrics: dict[str, float], checkpoint_path: str | Path | None = None,
                 samples: np.ndarray | Callable[[], np.ndarray] | None = None,
                 portrait: np.ndarray | Callable[[], np.ndarray] | None = None,
                 timestamp_ms: int | None = None) -> dict[str, tuple[float, int]]:
        """Log one evaluation: metrics at ``step``, best-so-far per objective, artifacts.

        ``samples`` are generated sequences ``[K, T, 68, 2]`` in the [0, 1] frame (a GIF and
        a motion map are rendered from the first ``render_samples``), or a function that
        generates them, called only when this step improved the first objective (the
        samples of each new best checkpoint); ``checkpoint_path`` is
        the trainer's checkpoint file (or folder) of this step. ``portrait`` is RGB frames
        ``[T, H, W, 3]`` of a face animated by the model (``suhmo.animate``), or a function making
        them; like ``samples`` it is used on a new best only, and written as ``portrait.gif`` beside
        ``samples.gif`` and at the top of the run (the portrait of the best checkpoint so far).
        ``timestamp_ms``: when the evaluation happened (a replayed record logs the same metric rows
        again, which MLflow keeps once). Returns the best-so-far ``{metric: (value, step)}``.
        """
        if self.closed:
            raise SuhmoError(f"trial run {self.run_id} is closed; cannot log step {step}")
        step = int(step)
        if step <= self.last_logged_step:
            # a resumed trial that re-evaluates a step it had logged before the interruption
            # (its checkpoint was older than its last report): MLflow keeps one value per step
            return dict(self.best)
        ts = int(timestamp_ms) if timestamp_ms is not None else _now_ms()
        values = {str(k): float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}
        batch = [Metric(k, v, ts, step) for k, v in values.items()]
        improved = []
        for metric, mode in self.objectives:
            if metric in values and Objective(metric, mode).better(values[metric], self.best.get(metric, (None,))[0]):
                self.best[metric] = (values[metric], step)
                improved.append(metric)
            if metric in self.best:
                value, at = self.best[metric]
                batch += [Metric(f"best_{metric}", value, ts, step),
                          Metric(f"best_{metric}_step", float(at), ts, step)]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])
        # lets the driver tell a trial that trained to its end from a stopped one
        self.client.set_tag(self.run_id, LAST_STEP_TAG, str(step))

        with tempfile.TemporaryDirectory(prefix="suhmo-eval-") as tmp:
            d = Path(tmp)
            record = {"step": step, "metrics": values,
                      "best": {m: {"value": v, "step": s} for m, (v, s) in self.best.items()}}
            atomic_write_text(d / "metrics.json", json.dumps(record, indent=2))
            if callable(samples):
                samples = samples() if self.objectives and self.objectives[0][0] in improved else None
            if checkpoint_path is not None:
                atomic_write_text(d / "checkpoint.json",
                                  json.dumps({"step": step, "path": str(Path(checkpoint_path).resolve())}))
            if samples is not None and self.render_samples > 0:
                self._render(np.asarray(samples), d)
            new_best = not self.objectives or self.objectives[0][0] in improved
            if portrait is not None and new_best:
                import cv2

                from suhmo.render import write_video

                try:
                    frames = portrait() if callable(portrait) else portrait
                    write_video(np.asarray(frames), d / "portrait.gif", fps=self.fps)
                except (SuhmoError, ValueError, cv2.error) as e:  # a picture, not worth the trial
                    print(f"[suhmo] trial run {self.run_id}: no portrait at step {step}: {e}", file=sys.stderr)
            self.client.log_artifacts(self.run_id, str(d), f"{EVAL_DIR}/step_{step}")
            if (d / "portrait.gif").is_file():
                self.client.log_artifact(self.run_id, str(d / "portrait.gif"))

        keep = self.keep_checkpoints == "all" or bool(improved) or not self.objectives
        if checkpoint_path is not None and keep:
            self._log_checkpoint(Path(checkpoint_path), step)
        return dict(self.best)

    def _log_checkpoint(self, path: Path, step: int) -> None:
        if not path.exists():
            raise SuhmoError(f"checkpoint {path} (step {step}) does not exist")
        dest = f"{CKPT_DIR}/step_{step}"
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), dest)
            return
        # Copy first: the trainer rewrites last.pt in place while we upload.
        with tempfile.TemporaryDirectory(prefix="suhmo-ckpt-") as tmp:
            snap = Path(tmp) / path.name
            shutil.copy2(path, snap)
            self.client.log_artifact(self.run_id, str(snap), dest)

    def _render(self, samples: np.ndarray, out: Path) -> None:
        """``samples.gif`` and ``motion_map.png`` of the first sequences (suhmo.render)."""
        from suhmo.render import render_png, render_video

        clips = list(samples[: self.render_samples])
        render_video(clips, out / "samples.gif", size=self.render_size, grid=len(clips), fps=self.fps)
        render_png(clips, out / "motion_map.png", size=self.render_size, max_samples=len(clips))
