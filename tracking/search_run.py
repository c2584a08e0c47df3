"""The life of a search's runs in MLflow: the experiment, the parent run (opened by the driver,
closed with the leaderboard and a summary) and the closing of trial runs (by the trial, or by the
driver for those a worker left open)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from suhmo.utils import SuhmoError
from tracking.leaderboard import leaderboard_rows, log_leaderboard
from tracking.store import (KIND_TAG, LAST_STEP_TAG, OBJECTIVES_TAG, OUTCOME_TAG, TRIAL_STATUSES, artifact_root,
                            check_status, child_runs, flatten, log_params, mlflow_client, now_ms, objective_pairs,
                            one_line, search_objectives, set_tags)
from tracking.view import (EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, NOTE_TAG, VIEW_KEY, VIEW_TAG_PREFIX,
                           search_note, set_runs_view, space_params, varying_params)


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
    objs = objective_pairs(objectives)
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
    searched = space_params(space_file)
    tags[NOTE_TAG] = search_note(run_name, space_file, objs, searched, cli_options)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    rid = run.info.run_id
    params = {f"search.{k}": v for k, v in flatten(dict(cli_options or {})).items()}
    params["study_seed"] = study_seed
    log_params(client, rid, params)
    if space_file is not None:
        p = Path(space_file)
        if not p.is_file():
            raise SuhmoError(f"search space file {p} not found")
        client.log_artifact(rid, str(p), "search")
    set_runs_view(tracking_uri, experiment_id, objs, searched)
    client.set_experiment_tag(experiment_id, NOTE_TAG, tags[NOTE_TAG])  # shown above the runs table
    return rid



def close_run(tracking_uri: str, run_id: str, status: str, reason: str | None = None, *,
              stopped_by_scheduler: bool | None = None) -> None:
    """End ``run_id`` with ``status`` and the status tags (driver-side safety net).

    The ``outcome`` tag says in words what happened (a column of the runs page): completed,
    stopped early by the scheduler, interrupted, or failed with the reason.
    """
    status = check_status(status)
    client = mlflow_client(tracking_uri)
    stopped = status == "KILLED" if stopped_by_scheduler is None else stopped_by_scheduler
    if status == "FAILED":
        outcome = "failed: " + (one_line(reason, 200) if reason else "error")
    elif stopped:
        last = client.get_run(run_id).data.tags.get(LAST_STEP_TAG)
        outcome = "stopped early by the scheduler" + (f" at iteration {last}" if last else "")
    elif status == "KILLED":
        outcome = "interrupted" + (f": {one_line(reason, 200)}" if reason else "")
    else:
        outcome = "completed"
    set_tags(client, run_id, {"status": status, "stopped_by_scheduler": str(bool(stopped)).lower(),
                               "error_reason": one_line(reason) if reason else "", OUTCOME_TAG: outcome})
    client.set_terminated(run_id, status=status)


def finish_search_run(tracking_uri: str, parent_run_id: str, summary: dict | None = None,
                      status: str = "FINISHED", trial_states: Mapping[str, str] | None = None,
                      trial_errors: Mapping[str, str] | None = None) -> list[dict]:
    """Close the parent run: trial runs left open (:func:`close_open_trials`), the leaderboard
    and summary artifacts, summary metrics/tags, the runs view, the status. Returns the
    leaderboard rows (best first)."""
    status = check_status(status)
    client = mlflow_client(tracking_uri)
    parent = client.get_run(parent_run_id)
    exp_id = parent.info.experiment_id
    close_open_trials(tracking_uri, child_runs(client, exp_id, parent_run_id), status, trial_states, trial_errors)
    children = child_runs(client, exp_id, parent_run_id)
    objectives = search_objectives(parent, children)
    rows = leaderboard_rows(children, objectives)
    summary = dict(summary or {})
    metrics, tags = _summary_record(summary, children, status)
    if objectives and rows and rows[0].get(f"best_{objectives[0][0]}") is not None:
        metrics.append(Metric(f"best_{objectives[0][0]}", float(rows[0][f"best_{objectives[0][0]}"]), now_ms(), 0))
        tags["best_run_id"] = rows[0]["run_id"]
    client.log_batch(parent_run_id, metrics=metrics)
    set_tags(client, parent_run_id, tags)
    view = json.loads(client.get_experiment(exp_id).tags.get(VIEW_TAG_PREFIX + VIEW_KEY, "{}"))
    if objectives and not any(c.startswith("params.") for c in view.get("selectedColumns", [])):
        # no space file named the searched fields: show those that varied between the trials
        set_runs_view(tracking_uri, exp_id, objectives, varying_params(children))
    log_leaderboard(client, parent_run_id, parent.info.run_name, rows, objectives, summary)
    client.set_terminated(parent_run_id, status=status)
    return rows


def _summary_record(summary: dict, children: list, status: str) -> tuple[list, dict]:
    """The parent run's ``summary.*`` metrics (numbers, trial counts per status) and tags
    (flags and text) of ``summary``, with the search's ``status``."""
    metrics, tags = [], {"status": status}
    ts = now_ms()
    for k, v in flatten(summary).items():
        if isinstance(v, bool) or v is None:
            tags[f"summary.{k}"] = v
        elif isinstance(v, (int, float, np.integer, np.floating)):
            metrics.append(Metric(f"summary.{k}", float(v), ts, 0))
        elif isinstance(v, str):
            tags[f"summary.{k}"] = one_line(v, 5000)
    metrics.append(Metric("summary.trials", float(len(children)), ts, 0))
    for st in TRIAL_STATUSES:
        metrics.append(Metric(f"summary.trials_{st.lower()}",
                              float(sum(c.info.status == st for c in children)), ts, 0))
    return metrics, tags


def close_open_trials(tracking_uri: str, children: list, status: str, trial_states: Mapping[str, str] | None,
                      trial_errors: Mapping[str, str] | None) -> None:
    """Close the trial runs of a search that ends with ``status`` as the trials would have.

    Children still RUNNING belong to trial processes that ended without closing their run (Ray
    may tear a worker down right after its final report, or kill it). They are closed by the
    state the driver read from Tune (``trial_states``, trial id -> finished | stopped | error |
    ...): finished -> FINISHED, error -> FAILED with ``trial_errors[id]``. A trial stopped by
    the scheduler (ASHA) is a normal outcome of the search, not a failure: its run ends
    FINISHED tagged ``stopped_by_scheduler=true`` and ``outcome``, also when the trial had
    closed it KILLED itself (inside the trial a scheduler stop and an interrupted search look
    the same). A trial without a known state counts as finished when its last evaluation
    reached its iteration budget; any other is closed KILLED with the reason, so no run of a
    finished search stays RUNNING.
    """
    states, errors = dict(trial_states or {}), dict(trial_errors or {})
    for child in children:
        run_id, tid = child.info.run_id, child.data.tags.get("trial_id")
        if child.info.status == "KILLED" and states.get(tid) == "stopped":
            close_run(tracking_uri, run_id, "FINISHED", child.data.tags.get("error_reason") or None,
                      stopped_by_scheduler=True)
            continue
        if child.info.status not in ("RUNNING", "SCHEDULED"):
            continue
        state = states.get(tid) or _state_from_run(child)
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


def _state_from_run(child) -> str | None:
    """``finished`` when the run's last evaluation reached its iteration budget, else None."""
    last = child.data.tags.get(LAST_STEP_TAG)
    budget = child.data.params.get("train.iterations")
    if last is not None and budget is not None and int(last) >= int(budget):
        return "finished"
    return None
