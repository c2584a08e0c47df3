"""Real Ray Tune + Optuna searches of tiny SUHMo models on the synthetic data (CPU).

One local Ray instance serves the whole module (started once, always shut down) and one
MLflow sqlite store is shared by its searches. Each search is a few tiny trials of a few
dozen iterations.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from launch.leaderboard import rank_rows, read_trials
from launch.plan import SearchPlan, make_plan
from launch.rayenv import start_ray
from launch.runner import run_search
from launch.space import OptunaSpace, parse_space

pytestmark = pytest.mark.slow

TINY_BASE = {"preset": "tiny", "train.iterations": 16, "train.eval_every": 4, "eval.samples": 16,
             "eval.frames": 40, "data.synth_clips": 8}


def tiny_space(params=None, **extra) -> dict:
    space = {
        "base": dict(TINY_BASE),
        "params": params or {
            "optim.lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
            "windows.family": {"type": "choice", "values": ["fixed", "texp"],
                               "when": {"texp": {"windows.texp_mean": {"type": "uniform", "low": 5.0, "high": 30.0}}}},
        },
        "objective": "fd_clip40:min",
        "scheduler": "fifo",
        "budget": {"num_samples": 3, "max_concurrent": 2},
        "sampler": {"type": "tpe", "n_startup_trials": 2},
        "seed": 0,
    }
    space.update(extra)
    return space


@pytest.fixture(scope="module")
def ray_session():
    import ray

    start_ray(None, print)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    return f"sqlite:///{(tmp_path_factory.mktemp('mlflow') / 'mlflow.db').as_posix()}"


def search(tmp_path, data: dict, name: str, tracking_uri=None, **plan_kw):
    space = parse_space(data, name=name)
    plan = make_plan(space, experiment=name, storage=str(tmp_path / "store"), tracking_uri=tracking_uri,
                     **plan_kw)
    lines: list[str] = []
    outcome = run_search(plan, echo=lines.append, shutdown=False)
    return outcome, lines


def searcher_study(exp_dir) -> optuna.Study:
    """The Optuna study inside Tune's latest searcher checkpoint."""
    files = sorted(exp_dir.glob("searcher-state-*.pkl"), key=lambda p: p.name)  # name = session start time
    assert files, f"no searcher state in {exp_dir}"
    with open(files[-1], "rb") as f:
        state = pickle.load(f)
    return state["_ot_study"] if isinstance(state, dict) else state[2]


