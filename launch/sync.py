"""``suhmo-search sync NAME``: log a search's trial outboxes into MLflow afterwards.

Two cases: records that a tracking outage left waiting (the search's own store and parent run),
and a search run with ``--tracking-uri none`` (or synced into another store): the experiment
and the parent run are created there on the first sync and remembered in
``<exp>/tracking-sync.json``, so that a second sync continues the same runs.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from launch.leaderboard import read_trials, summary_counts
from launch.plan import SearchPlan, storage_opt
from suhmo.utils import SuhmoError, atomic_write_text

TARGETS = "tracking-sync.json"


def _targets(plan: SearchPlan) -> dict:
    try:
        data = json.loads((plan.exp_dir / TARGETS).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _parent(plan: SearchPlan, uri: str) -> tuple[str, str]:
    """(experiment id, parent run id) of the search in store ``uri``, created when missing."""
    import tracking

    if uri == plan.tracking_uri and plan.parent_run_id:
        tracking.start_search_run(uri, plan.experiment_id, space_file=None, cli_options={}, study_seed=plan.seed,
                                  run_name=plan.experiment, objectives=plan.objectives, run_id=plan.parent_run_id)
        return plan.experiment_id, plan.parent_run_id
    targets = _targets(plan)
    known = targets.get(uri)
    if known:
        tracking.start_search_run(uri, known["experiment_id"], space_file=None, cli_options={}, study_seed=plan.seed,
                                  run_name=plan.experiment, objectives=plan.objectives, run_id=known["parent_run_id"])
        return known["experiment_id"], known["parent_run_id"]
    exp_id = tracking.setup_experiment(uri, plan.experiment)
    space_file = plan.space_path if plan.space_path and os.path.isfile(plan.space_path) else None
    options = {"space": plan.space_name, "num_samples": plan.num_samples, "objectives": plan.objectives,
               "experiment": plan.experiment, "synced_from": str(plan.exp_dir)}
    parent = tracking.start_search_run(uri, exp_id, space_file=space_file, cli_options=options,
                                       study_seed=plan.seed, run_name=plan.experiment, objectives=plan.objectives)
    targets[uri] = {"experiment_id": exp_id, "parent_run_id": parent}
    atomic_write_text(plan.exp_dir / TARGETS, json.dumps(targets, indent=2))
    return exp_id, parent


def sync_search(plan: SearchPlan, tracking_uri: Optional[str] = None) -> list[str]:
    """Replay every trial's outbox of ``plan`` into ``tracking_uri`` (default: the search's
    store, else the default sqlite store) and close the parent run; returns the lines to print.
    SuhmoError when records still wait (the store does not answer): run it again later."""
    import tracking
    from tracking.outbox import replay_search

    uri = tracking_uri or plan.tracking_uri or tracking.default_tracking_uri()
    try:
        exp_id, parent = _parent(plan, uri)
    except SuhmoError:
        raise
    except Exception as e:  # noqa: BLE001 - the store does not answer: nothing was changed
        raise SuhmoError(f"sync {plan.experiment}: cannot reach {uri} ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}); run it again once the store answers") from None
    res = replay_search(plan.exp_dir, uri, exp_id, parent, keep_files=uri != plan.tracking_uri, wait_s=60.0)
    if res["waiting"]:
        raise SuhmoError(f"sync {plan.experiment}: {res['waiting']} record(s) of {res['trials']} trial(s) could not "
                         f"be logged to {uri} ({res['errors'][0] if res['errors'] else 'no answer'}); they are kept: "
                         f"run `suhmo-search sync {plan.experiment}{storage_opt(plan)}` again")
    space = plan.resolved_space()
    rows = read_trials(plan.exp_dir, plan.objectives, space.iterations)
    counts = summary_counts(rows)
    unfinished = any(r.state in ("running", "pending", "interrupted") for r in rows) or len(rows) < plan.num_samples
    tracking.finish_search_run(uri, parent, {"num_samples": plan.num_samples, "storage": str(plan.exp_dir),
                                             "synced": True, **{f"n_{k}": v for k, v in counts.items()}},
                               status="KILLED" if unfinished else "FINISHED",
                               trial_states={r.trial_id: r.state for r in rows},
                               trial_errors={r.trial_id: r.error for r in rows if r.error})
    return [f"synced {plan.experiment} into {uri}: {res['trials']} trial(s), every record logged "
            f"(experiment {exp_id}, search run {parent})"]
