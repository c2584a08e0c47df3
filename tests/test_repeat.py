"""Seeds x repeats end to end: a tiny real search (Ray Tune + Optuna, MLflow on sqlite), then
`suhmo-search repeat` of its 2 best configurations with 2 seeds each, `suhmo-search results`,
and `best-export --mean-over-seeds` choosing on the mean over the repeat seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from search_util import tiny_search, tiny_space

from tracking.results import aggregate, config_key, format_markdown, frame_key, mean_std

SPACE = tiny_space(base={"train.iterations": 8, "data.synth_seconds": 4.0},
                   scheduler="fifo", sampler={"type": "random"})


# ---------------------------------------------------------------------- pure helpers (fast)
def test_mean_std_and_cells():
    m, sd, n = mean_std([1.0, 2.0, 3.0, float("nan")])
    assert (m, n) == (2.0, 3) and sd == pytest.approx(1.0)
    assert mean_std([])[2] == 0
    table = aggregate([{"group": "a", "metrics": {"fd_frame_g40": 1.0, "fd_frame_g80": 3.0}},
                       {"group": "a", "metrics": {"fd_frame_g40": 2.0, "fd_frame_g80": 5.0}},
                       {"group": "b", "metrics": {"fd_frame_g40": 7.0}}], ["fd_frame"], [40, 80])
    assert [r["group"] for r in table] == ["a", "b"]
    assert table[0]["cells"]["fd_frame_g80"] == {"mean": 4.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    md = format_markdown(table, ["fd_frame"], [40, 80])
    assert "| method | fd_frame @40 | fd_frame @80 |" in md
    assert "| a | 1.5 ± 0.71 (2) | 4 ± 1.4 (2) |" in md and "| b | 7 ± 0 (1) | - |" in md


def test_config_key_ignores_seed_and_runtime_fields_only():
    a = {"optim.lr_g": 1e-4, "windows.scales": [5, 10], "train.seed": 1, "seed": 1, "train.threads": 1}
    b = {"optim.lr_g": "0.0001", "windows.scales": "[5, 10]", "train.seed": "99", "seed": "99"}  # as MLflow params
    assert config_key(a) == config_key(b)
    assert config_key({**a, "optim.lr_g": 2e-4}) != config_key(a)
    assert frame_key("fd_clip40", 80) == "fd_clip40_g80"


def test_repeat_seeds_are_stable_and_distinct():
    from launch.repeat import parse_frames, repeat_seed
    from suhmo.utils import SuhmoError

    seeds = [repeat_seed(0, "abc", i) for i in range(3)]
    assert seeds == [repeat_seed(0, "abc", i) for i in range(3)] and len(set(seeds)) == 3
    assert repeat_seed(1, "abc", 0) != seeds[0] and repeat_seed(0, "abd", 0) != seeds[0]
    assert parse_frames("80,40") == [40, 80]
    with pytest.raises(SuhmoError, match="last 40"):
        parse_frames("20")


# ---------------------------------------------------------------------- end to end (Ray + MLflow)
@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    from launch.repeat import plan_repeat, run_repeat

    tmp = tmp_path_factory.mktemp("repeat")
    uri = f"sqlite:///{(tmp / 'mlflow.db').as_posix()}"

    def repeat(plan, lines):
        rp = plan_repeat(plan.exp_dir, top=2, seeds=2, frames=[40, 80], tracking_uri=uri,
                         max_concurrent=2, name="rep-r1")
        return rp, run_repeat(rp, echo=lines.append, shutdown=False)

    uri, outcome, lines, (rp, summary) = tiny_search(tmp, SPACE, "rep", then=repeat)
    return uri, outcome, rp, summary, lines, tmp


@pytest.mark.slow
def test_repeat_trains_k_times_s_runs_under_the_same_parent(repeated):
    from mlflow import MlflowClient

    uri, outcome, rp, summary, lines, _ = repeated
    plan = outcome.plan
    # the 2 best trials of the search, ranked on their best fd_clip40 at a checkpoint
    ranked = sorted((r for r in outcome.rows if "fd_clip40" in r.best), key=lambda r: r.best["fd_clip40"][0])
    assert [c["repeat_of"] for c in rp.configs] == [r.trial_id for r in ranked[:2]]
    runs = MlflowClient(uri).search_runs([plan.experiment_id],
                                         filter_string=f"tags.`mlflow.parentRunId` = '{plan.parent_run_id}'")
    reps = [r for r in runs if r.data.tags.get("repeat_of")]
    assert len(runs) == 3 + 4 and len(reps) == 4
    assert all(r.info.status == "FINISHED" for r in reps)
    assert {r.data.tags["repeat_batch"] for r in reps} == {"rep-r1"}
    assert {r.data.tags["config_key"] for r in reps} == {c["config_key"] for c in rp.configs}
    # fresh seeds: recorded, distinct, none of the search's own
    seeds = [int(r.data.params["seed"]) for r in reps]
    assert len(set(seeds)) == 4 and not set(seeds) & {r.seed for r in outcome.rows}
    assert sorted(seeds) == sorted(s for c in rp.configs for s in c["seeds"])
    # the config key is the hash of the run's params without the seed
    for r in reps:
        assert config_key(r.data.params) == r.data.tags["config_key"]
    # scored at 40 and 80 generated frames, at the step of the scored checkpoint
    for r in reps:
        m = r.data.metrics
        for k in ("fd_clip40", "fd_frame", "fd_motion", "apd", "drift", "motion_energy"):
            assert math.isfinite(m[frame_key(k, 40)]) and math.isfinite(m[frame_key(k, 80)])
        assert m["fd_clip40_g40"] != m["fd_clip40_g80"]  # frames 1-40 vs 41-80
        assert int(m["best_fd_clip40_step"]) in (4, 8)
    # summary: mean ± std over the 2 seeds of each configuration, equal to the MLflow values
    by_key = {}
    for r in reps:
        by_key.setdefault(r.data.tags["config_key"], []).append(r.data.metrics["fd_motion_g80"])
    for c in summary["configs"]:
        st = c["stats"]["fd_motion_g80"]
        vals = by_key[c["config_key"]]
        assert st["n"] == 2 and st["mean"] == pytest.approx(np.mean(vals))
        assert st["std"] == pytest.approx(np.std(vals, ddof=1))
    assert "best_fd_clip40" in summary["metrics"]
    assert any(line.startswith("repeat rep-r1: 2 configuration(s)") for line in lines)
    assert (rp.exp_dir / "summary.md").is_file()


@pytest.mark.slow
def test_results_command_prints_the_table(repeated, capsys):
    from launch.cli import cli
    from suhmo.cli import run_cli

    uri, _, rp, _, _, _ = repeated
    assert run_cli(cli, ["results", "rep", "--tracking-uri", uri, "--metrics", "fd_clip40,drift"]) == 0
    out = capsys.readouterr().out
    assert "| method | fd_clip40 @40 | fd_clip40 @80 | drift @40 | drift @80 |" in out
    rows = [ln for ln in out.splitlines() if ln.startswith("| rnn ")]
    assert len(rows) == 2 and all(ln.count("(2)") == 4 for ln in rows)
    assert run_cli(cli, ["results", "rep", "--tracking-uri", uri, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runs_used"] == "repeat runs" and len(data["rows"]) == 2
    assert run_cli(cli, ["results", "nope", "--tracking-uri", uri]) == 2  # one-line error, no traceback
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_best_export_mean_over_seeds_picks_the_best_mean_of_the_repeats(repeated):
    from mlflow import MlflowClient

    from tracking.export import select_best

    uri, outcome, rp, _, _, _ = repeated
    client = MlflowClient(uri)
    runs = client.search_runs([outcome.plan.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{outcome.plan.parent_run_id}'")
    means = {}
    for r in runs:
        if not r.data.tags.get("repeat_of"):
            continue
        # best fd_clip40 at a kept checkpoint of this run
        steps = {int(a.path.rsplit("_", 1)[1]) for a in client.list_artifacts(r.info.run_id, "checkpoints")}
        hist = {int(m.step): m.value for m in client.get_metric_history(r.info.run_id, "fd_clip40")}
        means.setdefault(r.data.tags["config_key"], []).append(min(hist[s] for s in steps))
    best_key = min(means, key=lambda k: np.mean(means[k]))
    sel = select_best(uri, "rep", mean_over_seeds=True)
    assert sel.group_mean == pytest.approx(np.mean(means[best_key]))
    keys = {client.get_run(rid).data.tags.get("config_key") for rid in sel.group_runs}
    assert keys == {best_key} and len(sel.group_runs) == 2
    # selecting on the 80-frame score works too (logged at the scored checkpoint's step)
    sel80 = select_best(uri, "rep", metric="fd_clip40_g80", mean_over_seeds=True)
    assert len(sel80.group_runs) == 2 and math.isfinite(sel80.group_mean)
