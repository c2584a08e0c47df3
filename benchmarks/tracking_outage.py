"""A tracking-server outage during a real search: does training wait, is anything lost?

Starts ``mlflow server`` (sqlite, one worker) on 127.0.0.1, runs ``suhmo-search run`` with
TRIALS tiny trials of ITERATIONS iterations (an evaluation every EVERY) logging to it, stops the
server after the first evaluation and starts it again OUTAGE seconds later (MLflow's own HTTP
retries at their defaults). Then ``suhmo-search sync`` logs what still waits, and the script
prints, per trial, the iterations trained during the outage and the seconds between its
evaluations before and during it, and per trial the evaluation steps MLflow holds (each must
appear once).

    python benchmarks/tracking_outage.py --outage 300 --iterations 200 --every 20 --trials 2

Measured on 2 shared cores (other jobs running), tiny trials, 2 at a time:

* ``--outage 300 --iterations 200 --every 20``: the server was down 401 s (the search ended
  first); both trials trained all their iterations after the first evaluation (180 and 200 of
  200) meanwhile, at most 11.5 s between evaluations; the search exited 0 naming
  `suhmo-search sync`, which logged every step
  (10 per trial) exactly once. (MLflow's default HTTP retries; before the /health probe the
  driver's final replay hung ~4 min in them.)
* ``--outage 90 --iterations 400``: down 101 s; 380 and 400 iterations trained during it, at
  most 6.1 s between evaluations; "tracking unreachable" printed 30 s after the stop; the sync
  logged 20 steps per trial once each.
* ``--outage 30 --iterations 400``: down 55 s (the server takes ~25 s to start); 320
  iterations per trial trained during it; the trials' threads and the driver logged every
  record once the server was back (nothing left for the sync); 20 steps per trial once each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(root: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    p = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                          f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", (root / "art").as_uri(),
                          "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=root, env=env,
                         stdout=open(root / "server.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return p
        except OSError:
            time.sleep(0.5)
    raise SystemExit("mlflow server did not start")


def _stop(p: subprocess.Popen) -> None:
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outage", type=float, default=300.0)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="suhmo-outage-"))
    (tmp / "srv").mkdir()
    port = _port()
    url = f"http://127.0.0.1:{port}"
    server = _server(tmp / "srv", port)
    space = {"base": {"preset": "tiny", "train.iterations": a.iterations, "train.eval_every": a.every,
                      "eval.samples": 8, "eval.frames": 16, "data.seq_len": 16, "windows.tau_max": 16,
                      "data.synth_clips": 8, "data.synth_seconds": 3.0},
             "params": {"optim.lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-3}},
             "objective": "fd_clip40:min", "scheduler": "fifo",
             "budget": {"num_samples": a.trials, "max_concurrent": a.trials}, "seed": 0}
    (tmp / "space.yaml").write_text(yaml.safe_dump(space))
    env = dict(os.environ, SUHMO_HOME=str(tmp / "home"), PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    args = ["--storage", str(tmp / "store")]
    search = subprocess.Popen([sys.executable, "-m", "launch.cli", "run", "--space", str(tmp / "space.yaml"),
                               "--experiment", "outage", "--tracking-uri", url, *args], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    evals: dict[str, list[tuple[float, int]]] = {}
    t_down = t_up = None
    lines = []
    restarted = threading.Event()

    def restart_later() -> None:  # the outage ends on time, whatever the search prints meanwhile
        nonlocal server, t_up
        if not search_done.wait(a.outage):
            server = _server(tmp / "srv", port)
            t_up = time.time()
            print(f"server started again after {t_up - t_down:.0f} s", flush=True)
        restarted.set()

    search_done = threading.Event()
    for line in search.stdout:
        now = time.time()
        lines.append(line.rstrip())
        m = re.search(r"eval\s+(\S+)\s+it (\d+)/", line)
        if m:
            evals.setdefault(m.group(1), []).append((now, int(m.group(2))))
            if t_down is None:
                _stop(server)
                t_down = now
                print(f"server stopped after the first evaluation ({m.group(1)} it {m.group(2)})", flush=True)
                threading.Thread(target=restart_later, daemon=True).start()
        if "tracking" in line:
            print(line.rstrip(), flush=True)
    rc = search.wait()
    if t_down is None:
        raise SystemExit("the search ended before its first evaluation:\n" + "\n".join(lines[-20:]))
    if t_up is None:
        search_done.set()
    restarted.wait()
    if t_up is None:  # the search ended first: wait out the outage
        time.sleep(max(0.0, a.outage - (time.time() - t_down)))
        server = _server(tmp / "srv", port)
        t_up = time.time()
        print(f"search ended during the outage; server started again after {t_up - t_down:.0f} s", flush=True)
    sync = subprocess.run([sys.executable, "-m", "launch.cli", "sync", "outage", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    from mlflow import MlflowClient

    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("outage")
    steps = {}
    for r in client.search_runs([exp.experiment_id], filter_string="tags.`suhmo.kind` = 'trial'"):
        steps[r.info.run_name] = [m.step for m in client.get_metric_history(r.info.run_id, "fd_clip40")]
    _stop(server)
    expected = list(range(a.every, a.iterations + 1, a.every))
    out = {"outage_s": round(t_up - t_down, 1), "search_rc": rc, "sync_rc": sync.returncode,
           "sync": (sync.stdout + sync.stderr).strip().splitlines()[-1:],
           "trials": {}}
    for name, ev in evals.items():
        during = [(t, it) for t, it in ev if t_down < t <= t_up]
        before = [(t, it) for t, it in ev if t <= t_down]
        gaps = [b[0] - a_[0] for a_, b in zip(ev, ev[1:])]
        out["trials"][name] = {
            "iterations_trained_during_outage": (during[-1][1] - (before[-1][1] if before else 0)) if during else 0,
            "last_iteration": ev[-1][1], "max_s_between_evaluations": round(max(gaps), 1) if gaps else None,
            "mlflow_steps_once_each": steps.get(name) == expected, "mlflow_steps": len(steps.get(name, []))}
    for ln in lines:
        if ln.startswith(("Error", "tracking:")):
            print(ln)
    print(json.dumps(out, indent=None if a.json else 2))


if __name__ == "__main__":
    main()
