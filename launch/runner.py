"""Run and resume a search: one ``ray.tune.Tuner``.

``run_search(plan)`` builds the Tuner: the function trainable
:func:`launch.trainable.suhmo_trial` wrapped with ``tune.with_resources`` (fractional GPUs
allowed), ``OptunaSearch`` with a seeded sampler and the space's define-by-run function,
ASHA (or FIFO) on the first objective reported at every evaluation, ``reuse_actors=True``,
``FailureConfig(max_failures=0)`` locally (an errored trial is recorded and the search goes on)
and ``CLUSTER_MAX_FAILURES`` on a cluster (a trial whose node is lost restarts from its last
checkpoint elsewhere). A time budget is :class:`launch.budget.TimeCap` (never stops before a
first evaluation). Ray itself is set up by :mod:`launch.rayenv` (a local instance listens on
127.0.0.1 only), the plan is :mod:`launch.plan`, the trials are read back and shown by
:mod:`launch.leaderboard`; MLflow (the parent run of the search) through :mod:`tracking`.

Ray, Optuna and tracking (MLflow) are imported inside the functions that use them: Ray reads
part of the environment :func:`launch.rayenv.quiet_ray` sets when it is imported, and a
search without tracking never loads MLflow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from launch.leaderboard import SearchOutcome, read_trials, summary_counts, trial_name
from launch.plan import SearchPlan, latest_state_file, storage_opt
from launch.rayenv import prepare_ray, start_ray, trial_resources
from launch.samplers import build_sampler
from launch.space import SEED_ATTR, FixedPoint, SearchSpace
from launch.trainable import META_KEY, STOP_FILE, suhmo_trial
from suhmo.utils import SuhmoError


def _searcher(space: SearchSpace, plan: SearchPlan, fixed: Optional[list[FixedPoint]] = None):
    """Ray's ``OptunaSearch`` on the space's define-by-run function, with a seeded sampler.

    ``fixed`` points are enqueued into the study (``Study.enqueue_trial``) and asked first, in
    order: their values and their ``train.seed`` (a user attribute that the space returns in
    place of the trial-number seed) are the trials' configs."""
    from ray.tune.search.optuna import OptunaSearch

    sampler = build_sampler(space.sampler, plan.seed)
    metrics = [m for m, _ in plan.objectives]
    modes = [mode for _, mode in plan.objectives]
    multi = len(metrics) > 1
    searcher_space = space.define_by_run()
    searcher_space.study_seed = plan.seed
    study = _fixed_study(plan, sampler, fixed) if fixed else {}
    return OptunaSearch(space=searcher_space, metric=metrics if multi else metrics[0],
                        mode=modes if multi else modes[0], sampler=sampler, **study)


def _fixed_study(plan: SearchPlan, sampler, fixed: list[FixedPoint]) -> dict:
    """An in-memory Optuna study holding ``fixed`` as waiting trials: the ``storage`` and
    ``study_name`` that ``OptunaSearch`` loads it by."""
    import optuna

    storage, name = optuna.storages.InMemoryStorage(), plan.experiment
    directions = ["minimize" if mode == "min" else "maximize" for _, mode in plan.objectives]
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, directions=directions)
    for point in fixed:
        study.enqueue_trial(point.params, user_attrs={SEED_ATTR: int(point.seed)})
    return {"storage": storage, "study_name": name}


def _scheduler(space: SearchSpace, plan: SearchPlan):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sch = plan.scheduler
    if sch["type"] == "fifo":
        return FIFOScheduler()
    metric, mode = plan.objectives[0]
    return ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode,
                         max_t=space.evaluations, grace_period=int(sch["grace_period"]),
                         reduction_factor=float(sch["reduction_factor"]))


def _meta(space: SearchSpace, plan: SearchPlan, extra: Optional[dict] = None) -> dict:
    return {**(extra or {}), "preset": space.preset, "base": dict(space.base), "objectives": plan.objectives,
            "study_seed": plan.seed, "threads": max(1, int(plan.cpus_per_trial)),
            "tracking_uri": plan.tracking_uri, "experiment_id": plan.experiment_id,
            "parent_run_id": plan.parent_run_id, "experiment": plan.experiment, "storage": plan.storage}


CLUSTER_MAX_FAILURES = 2  # restarts of a trial after its worker or node died (Tune's FailureConfig)


