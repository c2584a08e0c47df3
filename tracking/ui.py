"""``mlflow ui`` on a local store, light enough for a laptop, stopped cleanly.

MLflow 3.17 serves the UI with uvicorn, 4 workers by default plus a huey job runner with
7 processes (~2.9 GB RSS, about a minute to come up on a loaded 2-core machine). One worker
and job execution off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``) need ~0.5 GB and
start in seconds. The server runs in its own process group so that stopping it stops the
whole tree.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from suhmo.utils import SuhmoError

from tracking.store import artifact_root, default_tracking_uri

HOST = "127.0.0.1"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class UIServer:
    """The MLflow UI for ``tracking_uri`` on ``127.0.0.1:port``.

    ``start()`` waits until ``GET /health`` answers and returns the seconds it took;
    ``stop()`` terminates the process group (SIGTERM, then SIGKILL after ``grace_s``).
    Usable as a context manager.
    """

    def __init__(self, tracking_uri: str | None = None, port: int = 5000, *, log_path: str | Path | None = None):
        self.tracking_uri = tracking_uri or default_tracking_uri()
        if not self.tracking_uri.startswith(("sqlite:", "file:", "postgresql", "mysql")):
            raise SuhmoError(
                f"--tracking-uri {self.tracking_uri}: the UI command serves a local store "
                "(sqlite:///... or a database URI); a tracking server already has its UI at its own address"
            )
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri[len("sqlite:///"):])
            if not db.is_file():
                raise SuhmoError(f"no MLflow database at {db}; run a search first (suhmo-search run)")
        self.port = int(port)
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self._log = None

    what = "mlflow ui"

    def extra_env(self) -> dict[str, str]:
        return {}

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", self.tracking_uri,
               "--host", HOST, "--port", str(self.port), "--workers", "1"]
        root = artifact_root(self.tracking_uri)
        if root:
            cmd += ["--default-artifact-root", root]
        return cmd

    def start(self, timeout_s: float = 120.0) -> float:
        if not _port_free(self.port):
            raise SuhmoError(f"port {self.port} on {HOST} is in use; pass --port with a free port")
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
                   MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", **self.extra_env())
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
        out = self._log if self._log else subprocess.DEVNULL
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.command(), env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                self.stop()
                hint = f"; see {self.log_path}" if self.log_path else ""
                raise SuhmoError(f"{self.what} exited with code {self.proc.returncode} during start-up{hint}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise SuhmoError(f"{self.what} did not answer on {self.url} within {timeout_s:.0f} s")

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminate the server's whole process group; idempotent."""
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=grace_s)
        if p is not None:
            # uvicorn's worker may outlive the parent by a moment; reap the group.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log:
            self._log.close()
            self._log = None

    def api(self, endpoint: str, payload: dict | None = None) -> dict:
        """POST (with ``payload``) or GET ``/api/2.0/mlflow/<endpoint>`` and decode the JSON."""
        url = f"{self.url}/api/2.0/mlflow/{endpoint}"
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read().decode())

    def __enter__(self) -> "UIServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class ModelServer(UIServer):
    """``mlflow models serve -m MODEL_URI --env-manager local`` on ``127.0.0.1:port`` (one
    worker), resolving ``models:/`` URIs in ``tracking_uri``; ``invoke`` posts to
    ``/invocations``."""

    what = "mlflow models serve"

    def __init__(self, model_uri: str, tracking_uri: str | None = None, port: int = 5001, **kw):
        super().__init__(tracking_uri, port, **kw)
        self.model_uri = model_uri

    def extra_env(self) -> dict[str, str]:
        # mlflow runs `uvicorn` by name: this interpreter's scripts folder first on the PATH
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_REGISTRY_URI": self.tracking_uri, "PATH": path}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "models", "serve", "-m", self.model_uri, "--env-manager",
                "local", "--host", HOST, "--port", str(self.port), "--workers", "1"]

    def invoke(self, payload: dict, timeout_s: float = 120.0) -> dict:
        req = urllib.request.Request(self.url + "/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return json.loads(r.read().decode())
