"""How the MLflow UI shows a search: the experiment's kind, its primary metric and a saved view of
the trials in the runs table, the address that opens it, and the search's description."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from tracking.store import KIND_TAG, OUTCOME_TAG, mlflow_client, objective_pairs

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


def space_params(space_file: str | Path | None) -> list[str]:
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


def varying_params(runs: list) -> list[str]:
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
    objs = objective_pairs(objectives)
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

def search_note(name: str, space_file, objs, searched: Sequence[str], cli_options: dict | None) -> str:
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
