"""Load and serve times of the MLflow model that `suhmo best-export --register` logs.

    .venv/bin/python benchmarks/serve.py [--frames 40] [--samples 2] [--repeats 5] [--json]

One run: a tiny trial (a few iterations, logged by TrialLogger as a search would) is
exported with `best-export --register bench_gen`, then

``pyfunc load``     ``mlflow.pyfunc.load_model("models:/bench_gen@champion")`` in a fresh
                    interpreter: the load call alone (which imports torch, the model's code
                    does, and checks the installed packages against the model's requirements),
                    the interpreter's whole time (imports included), and the call again in
                    another fresh interpreter with torch imported first and
                    ``suppress_warnings=True`` (no requirements check);
``pyfunc predict``  ``predict({"reference": ref}, params={"frames", "samples", "seed"})``
                    in that process (median of ``--repeats``);
``serve start``     ``mlflow models serve -m models:/bench_gen@champion --env-manager local``
                    until ``/health`` answers;
``invocations``     ``POST /invocations`` of one reference for ``samples`` x ``frames``,
                    over HTTP on 127.0.0.1: the first request and the median of ``--repeats``.

Targets of the portrait issue: served /invocations for 2 samples x 40 frames <= 2 s,
pyfunc load <= 5 s. With ``--json`` the last line is one JSON object of these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOAD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np, mlflow
if sys.argv[5] == "torch-first":
    import torch
mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_registry_uri(sys.argv[1])
t1 = time.perf_counter()
m = mlflow.pyfunc.load_model("models:/bench_gen@champion", suppress_warnings=sys.argv[5] == "torch-first")
t2 = time.perf_counter()
ref = np.load(sys.argv[2])[None]
params = json.loads(sys.argv[3])
times = []
for _ in range(int(sys.argv[4])):
    s = time.perf_counter(); y = m.predict({"reference": ref}, params=params); times.append(time.perf_counter() - s)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "predict_s": sorted(times)[len(times) // 2],
                  "shape": list(y.shape)}))
"""


def logged_export(tmp: Path) -> tuple[str, Path]:
    """A one-trial search in a fresh store, exported and registered as bench_gen@champion."""
    import tracking
    from suhmo.cli import cli, run_cli
    from suhmo.config import make_config
    from suhmo.train import Trainer

    uri = f"sqlite:///{(tmp / 'mlflow.db').as_posix()}"
    exp = tracking.setup_experiment(uri, "bench")
    cfg = make_config("tiny", overrides={"data.seq_len": 16, "windows.tau_max": 16, "data.synth_clips": 8,
                                         "data.synth_seconds": 3.0, "train.iterations": 4, "train.eval_every": 4,
                                         "eval.samples": 8, "eval.frames": 16, "train.device": "cpu"})
    objective = (cfg.train.select_metric, cfg.train.select_mode)
    pid = tracking.start_search_run(uri, exp, space_file=None, cli_options={}, study_seed=0, run_name="bench",
                                    objectives=[objective])
    with tracking.TrialLogger(uri, exp, pid, trial_id="t0", trial_name="t0", config=cfg.flat(),
                              seed=cfg.train.seed, objectives=[objective]) as lg:
        Trainer(cfg, tmp / "run", report=lambda step, metrics, ckpt: lg.log_eval(step, metrics, ckpt)).fit()
    tracking.finish_search_run(uri, pid, {})
    out = tmp / "export"
    rc = run_cli(cli, ["best-export", "--tracking-uri", uri, "--experiment", "bench", "--out", str(out),
                       "--register", "bench_gen", "--frames", "8"])
    if rc != 0:
        raise SystemExit(f"best-export failed ({rc})")
    return uri, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np

    from tracking.ui import ModelServer, free_port

    params = {"frames": args.frames, "samples": args.samples, "seed": 1}
    with tempfile.TemporaryDirectory(prefix="suhmo-bench-serve-") as tmp:
        tmp = Path(tmp)
        uri, out = logged_export(tmp)
        runs = {}
        for how in ("cold", "torch-first"):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", LOAD, uri, str(out / "reference.npy"), json.dumps(params),
                                str(args.repeats), how], capture_output=True, text=True, timeout=600,
                               env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true"))
            if r.returncode != 0:
                raise SystemExit(r.stderr[-3000:])
            runs[how] = json.loads(r.stdout.strip().splitlines()[-1])
            runs[how]["process_s"] = time.perf_counter() - t0
        load, process_s = runs["cold"], runs["cold"]["process_s"]
        ref = np.load(out / "reference.npy")[None].tolist()
        body = {"inputs": {"reference": ref}, "params": params}
        server = ModelServer("models:/bench_gen@champion", uri, free_port(), log_path=tmp / "serve.log")
        try:
            start_s = server.start(timeout_s=300)
            t = time.perf_counter()
            first = server.invoke(body)
            first_s = time.perf_counter() - t
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                server.invoke(body)
                times.append(time.perf_counter() - t)
        finally:
            server.stop()
    shape = list(np.asarray(first["predictions"]).shape)
    res = {"frames": args.frames, "samples": args.samples, "pyfunc_load_s": load["load_s"],
           "pyfunc_load_torch_first_quiet_s": runs["torch-first"]["load_s"],
           "pyfunc_import_s": load["import_s"], "pyfunc_process_s": process_s, "pyfunc_predict_s": load["predict_s"],
           "serve_start_s": start_s, "invocation_first_s": first_s, "invocation_median_s": statistics.median(times),
           "prediction_shape": shape}
    res["load_average"] = os.getloadavg()[0]
    print(f"MLflow model of a tiny best-export; {args.samples} samples x {args.frames} frames -> {shape} "
          f"(load average {res['load_average']:.1f} on {os.cpu_count()} cores)")
    print(f"  pyfunc load_model {res['pyfunc_load_s']:.2f} s (target <= 5 s; it imports torch and checks the "
          f"model's requirements); with torch imported before and suppress_warnings=True "
          f"{res['pyfunc_load_torch_first_quiet_s']:.2f} s")
    print(f"  import mlflow+numpy {res['pyfunc_import_s']:.2f} s; whole fresh process {process_s:.2f} s; "
          f"predict {res['pyfunc_predict_s']:.3f} s")
    print(f"  mlflow models serve: up in {start_s:.1f} s; POST /invocations first {first_s:.3f} s, "
          f"median of {args.repeats} {res['invocation_median_s']:.3f} s (target <= 2 s)")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
