"""Training never waits on the tracking server: a real ``mlflow server`` on 127.0.0.1 is stopped
after the first evaluation of a 2-trial search and stays down until the search has ended.

* every trial trains all its iterations during the outage (the search ends, trials finished);
* the live output and ``suhmo-search status`` say that tracking is unreachable and how many
  records wait;
* the restarted server receives them with ``suhmo-search sync NAME``: every evaluation step
  of every trial exactly once, the runs closed FINISHED;
* a search with ``--tracking-uri none`` is logged afterwards by ``suhmo-search sync`` too;
* a search in which no trial finished exits non-zero with one ``Error:`` line.

MLflow's HTTP retries are turned down (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_TIMEOUT``) so that a failed call gives up in seconds; the trials' outbox
retries on its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from test_search_faults import Search, space

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` (one worker, no job runner) on a sqlite store, serving artifacts."""

    def __init__(self, root: Path, port: int, *extra: str, env: dict | None = None):
        self.root, self.port, self.extra = root, port, extra
        self.env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true",
                        DO_NOT_TRACK="true", **(env or {}))
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self, timeout: float = 240) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
               f"sqlite:///{(self.root / 'mlflow.db').as_posix()}", "--artifacts-destination",
               (self.root / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", *self.extra]
        self.log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        end = time.time() + timeout
        while time.time() < end:
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("mlflow server did not start:\n" + (self.root / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.log.close()
        self.proc = None


def cli(home: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    e = dict(os.environ, SUHMO_HOME=str(home), RAY_USAGE_STATS_ENABLED="0",
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], cwd=REPO, env=e, capture_output=True,
                          text=True, timeout=timeout)


def steps_logged(uri: str, experiment: str, metric: str) -> dict[str, list[int]]:
    """trial run name -> the steps of ``metric`` in its history, as MLflow holds them."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for r in client.search_runs([exp.experiment_id], filter_string="tags.`suhmo.kind` = 'trial'"):
        out[r.info.run_name] = sorted(m.step for m in client.get_metric_history(r.info.run_id, metric))
        assert r.info.status == "FINISHED", (r.info.run_name, r.info.status, r.data.tags.get("error_reason"))
    return out


def test_a_tracking_outage_costs_nothing(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    server = Server(root, free_port())
    server.start()
    iterations, every = 200, 10  # long enough for the live line on a fast machine too
    sp = tmp_path / "space.yaml"
    sp.write_text(yaml.safe_dump(space(**{"train.iterations": iterations, "train.eval_every": every})))
    store, home = tmp_path / "store", tmp_path / "home"
    env = {"SUHMO_HOME": str(home), **FAST_FAIL}
    search = Search(["run", "--space", str(sp), "--experiment", "outage", "--storage", str(store),
                     "--tracking-uri", server.url], home, **FAST_FAIL)
    try:
        search.wait_for(lambda ln: " eval " in f" {ln} " and f"it {every}/" in ln, timeout=600)
        t_down = time.time()
        server.stop()
        # the live line; a search that ends first says it in its closing line instead
        search.wait_for(lambda ln: "tracking unreachable" in ln or "could not be logged" in ln, timeout=300)
        status = cli(home, "status", "outage", "--storage", str(store), env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "wait for" in status.stdout, status.stdout
        rc = search.wait(timeout=900)
        out = search.text()
        assert rc == 0, out[-4000:]
        assert "Traceback" not in out, out[-4000:]
        assert sum(f"finished {iterations} iterations" in ln for ln in search.seen) == 2, out[-4000:]
        assert "suhmo-search sync outage" in out, out[-3000:]
        outage_s = time.time() - t_down
        server.start()
        r = cli(home, "sync", "outage", "--storage", str(store), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "every record logged" in r.stdout
        again = cli(home, "sync", "outage", "--storage", str(store), env=env)  # idempotent
        assert again.returncode == 0, again.stdout + again.stderr
        logged = steps_logged(server.url, "outage", "fd_clip40")
        expected = list(range(every, iterations + 1, every))
        assert len(logged) == 2 and all(v == expected for v in logged.values()), logged
        st = cli(home, "status", "outage", "--storage", str(store), env=env)
        assert "every record of 2 trial(s) logged" in st.stdout, st.stdout
        print(f"outage {outage_s:.0f} s: both trials trained {iterations} iterations; "
              f"{sum(map(len, logged.values()))} evaluation steps logged once each after the sync")
    finally:
        search.kill()
        server.stop()


def test_search_without_tracking_is_synced_afterwards(tmp_path):
    sp = tmp_path / "space.yaml"
    sp.write_text(yaml.safe_dump(space(**{"train.iterations": 8, "train.eval_every": 4})))
    store, home = tmp_path / "store", tmp_path / "home"
    r = cli(home, "run", "--space", str(sp), "--experiment", "offline", "--storage", str(store),
            "--tracking-uri", "none")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    st = cli(home, "status", "offline", "--storage", str(store))
    assert "tracking: off" in st.stdout, st.stdout
    uri = f"sqlite:///{(tmp_path / 'later.db').as_posix()}"
    for _ in range(2):  # the second sync finds everything logged
        s = cli(home, "sync", "offline", "--storage", str(store), "--tracking-uri", uri)
        assert s.returncode == 0, s.stdout + s.stderr
    logged = steps_logged(uri, "offline", "fd_clip40")
    assert len(logged) == 2 and all(v == [4, 8] for v in logged.values()), logged


def test_a_search_where_no_trial_finished_fails(tmp_path):
    """Every trial errors (its data file holds only zeros): one Error line, non-zero exit."""
    from suhmo.data import synthesize

    ls = synthesize(4, 3.0, 0)
    flat = np.zeros((sum(len(c) for c in ls.clips), 68, 2), np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in ls.clips])]).astype(np.int64)
    np.savez(tmp_path / "zeros.npz", flat=flat, offsets=offsets, fps=np.float32(25))
    sp = tmp_path / "space.yaml"
    sp.write_text(yaml.safe_dump(space(**{"data.path": str(tmp_path / "zeros.npz")})))
    r = cli(tmp_path / "home", "run", "--space", str(sp), "--experiment", "broken", "--storage",
            str(tmp_path / "store"), "--tracking-uri", "none")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "no trial finished" in errors[0], out[-3000:]
    assert "Traceback" not in out