def build_tuner(plan: SearchPlan, space: SearchSpace, resources: dict, callbacks: list,
                fixed: Optional[list[FixedPoint]] = None, meta: Optional[dict] = None):
    """The search's Tuner. ``fixed``: points the study asks first (``repeat``); ``meta``: more
    search constants for every trial."""
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner

    from launch.budget import TimeCap

    trainable = tune.with_resources(suhmo_trial, resources)
    cap = TimeCap(plan.time_budget_s, stop_file=plan.exp_dir / STOP_FILE) if plan.time_budget_s else None
    tune_config = TuneConfig(
        search_alg=_searcher(space, plan, fixed), scheduler=_scheduler(space, plan),
        num_samples=plan.num_samples, max_concurrent_trials=plan.max_concurrent,
        reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_name)
    run_config = RunConfig(
        name=plan.experiment, storage_path=plan.storage, verbose=0,
        callbacks=callbacks + ([cap] if cap is not None else []), stop=cap,
        checkpoint_config=CheckpointConfig(num_to_keep=2),
        # on a cluster a trial whose node is lost restarts from its last checkpoint on another
        # node; locally a failure is recorded (an errored trial is retried by `resume`)
        failure_config=FailureConfig(max_failures=CLUSTER_MAX_FAILURES if plan.address else 0, fail_fast=False))
    return Tuner(trainable, param_space={META_KEY: _meta(space, plan, meta)}, tune_config=tune_config,
                 run_config=run_config)


def _make_progress_callback(objectives: list[list[str]], echo: Callable[[str], None], budget: Optional[int] = None,
                            tracking: Optional[tuple] = None):
    from launch.progress import Progress

    return Progress(objectives, echo, budget=budget, tracking=tracking)


def _setup_tracking(plan: SearchPlan, cli_options: dict, echo) -> None:
    if not plan.tracking_uri:
        return
    import tracking

    plan.experiment_id = tracking.setup_experiment(plan.tracking_uri, plan.experiment)
    plan.parent_run_id = tracking.start_search_run(
        plan.tracking_uri, plan.experiment_id, space_file=plan.space_path, cli_options=cli_options,
        study_seed=plan.seed, run_name=plan.experiment, objectives=plan.objectives)


# how long the driver replays the trials' outboxes at the end of a search (the rest waits for
# `suhmo-search sync`)
FINAL_REPLAY_S = 300.0


def _finish_tracking(plan: SearchPlan, outcome: SearchOutcome, status: str, echo) -> None:
    if not plan.tracking_uri or not plan.parent_run_id:
        return
    import tracking
    from tracking.outbox import replay_search

    # what the trials recorded and have not replayed yet (the server was down, or a trial ended first)
    left = replay_search(plan.exp_dir, plan.tracking_uri, plan.experiment_id, plan.parent_run_id,
                         keep_files=False, budget_s=FINAL_REPLAY_S)
    if left["waiting"]:
        echo(f"tracking: {left['waiting']} record(s) of {left['trials']} trial(s) could not be logged to "
             f"{plan.tracking_uri} ({left['errors'][0] if left['errors'] else 'time is up'}); they are kept: "
             f"`suhmo-search sync {plan.experiment}{storage_opt(plan)}` logs them later")
        return
    counts = summary_counts(outcome.rows)
    summary = {"wall_s": round(outcome.wall_s, 1), "num_samples": plan.num_samples,
               "interrupted": outcome.interrupted, "storage": str(plan.exp_dir), **{f"n_{k}": v for k, v in counts.items()}}
    try:
        tracking.finish_search_run(plan.tracking_uri, plan.parent_run_id, summary, status=status,
                                   trial_states={r.trial_id: r.state for r in outcome.rows},
                                   trial_errors={r.trial_id: r.error for r in outcome.rows if r.error})
    except Exception as e:  # noqa: BLE001 - the search itself is done; say what failed
        echo(f"warning: could not close the MLflow search run: {e}")


