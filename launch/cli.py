"""``suhmo-search``: hyperparameter searches of SUHMo with Ray Tune + Optuna, tracked in MLflow.

    suhmo-search run                      # the demo search on the embedded synthetic data
    suhmo-search run --space rnn --num-samples 32 --address auto
    suhmo-search validate search_spaces/transformer.yaml
    suhmo-search status NAME ; suhmo-search resume NAME ; suhmo-search ui
    suhmo-search sync NAME                # log what a tracking outage left waiting
    suhmo-search repeat NAME --top 3 --seeds 3 ; suhmo-search results NAME   # seeds x repeats
"""

from __future__ import annotations

import sys
from typing import Optional

import click

from suhmo.cli import LazyGroup, run_cli

_EXTERNAL = {"ui": "tracking.cli:ui"}  # the MLflow UI lives with the tracking code


@click.group(cls=LazyGroup, table=_EXTERNAL, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Search SUHMo hyperparameters with Optuna samplers under Ray Tune, across a Ray cluster."""


def _example_block(space, seed: int) -> list[str]:
    """Resolve sampled points with make_config: a bad value or combination fails here."""
    from suhmo.config import Config, ConfigError

    defaults = Config().flat()
    example = None
    for k in range(16):  # several random draws so that conditional branches get exercised
        sampled = space.sample_example(seed=seed + k)
        try:
            cfg = space.trial_config(sampled)
        except ConfigError as e:
            shown = ", ".join(f"{key}={val!r}" for key, val in sampled.items() if key != "train.seed")
            where = space.path or space.name
            raise ConfigError(f"{where}: a sampled trial config is invalid ({shown}): {e}") from None
        if example is None:
            example = (sampled, cfg)
    sampled, cfg = example
    lines = ["example trial config (preset, base values, one sampled point; validated):"]
    for key, value in cfg.flat().items():
        mark = "searched" if key in sampled else ("fixed" if key in space.base else
                                                  "preset" if value != defaults[key] else None)
        if mark:
            lines.append(f"  {key:<24} {value!r:<28} {mark}")
    lines.append("  (every other field keeps its paper default; checked 16 sampled points)")
    return lines


@cli.command()
@click.argument("file", type=str)
@click.option("--seed", type=int, default=None, help="Sampler seed of the example (default: the space's).")
def validate(file: str, seed: Optional[int]) -> None:
    """Check a search-space FILE (or a name under search_spaces/) and print it resolved."""
    from launch.space import load_space

    space = load_space(file)
    click.echo(space.describe())
    click.echo("")
    for line in _example_block(space, space.seed if seed is None else seed):
        click.echo(line)
    click.echo("")
    click.echo("ok")


def _gpus(value: str) -> float | str:
    from suhmo.utils import SuhmoError

    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise SuhmoError(f"--gpus-per-trial {value!r}: use auto or a number such as 0.25") from None


@cli.command()
@click.option("--space", "space_name", default="demo", show_default=True,
              help="Search space: a name under search_spaces/ or a YAML path.")
@click.option("--num-samples", type=click.IntRange(min=1), default=None, help="Trials (default: the space's budget).")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None,
              help="Trials running at once (default: the space's budget).")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--gpus-per-trial", default="auto", show_default=True,
              help="GPUs per trial, fractions allowed (0.25 = four trials per GPU); auto = share the "
                   "cluster's GPUs between the concurrent trials, 0 without GPUs.")
@click.option("--scheduler", type=click.Choice(["asha", "fifo"]), default=None,
              help="Trial scheduler (default: the space's).")
@click.option("--grace-period", type=click.IntRange(min=1), default=None,
              help="ASHA: evaluations before a trial can be stopped (default: the space's).")
@click.option("--reduction-factor", type=click.FloatRange(min=1, min_open=True), default=None,
              help="ASHA: keep 1/reduction_factor of the trials at each rung (default: the space's).")
@click.option("--metric", default=None, help="Objective metric (default: the space's), e.g. fd_clip40.")
@click.option("--mode", type=click.Choice(["min", "max"]), default=None, help="With --metric.")
@click.option("--objectives", default=None, help="Several objectives, e.g. fd_clip40:min,apd:max (Pareto set).")
@click.option("--time-budget", default=None, help="Stop starting/running trials after this long, e.g. 10m, 2h.")
@click.option("--address", default=None, help="Ray cluster to use: auto or HOST:PORT (default: a local Ray).")
@click.option("--experiment", default=None, help="Experiment name (default: <space>-<date>-<time>).")
@click.option("--storage", default=None, help="Folder of the Tune experiments (default: $SUHMO_HOME/search).")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI (default: sqlite under $SUHMO_HOME); 'none' = no MLflow.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Study seed: seeds the sampler and derives every trial's train.seed (default: the space's).")
@click.option("--dry-run", is_flag=True, help="Validate and print the resolved space and plan; start nothing.")
def run(space_name: str, num_samples, max_concurrent, cpus_per_trial, gpus_per_trial, scheduler, grace_period,
        reduction_factor, metric, mode, objectives, time_budget, address, experiment, storage, tracking_uri,
        seed, dry_run) -> None:
    """Run a search (with no options: the ~5-minute demo on synthetic data)."""
    from launch.leaderboard import render_report
    from launch.plan import make_plan
    from launch.runner import run_search
    from launch.space import check_metric_mode, format_duration, load_space, parse_duration, parse_objectives
    from suhmo.utils import SuhmoError

    space = load_space(space_name)
    if objectives and (metric or mode):
        raise SuhmoError("give either --objectives or --metric/--mode, not both")
    if mode and not metric:
        raise SuhmoError("--mode needs --metric")
    objs = parse_objectives(objectives) if objectives else [check_metric_mode(metric, mode)] if metric else None
    if tracking_uri is None:
        import tracking

        tracking_uri = tracking.default_tracking_uri()
    elif tracking_uri.lower() == "none":
        tracking_uri = None
    plan = make_plan(space, experiment=experiment, storage=storage, num_samples=num_samples,
                     max_concurrent=max_concurrent, cpus_per_trial=cpus_per_trial,
                     gpus_per_trial=_gpus(gpus_per_trial), scheduler=scheduler, grace_period=grace_period,
                     reduction_factor=reduction_factor, objectives=objs,
                     time_budget_s=parse_duration(time_budget, "--time-budget"), address=address,
                     tracking_uri=tracking_uri, seed=seed)
    example = _example_block(space, plan.seed)
    if dry_run:
        click.echo(space.describe())
        click.echo("")
        click.echo("\n".join(example))
        click.echo("")
        sch = plan.scheduler
        click.echo(f"experiment {plan.experiment}  ->  {plan.exp_dir}")
        click.echo(f"trials     {plan.num_samples}, {plan.max_concurrent} at a time, {plan.cpus_per_trial:g} CPU "
                   f"and {plan.gpus_per_trial} GPU each; {sch['type']}"
                   + (f" (grace {sch['grace_period']}, reduction {sch['reduction_factor']:g})"
                      if sch["type"] == "asha" else "")
                   + f"; objectives {', '.join(f'{m}:{md}' for m, md in plan.objectives)}"
                   + (f"; time budget {format_duration(plan.time_budget_s)}" if plan.time_budget_s else ""))
        click.echo(f"ray        {plan.address or 'local instance'}")
        click.echo(f"mlflow     {plan.tracking_uri or 'off'}")
        click.echo("dry run: nothing started")
        return
    cli_options = {"space": space_name, "num_samples": plan.num_samples, "max_concurrent": plan.max_concurrent,
                   "cpus_per_trial": plan.cpus_per_trial, "gpus_per_trial": plan.gpus_per_trial,
                   "scheduler": plan.scheduler, "objectives": plan.objectives,
                   "time_budget_s": plan.time_budget_s, "address": plan.address, "storage": plan.storage,
                   "experiment": plan.experiment}
    from launch.supervise import note_experiment

    note_experiment(plan.experiment)
    outcome = _driver(lambda: run_search(plan, echo=click.echo, cli_options=cli_options), plan.experiment,
                      plan.exp_dir)
    render_report(outcome, echo=click.echo)
    _fail_without_results(outcome)


def _fail_without_results(outcome) -> None:
    """A search in which no trial finished (or was stopped early by the scheduler, a normal
    end) ends with one ``Error:`` line and a non-zero exit, not as a success."""
    from launch.plan import storage_opt
    from suhmo.utils import SuhmoError

    rows = outcome.rows
    if outcome.interrupted or any(r.state in ("finished", "stopped") for r in rows):
        return
    if outcome.budget_hit and any(r.evaluations > 0 and r.state != "error" for r in rows):
        return  # the time budget ended trials that had evaluated: results, as the report says
    plan = outcome.plan
    errored = sum(r.state == "error" for r in rows)
    raise SuhmoError(f"search {plan.experiment}: no trial finished ({len(rows)} of {plan.num_samples} started, "
                     f"{errored} errored; reasons above); after fixing the cause, `suhmo-search resume "
                     f"{plan.experiment}{storage_opt(plan)}` retries them")


def _driver(call, experiment: str, exp_dir):
    """Run a search driver: any unexpected failure ends in one line plus the resume command
    (Ray's errors arrive chained several deep; the user needs the cause and what to do)."""
    from launch.plan import latest_state_file
    from launch.runner import error_cause
    from suhmo.config import ConfigError
    from suhmo.utils import SuhmoError

    try:
        return call()
    except (SuhmoError, ConfigError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001
        if latest_state_file(exp_dir) is not None:
            raise SuhmoError(f"search {experiment} failed: {error_cause(e)}; continue it with: "
                             f"suhmo-search resume {experiment}") from None
        raise SuhmoError(f"search {experiment} failed before it started: {error_cause(e)}") from None


@cli.command()
@click.argument("experiment")
@click.option("--storage", default=None, help="Folder of the Tune experiments (default: $SUHMO_HOME/search).")
@click.option("--address", default=None, help="Ray cluster to use (default: the one it ran on, else local).")
@click.option("--retry-errored/--keep-errored", default=True, show_default=True,
              help="Re-run errored trials from their last checkpoint, or leave them errored.")
def resume(experiment: str, storage, address, retry_errored: bool) -> None:
    """Continue an interrupted search: same trials, Optuna state restored, the rest of the budget."""
    from launch.leaderboard import render_report
    from launch.plan import find_experiment
    from launch.runner import resume_search

    from launch.supervise import note_experiment

    exp_dir = find_experiment(experiment, storage)
    note_experiment(exp_dir.name)
    outcome = _driver(lambda: resume_search(exp_dir, address=address, retry_errored=retry_errored,
                                            echo=click.echo), exp_dir.name, exp_dir)
    render_report(outcome, echo=click.echo)
    _fail_without_results(outcome)


@cli.command()
@click.argument("experiment")
@click.option("--storage", default=None, help="Folder of the Tune experiments (default: $SUHMO_HOME/search).")
def status(experiment: str, storage) -> None:
    """Table of an experiment's trials: state, iterations, best metric, error reason (no running Ray)."""
    from launch.leaderboard import format_table, param_columns, rank_rows, read_trials, summary_counts
    from launch.plan import SearchPlan, find_experiment, storage_opt

    exp_dir = find_experiment(experiment, storage)
    plan = SearchPlan.load(exp_dir)
    space = plan.resolved_space()
    rows = rank_rows(read_trials(exp_dir, plan.objectives, space.iterations), plan.objectives)
    counts = summary_counts(rows)
    click.echo(f"{plan.experiment}  ({exp_dir})")
    click.echo(f"space {plan.space_name}, objectives "
               + ", ".join(f"{m}:{mode}" for m, mode in plan.objectives)
               + f", {len(rows)} of {plan.num_samples} trials: "
               + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none started"))
    if rows:
        click.echo(format_table(rows, plan.objectives, param_columns(space)))
    click.echo(_tracking_status(plan))
    open_ = sum(counts.get(k, 0) for k in ("running", "pending", "interrupted"))
    if open_ or len(rows) < plan.num_samples:
        click.echo(f"unfinished: `suhmo-search resume {plan.experiment}{storage_opt(plan)}` continues it "
                   "(if it is not running right now)")


def _tracking_status(plan) -> str:
    """``tracking: ...`` line of `status`: where the trials log, and what waits in their outboxes."""
    from launch.plan import storage_opt
    from tracking.outbox import summary

    s = summary(plan.exp_dir, plan.tracking_uri, plan.parent_run_id)
    sync = f"`suhmo-search sync {plan.experiment}{storage_opt(plan)}`"
    if not plan.tracking_uri:
        return (f"tracking: off (--tracking-uri none); {s['waiting']} record(s) of {s['trials']} trial(s) kept: "
                f"{sync} --tracking-uri URI logs them")
    if not s["waiting"]:
        return f"tracking: every record of {s['trials']} trial(s) logged to {plan.tracking_uri}"
    state = (f"unreachable at the last attempt ({s['error']})" if s["unreachable"] else "being logged")
    return (f"tracking: {s['waiting']} record(s) of {s['trials']} trial(s) wait for {plan.tracking_uri}, {state}; "
            f"the trials replay them, or {sync} once the search has ended")


@cli.command()
@click.argument("experiment")
@click.option("--storage", default=None, help="Folder of the Tune experiments (default: $SUHMO_HOME/search).")
@click.option("--tracking-uri", default=None,
              help="MLflow store to log into (default: the search's; for a search run with "
                   "--tracking-uri none, the default sqlite store).")
def sync(experiment: str, storage, tracking_uri) -> None:
    """Log what a search's trials recorded into MLflow: the records a tracking outage left
    waiting, or a whole search run without tracking. Replays are idempotent: nothing is logged twice."""
    from launch.plan import SearchPlan, find_experiment
    from launch.sync import sync_search

    exp_dir = find_experiment(experiment, storage)
    plan = SearchPlan.load(exp_dir)
    for line in sync_search(plan, tracking_uri):
        click.echo(line)


@cli.command()
@click.argument("experiment")
@click.option("--metric", default=None, help="Objective to explain (default: the search's first objective).")
@click.option("--evaluator", type=click.Choice(["fanova", "ped", "mdi"]), default="fanova", show_default=True,
              help="Optuna's importance evaluator: fANOVA, PED-ANOVA or mean decrease in impurity.")
@click.option("--storage", default=None, help="Folder of the Tune experiments (default: $SUHMO_HOME/search).")
def importances(experiment: str, metric, evaluator: str, storage) -> None:
    """Optuna's parameter importances of a search's trials so far (no running Ray)."""
    from launch.importance import default_metric, format_importances, param_importances
    from launch.leaderboard import read_trials
    from launch.plan import SearchPlan, find_experiment

    exp_dir = find_experiment(experiment, storage)
    plan = SearchPlan.load(exp_dir)
    space = plan.resolved_space()
    m, mode = default_metric(plan.objectives, metric)
    try:
        imp, used = param_importances(read_trials(exp_dir, plan.objectives, space.iterations), space, m, mode,
                                      evaluator=evaluator, seed=space.seed)
    except ValueError as e:
        raise click.ClickException(f"{plan.experiment}: {e}") from None
    for line in format_importances(imp, used, m, evaluator):
        click.echo(line)


@cli.command()
@click.argument("experiment")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True,
              help="Repeat the K best configurations (best objective at a checkpoint, as best-export).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Fresh seeds per configuration (derived from the study seed).")
@click.option("--frames", default="40,80", show_default=True,
              help="Score each repeat at these numbers of generated frames (the last 40 are scored).")
@click.option("--storage", default=None, help="Folder of the Tune experiments (default: $SUHMO_HOME/search).")
@click.option("--tracking-uri", default=None,
              help="MLflow store of the search (default: the one it logged to); 'none' = no MLflow.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None,
              help="Trials running at once (default: the search's).")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--address", default=None, help="Ray cluster to use: auto or HOST:PORT (default: a local Ray).")
@click.option("--name", default=None, help="Name of this repeat (default: <experiment>-repeat-<date>-<time>).")
def repeat(experiment: str, top: int, seeds: int, frames: str, storage, tracking_uri, max_concurrent,
           cpus_per_trial: float, address, name) -> None:
    """Re-train the TOP configurations of a finished search with SEEDS fresh seeds each; print mean ± std."""
    from launch.repeat import parse_frames, plan_repeat, render_summary, run_repeat
    from launch.plan import SearchPlan, find_experiment

    exp_dir = find_experiment(experiment, storage)
    if tracking_uri is None:
        tracking_uri = SearchPlan.load(exp_dir).tracking_uri
    elif tracking_uri.lower() == "none":
        tracking_uri = None
    rp = plan_repeat(exp_dir, top=top, seeds=seeds, frames=parse_frames(frames), tracking_uri=tracking_uri,
                     storage=storage, max_concurrent=max_concurrent, name=name)
    summary = run_repeat(rp, address=address, cpus_per_trial=cpus_per_trial, echo=click.echo)
    render_summary(summary, echo=click.echo)
    if rp.tracking_uri:
        click.echo("")
        from suhmo import hints

        click.echo(f"next: {hints.suhmo_search()} results {rp.search}    # Table-1 layout from MLflow")
        click.echo(f"      {hints.suhmo()} best-export --experiment {rp.search} --mean-over-seeds --out best-model")


@cli.command()
@click.argument("experiment")
@click.option("--metrics", default="fd_frame,fd_clip40,fd_motion,apd,drift,motion_energy", show_default=True,
              help="Metric columns (each at 40 and 80 generated frames: keys <metric>_g40, <metric>_g80).")
@click.option("--frames", default="40,80", show_default=True, help="Generated-frame columns per metric.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option("--group-by", type=click.Choice(["method", "config_key"]), default="method", show_default=True,
              help="Rows: the runs' `method` tag (else their config key), or the config key.")
@click.option("--include-search-trials", is_flag=True,
              help="Also use the search's own trials (default: only repeat runs when there are any).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite under $SUHMO_HOME).")
def results(experiment: str, metrics: str, frames: str, fmt: str, group_by: str, include_search_trials: bool,
            tracking_uri) -> None:
    """Table of a search's runs in the layout of the paper's Table 1 (mean ± std (n) over seeds)."""
    import json

    import tracking
    from launch.repeat import parse_frames
    from tracking.results import format_markdown, results_table

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    frame_list = parse_frames(frames)
    table = results_table(tracking_uri or tracking.default_tracking_uri(), experiment, metrics=names,
                          frames=frame_list, group_by=group_by, include_search_trials=include_search_trials)
    if fmt == "json":
        click.echo(json.dumps(table, indent=2, default=str))
        return
    click.echo(f"{table['experiment']} (search run {table['parent_run_name']}; {table['runs_used']}; "
               "cells: mean ± std (n seeds), @40/@80 = last 40 of 40/80 generated frames)")
    click.echo("")
    click.echo(format_markdown(table["rows"], names, frame_list, row_title=group_by).rstrip())


def main(argv: Optional[list[str]] = None) -> None:
    from launch import supervise

    args = sys.argv[1:] if argv is None else list(argv)
    if supervise.wanted(args):  # run / resume: one line plus the resume command even if Ray kills the driver
        sys.exit(supervise.supervise(args))
    sys.exit(run_cli(cli, argv))


if __name__ == "__main__":
    main()
