"""MLflow run hierarchy, statuses, best-so-far metrics and model selection, on real MLflow
(sqlite in a temp dir). No Ray here: TrialLogger is driven directly, as a trial would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tracking
from suhmo.utils import SuhmoError

OBJ = [("fd", "min")]


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """An MLflow sqlite database with its schema created once (the migrations take seconds)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    tracking.setup_experiment(f"sqlite:///{db.as_posix()}", "template")
    return db


@pytest.fixture
def store(tmp_path, empty_db):
    import shutil

    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_db, db)
    uri = f"sqlite:///{db.as_posix()}"
    exp = tracking.setup_experiment(uri, "unit search")
    return uri, exp, tmp_path


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _space(tmp_path) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text("optim.lr_g: {loguniform: [1.0e-5, 1.0e-3]}\n")
    return p


def _parent(uri, exp, tmp_path, objectives=OBJ, name="search-1"):
    return tracking.start_search_run(uri, exp, space_file=_space(tmp_path), cli_options={"trials": 2, "preset": "tiny"},
                                     study_seed=7, run_name=name, objectives=objectives)


def _ckpt(tmp_path, tag) -> Path:
    p = tmp_path / f"ckpt_{tag}" / "last.pt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(f"checkpoint {tag}".encode())
    return p


def _artifacts(client, run_id, path=None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_default_uri_and_experiment_location(tmp_path, monkeypatch, empty_db):
    import shutil

    monkeypatch.setenv("SUHMO_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    shutil.copyfile(empty_db, tmp_path / "home" / "mlflow.db")
    uri = tracking.default_tracking_uri()
    assert uri == f"sqlite:///{(tmp_path / 'home' / 'mlflow.db').as_posix()}"
    assert uri.startswith("sqlite:////")
    eid = tracking.setup_experiment(uri, "my search")
    assert tracking.setup_experiment(uri, "my search") == eid  # idempotent
    exp = _client(uri).get_experiment(eid)
    assert exp.artifact_location == (tmp_path / "home" / "mlartifacts" / "my_search").as_uri()
    with pytest.raises(SuhmoError, match="empty"):
        tracking.setup_experiment(uri, " ")


def test_hierarchy_params_metrics_artifacts(store):
    from suhmo.data import synthesize

    uri, exp, tmp = store
    pid = _parent(uri, exp, tmp)
    samples = np.stack([c[:12] for c in synthesize(3, 1.0, 0).clips]) / 400.0 + 0.2  # [3, 12, 68, 2]
    config = {"model.variant": "transformer", "optim.lr_g": 3e-4, "windows.scales": [5, 10], "train.seed": 4}
    series = {"a": [4.0, 2.0, 3.0], "b": [5.0, 6.0, 1.5]}
    ids = {}
    for name, values in series.items():
        with tracking.TrialLogger(uri, exp, pid, trial_id=f"id_{name}", trial_name=f"trial_{name}", config=config,
                                  seed=11, objectives=OBJ) as lg:
            for i, v in enumerate(values):
                best = lg.log_eval(10 * (i + 1), {"fd": v, "apd": 0.5 + i, "loss_g": -v},
                                   _ckpt(tmp, f"{name}{i}"), samples if i == 0 else None)
            ids[name] = lg.run_id
    assert best == {"fd": (1.5, 30)}

    c = _client(uri)
    children = c.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{pid}'")
    assert {r.info.run_id for r in children} == set(ids.values())
    parent = c.get_run(pid)
    assert parent.info.status == "RUNNING"
    assert parent.data.params["study_seed"] == "7" and parent.data.params["search.trials"] == "2"
    assert "search/space.yaml" in _artifacts(c, pid)

    ra = c.get_run(ids["a"])
    assert ra.info.status == "FINISHED" and ra.info.run_name == "trial_a"
    assert ra.data.tags["variant"] == "transformer" and ra.data.tags["trial_id"] == "id_a"
    assert ra.data.tags["status"] == "FINISHED" and ra.data.tags["stopped_by_scheduler"] == "false"
    assert ra.data.params["optim.lr_g"] == "0.0003" and ra.data.params["seed"] == "11"
    assert json.loads(ra.data.params["windows.scales"]) == [5, 10]
    # every metric at every step; best-so-far and the step holding it
    assert [(m.step, m.value) for m in c.get_metric_history(ids["a"], "fd")] == [(10, 4.0), (20, 2.0), (30, 3.0)]
    assert [m.value for m in c.get_metric_history(ids["a"], "best_fd")] == [4.0, 2.0, 2.0]
    assert [m.value for m in c.get_metric_history(ids["a"], "best_fd_step")] == [10, 20, 20]
    assert ra.data.metrics["fd"] == 3.0 and ra.data.metrics["best_fd"] == 2.0  # last vs best
    assert len(c.get_metric_history(ids["a"], "loss_g")) == 3
    arts = _artifacts(c, ids["a"])
    for s in (10, 20, 30):
        assert f"evals/step_{s}/metrics.json" in arts and f"evals/step_{s}/checkpoint.json" in arts
    assert {"evals/step_10/samples.gif", "evals/step_10/motion_map.png"} <= arts
    # checkpoints kept at the steps that improved the objective, not at step 30 (worse)
    assert {a for a in arts if a.startswith("checkpoints/")} == {"checkpoints/step_10/last.pt",
                                                               "checkpoints/step_20/last.pt"}
    local = c.download_artifacts(ids["a"], "checkpoints/step_20/last.pt", str(tmp / "dl"))
    assert Path(local).read_bytes() == b"checkpoint a1"
    gif = Path(c.download_artifacts(ids["a"], "evals/step_10/samples.gif", str(tmp / "dl")))
    assert gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    rec = json.loads(Path(c.download_artifacts(ids["a"], "evals/step_20/metrics.json", str(tmp / "dl"))).read_text())
    assert rec["metrics"]["fd"] == 2.0 and rec["best"]["fd"] == {"value": 2.0, "step": 20}

    rows = tracking.finish_search_run(uri, pid, {"elapsed_s": 12.5, "note": "ok"})
    assert [r["run_id"] for r in rows] == [ids["b"], ids["a"]]  # 1.5 < 2.0
    parent = c.get_run(pid)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["summary.elapsed_s"] == 12.5 and parent.data.metrics["summary.trials"] == 2
    assert parent.data.metrics["best_fd"] == 1.5 and parent.data.tags["best_run_id"] == ids["b"]
    lb = json.loads(Path(c.download_artifacts(pid, "search/leaderboard.json", str(tmp / "dl2"))).read_text())
    assert lb[0]["best_fd"] == 1.5 and lb[0]["best_fd_step"] == 30
    assert "search/leaderboard.md" in _artifacts(c, pid)


def test_runs_always_closed_with_the_right_status(store):
    uri, exp, tmp = store
    pid = _parent(uri, exp, tmp)
    c = _client(uri)

    def trial(tid):
        return tracking.TrialLogger(uri, exp, pid, trial_id=tid, trial_name=tid, config={"model.variant": "rnn"},
                                    seed=0, objectives=OBJ)

    with trial("ok") as ok:
        ok.log_eval(1, {"fd": 1.0})
    with pytest.raises(ValueError):
        with trial("bad") as bad:
            raise ValueError("loss is NaN at step 3")
    with pytest.raises(SystemExit):  # what ray.tune.report raises when ASHA stops the trial
        with trial("asha") as asha:
            asha.log_eval(1, {"fd": 2.0})
            raise SystemExit(0)
    with trial("explicit") as ex:
        ex.close("KILLED", "stopped by ASHA at step 20")
    orphan = trial("orphan")  # a worker killed before it could close its run
    # ASHA stopped it, and Ray ended the worker before the trial closed its run
    cut = trial("cut")
    cut.log_eval(2, {"fd": 4.0})
    # a worker torn down right after its final report, which had reached the budget
    done = tracking.TrialLogger(uri, exp, pid, trial_id="done", trial_name="done",
                                config={"model.variant": "rnn", "train.iterations": 4}, seed=0, objectives=OBJ)
    done.log_eval(4, {"fd": 3.0})
    # Tune reports these two; their workers died before closing: one completed, one raised
    closed_late = trial("late")
    closed_late.log_eval(2, {"fd": 2.0})
    crashed = trial("crash")
    crashed.log_eval(2, {"fd": 9.0})
    with pytest.raises(SuhmoError, match="closed"):
        ok.log_eval(2, {"fd": 0.5})

    def st(lg):
        r = c.get_run(lg.run_id)
        return r.info.status, r.data.tags["status"], r.data.tags["stopped_by_scheduler"], r.data.tags["error_reason"]

    assert st(ok) == ("FINISHED", "FINISHED", "false", "")
    assert st(bad) == ("FAILED", "FAILED", "false", "ValueError: loss is NaN at step 3")
    assert st(asha)[:3] == ("KILLED", "KILLED", "true") and "scheduler" in st(asha)[3]
    assert st(ex) == ("KILLED", "KILLED", "true", "stopped by ASHA at step 20")
    assert c.get_run(orphan.run_id).info.status == "RUNNING"
    tracking.finish_search_run(uri, pid, {}, trial_states={"cut": "stopped", "late": "finished", "crash": "error",
                                                          "asha": "stopped"},
                               trial_errors={"crash": "RuntimeError: worker lost"})
    s = st(orphan)
    assert s[:3] == ("KILLED", "KILLED", "false") and "without closing" in s[3]
    # stopped by the scheduler: a normal outcome, FINISHED (no red cross in the UI), said in `outcome`
    s = st(cut)
    assert s[:3] == ("FINISHED", "FINISHED", "true") and "scheduler" in s[3]
    assert st(asha)[:3] == ("FINISHED", "FINISHED", "true")
    outcome = {lg.trial_id: c.get_run(lg.run_id).data.tags["outcome"] for lg in (ok, bad, asha, ex, orphan, cut, crashed)}
    assert outcome["ok"] == "completed" and outcome["bad"].startswith("failed: ValueError")
    assert outcome["asha"] == "stopped early by the scheduler at iteration 1"
    assert outcome["cut"] == "stopped early by the scheduler at iteration 2"
    assert outcome["explicit"] == "stopped early by the scheduler"  # closed KILLED by itself, no Tune state
    assert outcome["orphan"].startswith("interrupted") and outcome["crash"] == "failed: RuntimeError: worker lost"
    assert st(done) == ("FINISHED", "FINISHED", "false", "")  # no state given: its last step reached the budget
    assert st(closed_late) == ("FINISHED", "FINISHED", "false", "")
    assert st(crashed) == ("FAILED", "FAILED", "false", "RuntimeError: worker lost")
    running = c.search_runs([exp], filter_string="attributes.status = 'RUNNING'")
    assert running == []
    with pytest.raises(SuhmoError, match="choose one of"):
        tracking.close_run(uri, ok.run_id, "DONE")


def test_resumed_trial_reuses_its_run_and_best_so_far(store):
    uri, exp, tmp = store
    pid = _parent(uri, exp, tmp)
    cfg = {"model.variant": "rnn", "optim.lr_g": 1e-4}
    first = tracking.TrialLogger(uri, exp, pid, trial_id="t0", trial_name="t0", config=cfg, seed=1, objectives=OBJ)
    first.log_eval(10, {"fd": 3.0}, _ckpt(tmp, 0))
    first.log_eval(20, {"fd": 2.0}, _ckpt(tmp, 1))
    run_id = first.run_id  # the process dies here without closing (Tune restores the trial later)

    again = tracking.TrialLogger(uri, exp, pid, trial_id="t0", trial_name="t0", config=cfg, seed=1,
                                 objectives=OBJ, run_id=run_id)
    assert again.run_id == run_id and again.best == {"fd": (2.0, 20)}
    again.log_eval(30, {"fd": 2.5}, _ckpt(tmp, 2))  # worse than the restored best: no new checkpoint
    again.close("FINISHED")
    # found by trial id under the same parent when the run id was not stored
    found = tracking.TrialLogger(uri, exp, pid, trial_id="t0", config=cfg, seed=1, objectives=OBJ)
    assert found.run_id == run_id
    found.close("FINISHED")
    c = _client(uri)
    assert len(c.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{pid}'")) == 1
    r = c.get_run(run_id)
    assert r.info.status == "FINISHED" and r.data.metrics["best_fd"] == 2.0 and r.data.metrics["best_fd_step"] == 20
    assert r.data.tags["resumed"] == "true"
    assert {f.path for f in c.list_artifacts(run_id, "checkpoints")} == {"checkpoints/step_10", "checkpoints/step_20"}
    with pytest.raises(SuhmoError, match="must keep its config"):
        tracking.TrialLogger(uri, exp, pid, trial_id="t0", config={**cfg, "optim.lr_g": 1e-3}, seed=1,
                             objectives=OBJ, run_id=run_id)


def _search_with(uri, exp, tmp, trials: dict, objectives, name="s", params=None) -> tuple[str, dict]:
    """trials: name -> list of metric dicts per step (steps 10, 20, ...); returns (parent, run ids)."""
    pid = _parent(uri, exp, tmp, objectives, name)
    ids = {}
    for tname, evals in trials.items():
        cfg = {"model.variant": "rnn", **((params or {}).get(tname, {}))}
        with tracking.TrialLogger(uri, exp, pid, trial_id=tname, trial_name=tname, config=cfg,
                                  seed=(params or {}).get(tname, {}).get("train.seed", 0), objectives=objectives) as lg:
            for i, m in enumerate(evals):
                lg.log_eval(10 * (i + 1), m, _ckpt(tmp, f"{name}{tname}{i}"))
            ids[tname] = lg.run_id
    tracking.finish_search_run(uri, pid, {})
    return pid, ids


def test_select_best_uses_the_best_checkpoint_not_the_last_value(store):
    uri, exp, tmp = store
    # A ends worse (2.5) than B (1.8) but held the best checkpoint (1.2) at step 20
    trials = {"A": [{"fd": 3.0}, {"fd": 1.2}, {"fd": 2.5}], "B": [{"fd": 2.0}, {"fd": 1.9}, {"fd": 1.8}],
              "C": [{"fd": 4.0}]}
    pid, ids = _search_with(uri, exp, tmp, trials, OBJ)
    sel = tracking.select_best(uri, "unit search")
    assert (sel.best.run_id, sel.best.step, sel.best.value) == (ids["A"], 20, 1.2)
    assert sel.parent_run_id == pid and sel.metric == "fd" and sel.mode == "min"
    # independent check: MLflow's own ordering on the best-so-far metric
    top = _client(uri).search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{pid}'",
                                   order_by=["metrics.best_fd ASC"], max_results=1)[0]
    assert top.info.run_id == sel.best.run_id and int(top.data.metrics["best_fd_step"]) == sel.best.step
    last = _client(uri).search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{pid}'",
                                    order_by=["metrics.fd ASC"], max_results=1)[0]
    assert last.info.run_id == ids["B"]  # the last value would have picked another trial

    # a later search becomes "the latest"; the earlier one stays reachable by id
    pid2, ids2 = _search_with(uri, exp, tmp, {"D": [{"fd": 5.0}]}, OBJ, name="s2")
    assert tracking.select_best(uri).best.run_id == ids2["D"]
    assert tracking.select_best(uri, search_run_id=pid).best.run_id == ids["A"]


def test_select_best_pareto_and_mean_over_seeds(store):
    uri, exp, tmp = store
    objs = [("fd", "min"), ("apd", "max")]
    trials = {
        "P": [{"fd": 1.0, "apd": 0.1}],   # best fd, poor diversity: on the front
        "Q": [{"fd": 2.0, "apd": 0.9}],   # on the front
        "R": [{"fd": 2.5, "apd": 0.5}],   # dominated by Q
    }
    _, ids = _search_with(uri, exp, tmp, trials, objs)
    sel = tracking.select_best(uri, metric="apd", pareto=True)
    assert {c.run_id for c in sel.pareto} == {ids["P"], ids["Q"]}
    assert sel.best.run_id == ids["Q"] and sel.mode == "max"
    assert tracking.select_best(uri, pareto=True).best.run_id == ids["P"]

    # two configs x two seeds: config X has the single best seed, config Y the better mean
    seeds = {"X0": {"optim.lr_g": 1e-4, "train.seed": 0}, "X1": {"optim.lr_g": 1e-4, "train.seed": 1},
             "Y0": {"optim.lr_g": 3e-4, "train.seed": 0}, "Y1": {"optim.lr_g": 3e-4, "train.seed": 1}}
    values = {"X0": 0.5, "X1": 3.0, "Y0": 1.0, "Y1": 1.2}
    _, ids = _search_with(uri, exp, tmp, {k: [{"fd": v}] for k, v in values.items()}, OBJ, name="seeds", params=seeds)
    assert tracking.select_best(uri).best.run_id == ids["X0"]
    sel = tracking.select_best(uri, mean_over_seeds=True)
    assert sel.best.run_id == ids["Y0"] and sel.group_mean == pytest.approx(1.1)
    assert set(sel.group_runs) == {ids["Y0"], ids["Y1"]}


def test_selection_errors_are_one_line(store):
    uri, exp, tmp = store
    with pytest.raises(SuhmoError, match="no search run"):
        tracking.select_best(uri)
    with pytest.raises(SuhmoError, match=r"experiment 'nope' not found .*known: template, unit search"):
        tracking.select_best(uri, "nope")
    with pytest.raises(SuhmoError, match="no MLflow database"):
        tracking.select_best(f"sqlite:///{tmp / 'absent.db'}")
    pid = _parent(uri, exp, tmp)
    with pytest.raises(SuhmoError, match="no trial runs"):
        tracking.select_best(uri)
    with tracking.TrialLogger(uri, exp, pid, trial_id="x", config={}, seed=0, objectives=OBJ) as lg:
        lg.log_eval(10, {"fd": 1.0, "apd": 0.2})  # no checkpoint passed
    with pytest.raises(SuhmoError, match=r"unknown metric 'fid'.*known: apd, fd"):
        tracking.select_best(uri, metric="fid")
    with pytest.raises(SuhmoError, match="has a checkpoint"):
        tracking.select_best(uri)


def test_best_export_cli_errors_print_one_line(store, capsys):
    from suhmo.cli import cli, run_cli

    uri, exp, tmp = store
    rc = run_cli(cli, ["best-export", "--tracking-uri", uri, "--experiment", "missing"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "experiment 'missing' not found" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_ui_serves_the_runs_and_stops(store):
    import time

    from tracking.ui import UIServer, free_port

    uri, exp, tmp = store
    pid, ids = _search_with(uri, exp, tmp, {"A": [{"fd": 1.0}], "B": [{"fd": 2.0}]}, OBJ)
    server = UIServer(uri, free_port(), log_path=tmp / "ui.log")
    assert "--workers" in server.command() and server.command()[server.command().index("--workers") + 1] == "1"
    took = server.start(timeout_s=180)
    try:
        print(f"UI up in {took:.1f} s")
        runs = server.api("runs/search", {"experiment_ids": [exp], "max_results": 100})["runs"]
        assert {r["info"]["run_id"] for r in runs} == {pid, *ids.values()}
        child = next(r for r in runs if r["info"]["run_id"] == ids["A"])
        tags = {t["key"]: t["value"] for t in child["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == pid
        assert server.api("experiments/get-by-name?experiment_name=unit%20search")["experiment"]["experiment_id"] == exp
    finally:
        t0 = time.perf_counter()
        server.stop()
        print(f"UI stopped in {time.perf_counter() - t0:.1f} s")
    assert server.proc.poll() is not None
    import os
    import signal

    with pytest.raises(ProcessLookupError):  # the whole process group is gone
        os.killpg(server.proc.pid, 0)


@pytest.mark.slow
def test_ui_command_prints_the_address_and_stops_on_ctrl_c(store):
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from tracking.ui import free_port

    uri, exp, tmp = store
    port = free_port()
    code = ("import sys; from suhmo.cli import run_cli; from tracking.cli import ui; "
            "sys.exit(run_cli(ui, sys.argv[1:]))")
    p = subprocess.Popen([sys.executable, "-c", code, "--tracking-uri", uri, "--port", str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.time() + 180
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "MLflow UI: http://127.0.0.1:" in line:
                break
        assert f"http://127.0.0.1:{port}" in "".join(lines), lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert r.status == 200
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert "MLflow UI stopped" in rest and p.returncode == 0
    with pytest.raises(OSError):  # nothing listens any more
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)


def test_experiment_opens_on_the_trials(store):
    """Classic model-training experiment, objective as primary metric, a saved runs view with
    the objective and the searched fields as first columns, a description on the parent run."""
    from tracking.store import latest_search_experiment
    from tracking.view import runs_page_url

    uri, exp, tmp = store
    space = tmp / "space2.yaml"
    space.write_text("params:\n  optim.lr_g: {type: loguniform, low: 1.0e-5, high: 1.0e-3}\n"
                     "  windows.family:\n    type: choice\n    values: [fixed, uniform]\n"
                     "    when:\n      uniform: {windows.tau_min: {type: int, low: 3, high: 10}}\n")
    pid = tracking.start_search_run(uri, exp, space_file=space, cli_options={"num_samples": 3},
                                    study_seed=0, run_name="view", objectives=[("fd_clip40", "min"), ("apd", "max")])
    c = _client(uri)
    tags = c.get_experiment(exp).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.experiment.primaryMetric.name"] == "best_fd_clip40"
    view = json.loads(tags["mlflow.sharedViewState.suhmo-trials"])
    assert view["selectedColumns"] == ["metrics.`best_fd_clip40`", "metrics.`best_apd`",
                                       "metrics.`best_fd_clip40_step`", "tags.`outcome`", "params.`optim.lr_g`",
                                       "params.`windows.family`", "params.`windows.tau_min`"]
    assert view["orderByKey"] == "metrics.`best_fd_clip40`" and view["orderByAsc"] is True
    assert view["searchFilter"] == "tags.`suhmo.kind` = 'trial'"
    note = c.get_run(pid).data.tags["mlflow.note.content"]
    assert "**view**" in note and "`best_fd_clip40` (lower is better)" in note and "`windows.tau_min`" in note
    assert c.get_experiment(exp).tags["mlflow.note.content"] == note  # above the runs table
    assert latest_search_experiment(uri) == exp
    assert runs_page_url("http://127.0.0.1:5000/", exp) == (
        f"http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning"
        "&viewStateShareKey=suhmo-trials")