def mlflow_children(tracking_uri, plan: SearchPlan):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    return client.search_runs([plan.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{plan.parent_run_id}'")


def test_three_trial_search_finishes_with_a_best_config(ray_session, tmp_path, tracking_uri):
    outcome, lines = search(tmp_path, tiny_space(), "three", tracking_uri=tracking_uri)
    rows = rank_rows(outcome.rows, outcome.plan.objectives)
    assert [r.state for r in rows] == ["finished"] * 3, [(r.state, r.error) for r in rows]
    assert all(r.step == 16 and r.evaluations == 4 for r in rows)
    best = rows[0]
    assert best.best["fd_clip40"][0] <= min(r.best["fd_clip40"][0] for r in rows)
    # per-trial seeds derived from the study seed, recorded in the trial config
    seeds = [r.seed for r in rows]
    assert len(set(seeds)) == 3 and all(isinstance(s, int) for s in seeds)
    assert any(" eval " in line for line in lines) and not outcome.interrupted
    # conditional parameter present exactly for texp trials
    for r in rows:
        assert ("windows.texp_mean" in r.config) == (r.config["windows.family"] == "texp")
    # the Optuna study saw all three trials
    study = searcher_study(outcome.plan.exp_dir)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    # MLflow: one FINISHED child per trial under the search's parent run, seeds logged
    runs = mlflow_children(tracking_uri, outcome.plan)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3
    assert sorted(int(r.data.params["seed"]) for r in runs) == sorted(seeds)
    assert all("best_fd_clip40" in r.data.metrics for r in runs)
    # the overhead of every trial, broken down by benchmarks/search.py: its parts add up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import search as bench

    summary = bench._summary(outcome.plan, outcome, rows)
    assert len(summary["overhead_by_trial"]) == 3 and summary["overhead_s_median"] is not None
    for b in summary["overhead_by_trial"]:
        assert b["worker"] in ("new", "reused") and b["trainer_init"] > 0 and b["config"] > 0
        assert sum(b[p] for p in bench.PARTS if p in b) == pytest.approx(b["overhead_s"], abs=0.01)
    assert summary["overhead_by_trial"][0]["worker"] == "new"


def test_gp_sampler_runs_a_search(ray_session, tmp_path):
    """sampler: gp is Optuna's GPSampler, seeded by the study; after one random trial it proposes."""
    data = tiny_space(sampler={"type": "gp", "n_startup_trials": 1}, budget={"num_samples": 3, "max_concurrent": 1})
    outcome, _ = search(tmp_path, data, "gp")
    rows = rank_rows(outcome.rows, outcome.plan.objectives)
    assert [r.state for r in rows] == ["finished"] * 3, [(r.state, r.error) for r in rows]
    study = searcher_study(outcome.plan.exp_dir)
    assert isinstance(study.sampler, optuna.samplers.GPSampler)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len({t.params["optim.lr_g"] for t in study.trials}) == 3


def test_asha_stops_a_trial_early(ray_session, tmp_path, tracking_uri):
    data = tiny_space(scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3},
                      budget={"num_samples": 5, "max_concurrent": 2})
    data["base"].update({"train.iterations": 24, "train.eval_every": 4})
    outcome, _ = search(tmp_path, data, "asha", tracking_uri=tracking_uri)
    states = [r.state for r in outcome.rows]
    assert len(states) == 5 and "error" not in states, [(r.state, r.error) for r in outcome.rows]
    stopped = [r for r in outcome.rows if r.state == "stopped"]
    assert stopped, states
    assert all(r.step < 24 for r in stopped)
    # total trainer iterations are below the FIFO budget of 5 x 24
    assert sum(r.step for r in outcome.rows) < 5 * 24
    runs = {r.data.tags["trial_id"]: r for r in mlflow_children(tracking_uri, outcome.plan)}
    # stopped by the scheduler is not a failure: FINISHED, said in the outcome tag
    assert all(runs[r.trial_id].info.status == "FINISHED" for r in stopped)
    assert all(runs[r.trial_id].data.tags["outcome"].startswith("stopped early by the scheduler") for r in stopped)
    # Optuna's importances of the finished search, from the CLI: the two parameters that every
    # trial has (windows.texp_mean is conditional), summing to 1
    from click.testing import CliRunner

    from launch.cli import cli

    res = CliRunner().invoke(cli, ["importances", "asha", "--storage", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "parameter importances for fd_clip40 (fanova, 5 trials; sums to 1):", res.output
    ranked = {ln.split()[0]: float(ln.split()[1]) for ln in lines[1:] if not ln.lstrip().startswith("(")}
    assert set(ranked) == {"optim.lr_g", "windows.family"} and abs(sum(ranked.values()) - 1) < 2e-3, res.output


def _seed_with_both(values_needed: set, space_data: dict, n: int) -> int:
    """A study seed whose first ``n`` random draws include every value in ``values_needed``.

    Ray's OptunaSearch asks the study once per trial, in order, so the same sampler
    reproduces the trials' values here.
    """
    space = parse_space(space_data, name="probe")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for seed in range(200):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        fn = OptunaSpace(space.params, seed)
        got = []
        for _ in range(n):
            t = study.ask()
            got.append(fn(t)["optim.lr_g"])
            study.tell(t, 0.0)
        if values_needed <= set(got) and got.count(1e10) == 1:
            return seed
    raise AssertionError("no seed found")


def test_diverging_trial_is_errored_and_the_search_goes_on(ray_session, tmp_path):
    data = tiny_space(params={"optim.lr_g": {"type": "choice", "values": [1e-4, 1e10]}}, sampler="random")
    data["seed"] = _seed_with_both({1e-4, 1e10}, data, 3)
    outcome, lines = search(tmp_path, data, "nan")
    by_lr = {}
    for r in outcome.rows:
        by_lr.setdefault(r.config["optim.lr_g"], []).append(r)
    bad = by_lr[1e10]
    assert len(bad) == 1 and bad[0].state == "error"
    assert "diverged" in bad[0].error and "\n" not in bad[0].error
    assert [r.state for r in by_lr[1e-4]] == ["finished"] * 2
    assert any("ERROR" in line and "diverged" in line for line in lines)


def test_multi_objective_search_reports_a_pareto_set(ray_session, tmp_path):
    from launch.leaderboard import pareto_set, render_report

    data = tiny_space(objectives=["fd_clip40:min", "apd:max"], budget={"num_samples": 3, "max_concurrent": 2})
    del data["objective"]
    data["base"].update({"train.iterations": 8})
    outcome, _ = search(tmp_path, data, "multi")
    assert all(r.state == "finished" for r in outcome.rows), [(r.state, r.error) for r in outcome.rows]
    study = searcher_study(outcome.plan.exp_dir)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert len(study.trials) == 3 and all(len(t.values) == 2 for t in study.trials)
    front = pareto_set(outcome.rows, outcome.plan.objectives)
    # our front (last evaluations) is Optuna's Pareto front of the same values
    optuna_front = {tuple(t.values) for t in study.best_trials}
    assert {(r.last["fd_clip40"], r.last["apd"]) for r in front} == optuna_front
    lines: list[str] = []
    render_report(outcome, echo=lines.append)
    assert any(line.startswith("Pareto set") for line in lines)


def test_search_trains_on_a_packed_dataset(ray_session, tmp_path):
    """data.path may name a packed folder: the trials map it (the same batches as its .npz)."""
    from suhmo.data import save_landmarks, synthesize
    from suhmo.data.packed import pack_npz

    ls = synthesize(8, 3.0, 0)
    save_landmarks(tmp_path / "set.npz", ls)
    pack_npz([tmp_path / "set.npz"], tmp_path / "packed", progress=False)
    data = tiny_space(base={"data.path": str(tmp_path / "packed")}, budget={"num_samples": 2, "max_concurrent": 2})
    outcome, _ = search(tmp_path, data, "packed")
    rows = rank_rows(outcome.rows, outcome.plan.objectives)
    assert [r.state for r in rows] == ["finished"] * 2, [(r.state, r.error) for r in rows]
    configs = list((tmp_path / "store").rglob("config.yaml"))
    assert configs and all(f"path: {tmp_path / 'packed'}" in c.read_text() for c in configs)
    assert all(np.isfinite(r.best["fd_clip40"][0]) for r in rows)
