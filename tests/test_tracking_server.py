"""A real tracking server: PostgreSQL (Debian's ``postgresql`` package) as the MLflow backend,
``mlflow server`` on 127.0.0.1 serving the artifacts, and a two-trial search logged to it with
``--tracking-uri http://127.0.0.1:PORT``. Checks the run hierarchy (one parent run, one child
run per trial, all FINISHED) and the artifacts (evaluation renders and checkpoints) read back
through the server.

Skipped, with the reason, when PostgreSQL's ``initdb``/``pg_ctl`` or the ``psycopg2`` driver is
missing (``.ci/run`` installs both when it can). The database cluster lives in a temporary
folder, listens on 127.0.0.1 only with a private socket folder, and is stopped in ``finally``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
from search_util import tiny_space

REPO = Path(__file__).resolve().parents[1]
PG_BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
               if (p / "initdb").is_file()), None) if Path("/usr/lib/postgresql").is_dir() else None

# two 8-iteration trials of tiny models, both at once, no early stopping
SPACE = tiny_space(base={"train.iterations": 8}, scheduler="fifo", budget={"num_samples": 2, "max_concurrent": 2})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _why_no_postgres() -> str | None:
    if PG_BIN is None and shutil.which("initdb") is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install psycopg2-binary), MLflow cannot reach PostgreSQL"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


class Postgres:
    """A throw-away PostgreSQL cluster: trust auth for user ``mlflow``, 127.0.0.1 only."""

    def __init__(self):
        self.bin = PG_BIN or Path(shutil.which("initdb")).parent
        self.root = Path(tempfile.mkdtemp(prefix="suhmo-pg-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.sock.mkdir()
        if self.as_user:
            os.chown(self.sock, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=timeout)

    def start(self) -> str:
        r = self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "mlflow", "--auth=trust",
                      "-E", "UTF8", "--no-sync")
        if r.returncode != 0:
            pytest.skip(f"initdb failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        r = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "pg.log"),
                      "-w", "-t", "60", "start")
        if r.returncode != 0:
            log = (self.root / "pg.log").read_text() if (self.root / "pg.log").is_file() else r.stderr
            pytest.skip(f"PostgreSQL did not start: {log.strip().splitlines()[-1:]}")
        r = self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow", "mlflow")
        assert r.returncode == 0, r.stderr
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3: name the driver installed
        return f"postgresql+psycopg2://mlflow@127.0.0.1:{self.port}/mlflow"

    def stop(self) -> None:
        if self.data.is_dir():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def test_search_against_an_mlflow_server_on_postgresql(tmp_path):
    why = _why_no_postgres()
    if why:
        pytest.skip(why)
    pg = Postgres()
    server = None
    try:
        db_uri = pg.start()
        port = free_port()
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
        log = open(tmp_path / "mlflow-server.log", "wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db_uri,
             "--artifacts-destination", str(tmp_path / "artifacts"), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        end = time.time() + 240
        while time.time() < end:
            assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not answer:\n" + (tmp_path / "mlflow-server.log").read_text())

        space_file = tmp_path / "space.yaml"
        space_file.write_text(yaml.safe_dump(SPACE))
        run_env = dict(os.environ, SUHMO_HOME=str(tmp_path / "home"), RAY_USAGE_STATS_ENABLED="0",
                       PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        run = subprocess.run([sys.executable, "-m", "launch.cli", "run", "--space", str(space_file),
                              "--experiment", "pg", "--tracking-uri", url], cwd=REPO, env=run_env, text=True,
                             capture_output=True, timeout=600)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        assert f"--tracking-uri {url}" in run.stdout  # the hints name the server

        from mlflow import MlflowClient

        client = MlflowClient(url)
        exp = client.get_experiment_by_name("pg")
        assert exp is not None
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and len(children) == 2, [(r.info.run_name, r.data.tags) for r in runs]
        assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
        assert all(r.info.status == "FINISHED" for r in runs)
        for child in children:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, "fd_clip40")]
            assert sorted(steps) == [4, 8]
            top = {a.path for a in client.list_artifacts(child.info.run_id)}
            assert any(p.startswith("eval") for p in top) and any(p.startswith("checkpoint") for p in top), top
            evals = client.list_artifacts(child.info.run_id, sorted(p for p in top if p.startswith("eval"))[0])
            step_dir = evals[0].path
            files = {Path(a.path).name for a in client.list_artifacts(child.info.run_id, step_dir)}
            assert "metrics.json" in files, files
            got = client.download_artifacts(child.info.run_id, f"{step_dir}/metrics.json", str(tmp_path / "dl"))
            assert Path(got).stat().st_size > 0
        # the artifacts went through the server into its destination folder
        assert any((tmp_path / "artifacts").rglob("metrics.json"))
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        pg.stop()
