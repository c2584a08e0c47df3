"""Ctrl-C a running `suhmo-search run` (SIGINT to the driver), then `suhmo-search resume`.

The resumed search ends with exactly the requested number of trials, trials finished
before the interrupt are not run again, the Optuna study holds every trial and MLflow has
one closed child run per trial. Real Ray (started by the driver subprocess), real Optuna,
real MLflow (sqlite), tiny models.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from launch.leaderboard import read_trials
from launch.plan import SearchPlan

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

SPACE = {
    "base": {"preset": "tiny", "train.iterations": 24, "train.eval_every": 4, "eval.samples": 16,
             "data.synth_clips": 8},
    "params": {"optim.lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
               "model.hidden_g": {"type": "choice", "values": [16, 32]}},
    "objective": "fd_clip40:min",
    "scheduler": "fifo",
    "budget": {"num_samples": 4, "max_concurrent": 2},
    "sampler": {"type": "tpe", "n_startup_trials": 2},
    "seed": 3,
}


def cli_env(home: Path) -> dict:
    env = dict(os.environ)
    env.update(SUHMO_HOME=str(home), PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
               RAY_USAGE_STATS_ENABLED="0")
    return env


def start(args: list[str], env: dict) -> tuple[subprocess.Popen, "queue.Queue[str]", list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "launch.cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: "queue.Queue[str]" = queue.Queue()
    seen: list[str] = []

    def pump():
        for line in proc.stdout:
            seen.append(line.rstrip())
            lines.put(line.rstrip())

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines, seen


def wait_for(lines: "queue.Queue[str]", pred, timeout: float) -> str:
    end = time.time() + timeout
    while time.time() < end:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if pred(line):
            return line
    raise AssertionError("timed out waiting for the search output")


def test_sigint_then_resume_finishes_exactly_the_budget(tmp_path):
    home = tmp_path / "home"
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    env = cli_env(home)

    proc, lines, seen = start(["run", "--space", str(space_file), "--experiment", "intr"], env)
    try:
        # interrupt once the first trial has finished and others are under way
        wait_for(lines, lambda s: " done " in f" {s} ", timeout=300)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "\n".join(seen)
    assert rc == 0, out
    assert "suhmo-search resume intr" in out, out
    exp_dir = home / "search" / "intr"
    plan = SearchPlan.load(exp_dir)
    before = read_trials(exp_dir, plan.objectives)
    finished_before = {r.trial_id: r.evaluations for r in before if r.state == "finished"}
    assert 1 <= len(finished_before) < 4, [(r.trial_id, r.state) for r in before]

    status = subprocess.run([sys.executable, "-m", "launch.cli", "status", "intr"], cwd=REPO, env=env,
                            text=True, capture_output=True, timeout=120)
    assert status.returncode == 0 and "unfinished" in status.stdout, status.stdout + status.stderr

    proc2, _, seen2 = start(["resume", "intr"], env)
    rc2 = proc2.wait(timeout=420)
    out2 = "\n".join(seen2)
    assert rc2 == 0, out2
    after = read_trials(exp_dir, plan.objectives)
    assert len(after) == 4, [(r.trial_id, r.state) for r in after]
    assert all(r.state == "finished" and r.step == 24 for r in after), [(r.trial_id, r.state, r.error) for r in after]
    for tid, n_evals in finished_before.items():  # not repeated
        assert next(r for r in after if r.trial_id == tid).evaluations == n_evals
    assert "leaderboard of intr" in out2

    # the Optuna study (restored from Tune's searcher state) holds all four trials
    files = sorted(exp_dir.glob("searcher-state-*.pkl"), key=lambda p: p.name)  # name = session start time
    state = pickle.loads(files[-1].read_bytes())
    study = state["_ot_study"]
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)

    # MLflow: exactly one child run per trial, all closed FINISHED (resumed runs reopened, not duplicated)
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{(home / 'mlflow.db').as_posix()}")
    runs = client.search_runs([plan.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{plan.parent_run_id}'")
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(r.trial_id for r in after)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert client.get_run(plan.parent_run_id).info.status == "FINISHED"
