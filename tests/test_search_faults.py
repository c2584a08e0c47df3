"""Searches under real faults, through the CLI as a user runs it (``python -m launch.cli``):

* Ray's GCS killed under a running search: the driver is terminated by Ray's C++ core, and the
  supervisor still ends with exactly one ``Error:`` line naming the search and the resume command;
* trial workers killed by Ray's memory monitor (threshold set to 2 % of the node's memory):
  each trial errors with a one-line reason, no traceback, the report says how to retry, and
  the search, in which no trial finished, exits non-zero with one ``Error:`` line;
* a time budget far shorter than a first evaluation: the search still ends with every started
  trial evaluated, and the report offers the export;
* the driver killed (SIGKILL) right after trials reported: ``suhmo-search resume`` continues each
  trial from its newest persisted checkpoint, so no step is trained, reported or logged to
  MLflow twice.

Every process of a search runs in its own session and is killed by process group at the end.
"""

from __future__ import annotations

import json
import os
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


def space(**base) -> dict:
    return {
        "base": {"preset": "tiny", "train.iterations": 12, "train.eval_every": 4, "eval.samples": 8,
                 "eval.frames": 16, "data.seq_len": 16, "windows.tau_max": 16, "data.synth_clips": 8,
                 "data.synth_seconds": 3.0, **base},
        "params": {"optim.lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-3}},
        "objective": "fd_clip40:min",
        "scheduler": "fifo",
        "budget": {"num_samples": 2, "max_concurrent": 2},
        "seed": 0,
    }


class Search:
    """One ``python -m launch.cli ARGS`` in its own session; stdout+stderr lines collected."""

    def __init__(self, args: list[str], home: Path, **env_extra: str):
        env = dict(os.environ)
        env.update(SUHMO_HOME=str(home), RAY_USAGE_STATS_ENABLED="0",
                   PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), **env_extra)
        self.home = home
        self.proc = subprocess.Popen([sys.executable, "-m", "launch.cli", *args], cwd=REPO, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.seen.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pred, timeout: float) -> str:
        end = time.time() + timeout
        while time.time() < end:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if pred(line):
                return line
        raise AssertionError("did not see the expected line:\n" + self.text())

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """The whole session: supervisor, driver, and the Ray instance the driver started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in _session_members(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.proc.wait()

    def text(self) -> str:
        time.sleep(0.2)
        return "\n".join(self.seen)


def _session_members(sid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:  # field 6 of stat: session id
                out.append(int(d))
    return out


def _descendant_named(root: int, name: str) -> list[int]:
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                pass
    tree, todo = {root}, [root]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p and c not in tree:
                tree.add(c)
                todo.append(c)
    found = []
    for pid in tree:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                found.append(pid)
        except OSError:
            pass
    return found


def _errors(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("Error:")]


def test_gcs_killed_under_the_driver_ends_in_one_line_with_the_resume_command(tmp_path):
    spec = tmp_path / "space.yaml"
    spec.write_text(yaml.safe_dump(space(**{"train.iterations": 200})))
    s = Search(["run", "--space", str(spec), "--experiment", "gcs", "--tracking-uri", "none"], tmp_path / "home",
               RAY_gcs_rpc_server_reconnect_timeout_s="5")
    try:
        s.wait_for(lambda ln: " eval " in f" {ln} ", timeout=300)
        gcs = _descendant_named(s.proc.pid, "gcs_server")
        assert gcs, "no gcs_server under the search"
        for pid in gcs:
            os.kill(pid, signal.SIGKILL)
        rc = s.proc.wait(timeout=240)
    finally:
        s.kill()
    out = s.text()
    assert rc != 0, out
    errors = _errors(out)
    assert len(errors) == 1, out
    assert "search gcs failed" in errors[0] and errors[0].rstrip().endswith("suhmo-search resume gcs"), errors[0]
    assert "Traceback" not in out, out
    logs = list((tmp_path / "home" / "logs").glob("suhmo-search-*.log"))
    assert logs and any("GCS" in p.read_text() for p in logs)  # the details are kept


def test_memory_monitor_kills_are_one_line_per_trial_with_a_resume_hint(tmp_path):
    spec = tmp_path / "space.yaml"
    spec.write_text(yaml.safe_dump(space()))
    s = Search(["run", "--space", str(spec), "--experiment", "oom", "--tracking-uri", "none"], tmp_path / "home",
               RAY_memory_usage_threshold="0.02", RAY_memory_monitor_refresh_ms="100")
    rc = s.wait(timeout=420)
    out = s.text()
    assert rc != 0, out  # no trial finished: a failed search for scripts, in one Error line
    assert "Traceback" not in out, out
    assert len(_errors(out)) == 1 and "no trial finished" in _errors(out)[0], out
    errored = [ln for ln in out.splitlines() if " ERROR " in f" {ln} "]
    assert len(errored) == 2 and all("OutOfMemoryError: killed by Ray's memory monitor" in ln for ln in errored), out
    assert all(len(ln) < 400 for ln in errored), out
    assert "suhmo-search resume oom" in out and "best-export" not in out, out


def test_time_budget_ends_only_after_first_evaluations(tmp_path):
    spec = tmp_path / "space.yaml"
    spec.write_text(yaml.safe_dump(space(**{"train.iterations": 400, "train.eval_every": 8})))
    s = Search(["run", "--space", str(spec), "--experiment", "cap", "--time-budget", "1s"], tmp_path / "home")
    rc = s.wait(timeout=420)
    out = s.text()
    assert rc == 0, out
    exp = tmp_path / "home" / "search" / "cap"
    rows = read_trials(exp, SearchPlan.load(exp).objectives)
    started = [r for r in rows if r.state != "pending"]
    assert started and all(r.evaluations >= 1 for r in started), [(r.name, r.state, r.evaluations) for r in rows]
    assert all(r.step < 400 for r in rows)  # the cap did stop them
    assert "time budget 1s reached" in out and "suhmo best-export --experiment cap" in out, out


def test_driver_killed_after_reports_resumes_without_repeating_a_step(tmp_path):
    home = tmp_path / "home"
    spec = tmp_path / "space.yaml"
    spec.write_text(yaml.safe_dump(space(**{"train.iterations": 16})))
    s = Search(["run", "--space", str(spec), "--experiment", "kill9"], home)
    try:
        s.wait_for(lambda ln: " eval " in f" {ln} " and "it 8/16" in ln, timeout=400)
    finally:
        s.kill()  # SIGKILL: no chance to save Tune's state; the trials' checkpoints are on disk
    exp = home / "search" / "kill9"
    # the leaderboard read after the kill shows what the trials reached (result.json, or the
    # checkpoints persisted after the driver's last processed result)
    before = read_trials(exp, SearchPlan.load(exp).objectives)
    assert max(row.step for row in before) >= 8, [(row.name, row.step) for row in before]
    r = Search(["resume", "kill9"], home)
    rc = r.wait(timeout=480)
    out = r.text()
    assert rc == 0, out
    plan = SearchPlan.load(exp)
    rows = read_trials(exp, plan.objectives)
    assert len(rows) == 2 and all(row.state == "finished" and row.step == 16 for row in rows), \
        [(row.name, row.state, row.step, row.error) for row in rows]
    for row in rows:  # Tune's results: each evaluated step once (a restart from 0 would repeat 4, 8, ...)
        steps = [json.loads(ln)["step"] for ln in (Path(row.path) / "result.json").read_text().splitlines()]
        assert len(steps) == len(set(steps)), (row.name, steps)
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{(home / 'mlflow.db').as_posix()}")
    runs = client.search_runs([plan.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{plan.parent_run_id}'")
    assert sorted(run.data.tags["trial_id"] for run in runs) == sorted(row.trial_id for row in rows)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "fd_clip40")]
        assert sorted(steps) == [4, 8, 12, 16], (run.info.run_name, steps)
        assert run.info.status == "FINISHED"


def test_resume_keeps_a_local_ray_on_loopback(tmp_path):
    """``resume`` sets Ray's loopback setting before it imports ray (Ray reads it at import; this
    test's process runs without the conftest's copy of it)."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "os.environ.pop('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', None)\n"
        "from launch import runner\n"
        "from launch.plan import make_plan\n"
        "from launch.space import load_space\n"
        "plan = make_plan(load_space('demo'), storage=sys.argv[1], experiment='x', tracking_uri=None)\n"
        "plan.save()\n"
        "try:\n"
        "    runner.resume_search(plan.exp_dir)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
        "print('env', os.environ.get('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'), 'ray' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                       cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert "no saved Tune state" in r.stdout, r.stdout + r.stderr
    assert "env 0 True" in r.stdout, r.stdout + r.stderr
