"""Two Ray nodes on loopback addresses (head 127.0.0.2, worker 127.0.0.3) and a search on them.

The nodes are started with ``ray start --block`` in their own process groups and a private
``--temp-dir``, and torn down in ``finally`` by signalling exactly those process groups
(``ray stop`` would stop every Ray process on the machine, other users' included).
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from launch.leaderboard import read_trials
from launch.plan import SearchPlan

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
HEAD, WORKER = "127.0.0.2", "127.0.0.3"

SPACE = {
    "base": {"preset": "tiny", "train.iterations": 8, "train.eval_every": 4, "eval.samples": 16,
             "data.synth_clips": 8},
    "params": {"optim.lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-3}},
    "objective": "fd_clip40:min",
    "scheduler": "fifo",
    "budget": {"num_samples": 4, "max_concurrent": 2},
    "seed": 1,
}


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def loopback_usable() -> bool:
    try:
        with socket.socket() as s:
            s.bind((WORKER, 0))
        return True
    except OSError:
        return False


class Node:
    """One ``ray start --block`` process (and its children) in its own process group."""

    def __init__(self, args: list[str], env: dict):
        self.proc = subprocess.Popen([RAY, "start", "--block", *args], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.log.append(line.rstrip())
            self.lines.put(line)

    def wait_started(self, timeout: float = 120) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise AssertionError("ray start exited:\n" + "\n".join(self.log))
            try:
                if "Ray runtime started" in self.lines.get(timeout=1.0):
                    return
            except queue.Empty:
                pass
        raise AssertionError("ray start timed out:\n" + "\n".join(self.log))

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # `ray start --block` tears its node down
                self.proc.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of this group still alive
        except (ProcessLookupError, PermissionError):
            pass


def _kill_leftovers(temp_dir: str) -> None:
    """Ray processes of OUR nodes (their command line names our private temp dir), by pid."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmd and int(pid_dir.name) != os.getpid():
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.skipif(not loopback_usable(), reason="127.0.0.3 is not bindable here")
def test_trials_run_on_both_loopback_nodes(tmp_path):
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    port = free_port(HEAD)
    env = dict(os.environ)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # set by conftest for local instances; nodes of a cluster need it unset
    # token authentication, one token for both nodes and the driver (README, cluster section)
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               SUHMO_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    common = ["--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    nodes: list[Node] = []
    try:
        nodes.append(Node(["--head", f"--port={port}", f"--node-ip-address={HEAD}", "--include-dashboard=false",
                           *common], env))
        nodes[0].wait_started()
        nodes.append(Node([f"--address={HEAD}:{port}", f"--node-ip-address={WORKER}", *common], env))
        nodes[1].wait_started()

        space_file = tmp_path / "space.yaml"
        space_file.write_text(yaml.safe_dump(SPACE))
        run = subprocess.run(
            [sys.executable, "-m", "launch.cli", "run", "--space", str(space_file), "--experiment", "two",
             "--address", f"{HEAD}:{port}", "--tracking-uri", "none"],
            cwd=REPO, env=env, text=True, capture_output=True, timeout=420)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        assert "2 node(s)" in run.stdout, run.stdout
        exp_dir = tmp_path / "home" / "search" / "two"
        plan = SearchPlan.load(exp_dir)
        rows = read_trials(exp_dir, plan.objectives)
        assert len(rows) == 4 and all(r.state == "finished" for r in rows), [(r.state, r.error) for r in rows]
        assert {r.node_ip for r in rows} == {HEAD, WORKER}
    finally:
        for node in reversed(nodes):
            node.stop()
        _kill_leftovers(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.skipif(not loopback_usable(), reason="127.0.0.3 is not bindable here")
def test_worker_node_lost_mid_trial_resumes_from_its_checkpoint_on_the_head(tmp_path):
    """Kill every process of the worker node while a trial runs there: Tune's FailureConfig
    restarts the trial from its last checkpoint on the surviving head node; the search finishes
    its budget, each trial has one MLflow run and each evaluated step is logged once."""
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    port = free_port(HEAD)
    home = tmp_path / "home"
    env = dict(os.environ)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # set by conftest for local instances; nodes of a cluster need it unset
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               SUHMO_HOME=str(home), PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    common = ["--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    # long enough after its second report (at 16) that the kill lands while the trial still runs
    # on the worker, however late the driver's line reaches us (with 24 iterations a loaded
    # machine let the trial finish there first: 2026-12-02)
    space = {**SPACE, "base": {**SPACE["base"], "train.iterations": 160, "train.eval_every": 8},
             "budget": {"num_samples": 2, "max_concurrent": 2}}
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(space))
    nodes: list[Node] = []
    search = None
    try:
        nodes.append(Node(["--head", f"--port={port}", f"--node-ip-address={HEAD}", "--include-dashboard=false",
                           *common], env))
        nodes[0].wait_started()
        nodes.append(Node([f"--address={HEAD}:{port}", f"--node-ip-address={WORKER}", *common], env))
        nodes[1].wait_started()
        search = subprocess.Popen(
            [sys.executable, "-m", "launch.cli", "run", "--space", str(space_file), "--experiment", "loss",
             "--address", f"{HEAD}:{port}"], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        seen: list[str] = []
        lines: "queue.Queue[str]" = queue.Queue()

        def pump():
            for line in search.stdout:
                seen.append(line.rstrip())
                lines.put(line.rstrip())

        threading.Thread(target=pump, daemon=True).start()
        end = time.time() + 420
        while time.time() < end:  # a trial on the worker node has reported (so it has a checkpoint)
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                assert search.poll() is None, "\n".join(seen)
                continue
            if " eval " in line and f"@{WORKER}" in line and "it 16/" in line:
                break
        else:
            raise AssertionError("no report from the worker node:\n" + "\n".join(seen))
        os.killpg(nodes[1].proc.pid, signal.SIGKILL)  # node loss: raylet, workers, `ray start`
        rc = search.wait(timeout=600)
        out = "\n".join(seen)
        assert rc == 0, out[-4000:]
        exp_dir = home / "search" / "loss"
        plan = SearchPlan.load(exp_dir)
        rows = read_trials(exp_dir, plan.objectives)
        assert len(rows) == 2 and all(r.state == "finished" and r.step == 160 for r in rows), \
            [(r.name, r.state, r.step, r.error) for r in rows]
        assert all(r.node_ip == HEAD for r in rows)  # both ended on the survivor
        for r in rows:  # resumed from its checkpoint: no step reported twice
            steps = [json.loads(ln)["step"] for ln in (Path(r.path) / "result.json").read_text().splitlines()]
            assert len(steps) == len(set(steps)), (r.name, steps)
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{(home / 'mlflow.db').as_posix()}")
        runs = client.search_runs([plan.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{plan.parent_run_id}'")
        assert sorted(run.data.tags["trial_id"] for run in runs) == sorted(r.trial_id for r in rows)
        for run in runs:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "fd_clip40")]
            assert sorted(steps) == list(range(8, 161, 8)), (run.info.run_name, steps)
            assert run.info.status == "FINISHED"
    finally:
        if search is not None and search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
            search.wait()
        for node in reversed(nodes):
            node.stop()
        _kill_leftovers(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
