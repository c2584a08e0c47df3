"""The cluster recipe's tracking server requires credentials: ``mlflow server --app-name
basic-auth`` (README, "Scaling to a GPU cluster") refuses a client without them, and a search
whose driver and trials have ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` logs
its runs into it."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.request

import pytest
import yaml

from test_search_faults import space
from test_tracking_outage import Server, cli, free_port, steps_logged

pytestmark = pytest.mark.slow


def _search_experiments(url: str, auth: tuple[str, str] | None) -> int:
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search", method="POST",
                                 data=json.dumps({"max_results": 10}).encode(),
                                 headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_basic_auth_server_refuses_anonymous_clients_and_a_search_logs_with_credentials(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    password = secrets.token_hex(12)
    ini = root / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                   f"database_uri = sqlite:///{(root / 'auth.db').as_posix()}\nadmin_username = admin\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    server = Server(root, free_port(), "--app-name", "basic-auth",
                    env={"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                         "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
    server.start()
    try:
        assert _search_experiments(server.url, None) == 401
        assert _search_experiments(server.url, ("admin", "wrong")) == 401
        assert _search_experiments(server.url, ("admin", password)) == 200

        sp = tmp_path / "space.yaml"
        sp.write_text(yaml.safe_dump(space(**{"train.iterations": 8, "train.eval_every": 4})))
        home, store = tmp_path / "home", tmp_path / "store"
        anonymous = cli(home, "run", "--space", str(sp), "--experiment", "anon", "--storage", str(store),
                        "--tracking-uri", server.url,
                        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
        out = anonymous.stdout + anonymous.stderr
        assert anonymous.returncode != 0 and "Traceback" not in out, out[-3000:]
        assert len([ln for ln in out.splitlines() if ln.startswith("Error:")]) == 1, out[-3000:]

        creds = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
        r = cli(home, "run", "--space", str(sp), "--experiment", "authed", "--storage", str(store),
                "--tracking-uri", server.url, env=creds)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        with pytest.MonkeyPatch.context() as mp:
            for k, v in creds.items():
                mp.setenv(k, v)
            logged = steps_logged(server.url, "authed", "fd_clip40")
        assert len(logged) == 2 and all(v == [4, 8] for v in logged.values()), logged
    finally:
        server.stop()