def run_search(plan: SearchPlan, *, echo: Callable[[str], None] = print, cli_options: Optional[dict] = None,
               shutdown: bool = True) -> SearchOutcome:
    """Run a new search; returns the trial rows read back from the experiment folder."""
    space = plan.resolved_space()
    if latest_state_file(plan.exp_dir) is not None:
        raise SuhmoError(f"experiment {plan.experiment!r} already exists in {plan.storage}; "
                         f"`suhmo-search resume {plan.experiment}` continues it, or pass another --experiment")
    t0 = time.time()
    cluster = start_ray(plan.address, echo)
    try:
        resources = trial_resources(plan, cluster)
        _setup_tracking(plan, cli_options or {}, echo)
        plan.exp_dir.mkdir(parents=True, exist_ok=True)
        plan.save()
        progress = _make_progress_callback(plan.objectives, echo, plan.num_samples,
                                           (str(plan.exp_dir), plan.tracking_uri, plan.parent_run_id))
        tuner = build_tuner(plan, space, resources, [progress])
        echo(f"search {plan.experiment}: {plan.num_samples} trials, {plan.max_concurrent} at a time, "
             f"{_res_text(resources)} per trial, {plan.scheduler['type']} on "
             + ", ".join(f"{m}:{mode}" for m, mode in plan.objectives) + f", study seed {plan.seed}")
        return _fit_and_collect(tuner, plan, space, t0, progress, echo)
    finally:
        if shutdown:
            import ray

            ray.shutdown()


def _res_text(resources: dict) -> str:
    return f"{resources['cpu']:g} CPU" + (f" + {resources['gpu']:g} GPU" if resources.get("gpu") else "")


def _fit_and_collect(tuner, plan: SearchPlan, space: SearchSpace, t0: float, progress, echo) -> SearchOutcome:
    status = "FAILED"
    (plan.exp_dir / STOP_FILE).unlink(missing_ok=True)  # a resumed search that had hit its time budget
    outcome = SearchOutcome(plan, [], 0.0, False, False, progress)
    try:
        try:
            tuner.fit()
        except (SuhmoError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - the driver failed (Ray died, a node or worker was killed...)
            raise SuhmoError(f"search {plan.experiment} failed: {error_cause(e)}; the state saved so far is kept: "
                             f"suhmo-search resume {plan.experiment}{storage_opt(plan)}") from None
        rows = read_trials(plan.exp_dir, plan.objectives, space.iterations)
        wall = time.time() - t0
        unfinished = [r for r in rows if r.state in ("running", "pending", "interrupted")]
        budget_hit = bool(plan.time_budget_s) and wall >= plan.time_budget_s * 0.98
        interrupted = (bool(unfinished) or len(rows) < plan.num_samples) and not budget_hit
        outcome = SearchOutcome(plan, rows, wall, interrupted, budget_hit, progress)
        status = "KILLED" if interrupted else "FINISHED"
        return outcome
    finally:
        if not outcome.rows:
            outcome.rows = read_trials(plan.exp_dir, plan.objectives, space.iterations)
            outcome.wall_s = time.time() - t0
        _finish_tracking(plan, outcome, status, echo)


def error_cause(e: BaseException) -> str:
    """The innermost cause of a chained exception, on one line (Ray wraps errors several deep)."""
    seen = set()
    while (e.__cause__ or e.__context__) is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def resume_search(exp_dir: Path, *, address: Optional[str] = None, retry_errored: bool = True,
                  echo: Callable[[str], None] = print, shutdown: bool = True) -> SearchOutcome:
    """Continue an interrupted search: Tuner.restore (Optuna state included)."""
    plan = SearchPlan.load(exp_dir)
    if address is not None:
        plan.address = address
    space = plan.resolved_space()
    prepare_ray(plan.address)  # before ray is imported: a local instance stays on 127.0.0.1
    from ray import tune
    from ray.tune import Tuner

    if not Tuner.can_restore(str(plan.exp_dir)):
        raise SuhmoError(f"{plan.exp_dir}: no saved Tune state to resume (did the search start?)")
    t0 = time.time()
    cluster = start_ray(plan.address, echo)
    try:
        resources = trial_resources(plan, cluster)
        if plan.tracking_uri and plan.parent_run_id:
            import tracking

            tracking.start_search_run(plan.tracking_uri, plan.experiment_id, space_file=None, cli_options={},
                                      study_seed=plan.seed, run_name=plan.experiment,
                                      objectives=plan.objectives, run_id=plan.parent_run_id)
        before = read_trials(plan.exp_dir, plan.objectives, space.iterations)
        done = sum(r.state in ("finished", "stopped", "error") for r in before)
        echo(f"resume {plan.experiment}: {done} of {plan.num_samples} trials done, "
             f"{len(before) - done} to continue, {max(0, plan.num_samples - len(before))} not started")
        tuner = Tuner.restore(str(plan.exp_dir), trainable=tune.with_resources(suhmo_trial, resources),
                              resume_unfinished=True, resume_errored=retry_errored, restart_errored=False)
        progress = None
        return _fit_and_collect(tuner, plan, space, t0, progress, echo)
    finally:
        if shutdown:
            import ray

            ray.shutdown()
