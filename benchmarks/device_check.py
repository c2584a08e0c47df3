"""The GPU check (``benchmarks/device_check.sh`` runs this): one table and one JSON line.

On a machine with a CUDA GPU, within ``--budget`` seconds (default 290, the check's limit is
5 minutes), each step in its own process with what is left of the budget:

1. ``env``        torch, the device, bf16 support;
2. ``tests``      the CUDA test subset (``pytest -m cuda``);
3. ``iter``       paper-size training iterations (batch 120, hidden 1024, seq 40, obs 5; the real
                  ``Trainer`` loop, data and pinned-memory transfers included), RNN and Transformer,
                  eager fp32 and bf16 (``train.amp``), then compiled (``train.compile``) fp32 and bf16
                  with their compile seconds; the median of the timed iterations after warm-up;
4. ``generate``   generation of 800 frames from one reference pose (paper-size G, both variants);
5. ``search``     a 4-trial search (tiny models, no MLflow) with ``--gpus-per-trial 0.25``: four
                  trials share the GPU; the wall time and the trials' results.

Steps that would start after the budget is spent are listed as skipped; the compiled rows come
last because they are the ones a short budget can afford least.

``--dry-run`` runs every step on the CPU at the tiny size (1 timed iteration, 20 frames; the
compiled rows with torch.compile's ``eager`` backend: dynamo and the probe, no C++ build), in
this process but for ``env``, and the search as ``suhmo-search run --dry-run`` (validated,
nothing started): the script's own test (tests/test_device_check.py) and a check before a GPU
machine is at hand.

Commands:
  benchmarks/device_check.sh                      # on the GPU machine
  benchmarks/device_check.sh --out benchmarks/results/device_check-h200.json
  benchmarks/device_check.sh --dry-run            # on a CPU
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/train_step.py (a shared CPU)
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"train.batch_size": 120}  # the paper preset's widths: hidden 1024, seq 40, obs 5
ITER_ROWS = [  # (variant, compile, amp): eager first, compiled last (the budget may not reach them)
    ("rnn", False, False), ("transformer", False, False), ("rnn", False, True), ("transformer", False, True),
    ("rnn", True, False), ("transformer", True, False), ("rnn", True, True), ("transformer", True, True),
]
SEARCH_SPACE = """\
description: device check - 4 tiny trials sharing one GPU
base:
  preset: tiny
  model.variant: rnn
  train.iterations: 40
  train.eval_every: 20
  eval.samples: 16
  eval.frames: 20
params:
  optim.lr_g: {type: loguniform, low: 3.0e-5, high: 3.0e-3}
objective: fd_clip20:min
scheduler: fifo
budget: {num_samples: 4, max_concurrent: 4}
sampler: random
seed: 0
"""


# ---------------------------------------------------------------------------------- steps
def step_env(a) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "cuda_available": cuda,
            "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
            "bf16": bool(cuda and torch.cuda.is_bf16_supported()) or not cuda,
            "cuda_version": torch.version.cuda, "host": platform.node()}


def step_tests(a) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(a.time_left, 1))
    tail = (r.stdout.strip().splitlines() or [""])[-1]
    # exit 5 = nothing collected/selected; all skipped (no CUDA) is exit 0 with "skipped" in the tail
    return {"ok": r.returncode == 0, "summary": tail, "returncode": r.returncode}


def _iteration_config(variant: str, compile_: bool, amp: bool, dry: bool):
    from suhmo.config import make_config

    over = {"model.variant": variant, "train.compile": compile_, "train.amp": amp, "train.progress": False,
            "train.device": "cpu" if dry else "cuda", "train.eval_every": 10**6}
    return make_config("tiny" if dry else "paper", overrides={**({} if dry else PAPER), **over})


def step_iter(a) -> dict:
    """``a.variant``, ``a.compile``, ``a.amp``: median seconds per training iteration."""
    import torch

    from suhmo.train import Trainer

    warmup, timed = (1, 1) if a.dry_run else (2, 3)
    if a.dry_run and a.compile:
        from suhmo import speed

        speed.BACKEND = "eager"  # the dry run checks the plumbing; inductor's C++ build takes minutes on a CPU
    cfg = _iteration_config(a.variant, a.compile, a.amp, a.dry_run)
    cfg.train.iterations = warmup + timed + 1
    stamps: list[float] = []

    def should_stop() -> bool:  # polled after every iteration
        if cfg.train.device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return False

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        tr = Trainer(cfg, d, metrics_fn=lambda sample_fn, step: {}, should_stop=should_stop, resume=False)
        setup = time.perf_counter() - t0
        tr.fit()
    per_iter = [b - a_ for a_, b in zip(stamps, stamps[1:])][warmup - 1:]
    peak = torch.cuda.max_memory_allocated() / 2**20 if cfg.train.device == "cuda" else None
    return {"seconds_per_iter": round(statistics.median(per_iter), 4), "timed_iters": len(per_iter),
            "compile_seconds": None if tr.compile_seconds is None else round(tr.compile_seconds, 1),
            "compiled": tr.compile_seconds is not None, "amp": tr.amp, "setup_seconds": round(setup, 1),
            "peak_cuda_mib": None if peak is None else round(peak)}


def step_generate(a) -> dict:
    import numpy as np
    import torch

    from suhmo.config import make_config
    from suhmo.models import build_generator

    frames = 20 if a.dry_run else 800
    dev = torch.device("cpu" if a.dry_run else "cuda")
    out = {}
    for variant in ("rnn", "transformer"):
        cfg = make_config("tiny" if a.dry_run else "paper", overrides={"model.variant": variant})
        G = build_generator(cfg).to(dev)
        obs = (0.3 + 0.4 * torch.rand(16, 1, 68, 2)).to(dev)  # 8 pairs, one reference frame each
        G.generate(obs, 2)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fut = G.generate(obs, frames).future
        if dev.type == "cuda":
            torch.cuda.synchronize()
        out[variant] = {"seconds": round(time.perf_counter() - t, 3), "frames": frames, "samples": 16,
                        "finite": bool(np.isfinite(fut.cpu().numpy()).all())}
    return out


def step_search(a) -> dict:
    with tempfile.TemporaryDirectory() as d:
        space = Path(d) / "device_check.yaml"
        space.write_text(SEARCH_SPACE)
        cmd = [sys.executable, "-m", "launch.cli", "run", "--space", str(space), "--num-samples", "4",
               "--max-concurrent", "4", "--gpus-per-trial", "0.25", "--cpus-per-trial", "1",
               "--tracking-uri", "none", "--storage", str(Path(d) / "search"), "--experiment", "device-check"]
        if a.dry_run:
            cmd.append("--dry-run")
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(a.time_left, 1),
                           env={**os.environ, "SUHMO_HOME": d})
        lines = (r.stdout + r.stderr).strip().splitlines()
    return {"ok": r.returncode == 0, "seconds": round(time.perf_counter() - t, 1), "dry_run": a.dry_run,
            "last_lines": lines[-4:]}


STEPS = {"env": step_env, "tests": step_tests, "iter": step_iter, "generate": step_generate, "search": step_search}


# ---------------------------------------------------------------------------------- driver
def _run_step(name: str, extra: list[str], a, deadline: float) -> dict:
    """One step in its own process, limited to what is left of the budget (dry run: in this
    process, except ``env``, which checks the child-process path)."""
    left = deadline - time.monotonic()
    if left < 5:
        return {"status": "skipped", "why": "budget spent"}
    if a.dry_run and name != "env":
        sub = argparse.Namespace(**{**vars(a), "time_left": left})
        for flag, value in zip(extra[::2], extra[1::2]):
            setattr(sub, flag.lstrip("-").replace("-", "_"), value if flag == "--variant" else bool(int(value)))
        t = time.perf_counter()
        try:
            res = STEPS[name](sub)
        except Exception as e:  # noqa: BLE001 - reported in the table
            return {"status": "failed", "wall_s": round(time.perf_counter() - t, 1), "error": repr(e)[:300]}
        return {"status": "ok", "wall_s": round(time.perf_counter() - t, 1), **res}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--time-left", str(int(left))] + extra
    if a.dry_run:
        cmd.append("--dry-run")
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall_s": round(time.perf_counter() - t, 1)}
    wall = round(time.perf_counter() - t, 1)
    last = (r.stdout.strip().splitlines() or [""])[-1]
    try:
        res = json.loads(last)
    except json.JSONDecodeError:
        err = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "failed", "wall_s": wall, "error": err[:300]}
    return {"status": "ok" if r.returncode == 0 else "failed", "wall_s": wall, **res}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, search validated only")
    p.add_argument("--budget", type=float, default=290.0, help="seconds for all steps together")
    p.add_argument("--out", default=None, help="also write the JSON object to this file")
    p.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    p.add_argument("--time-left", type=float, default=300.0, help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--compile", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--amp", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.compile, a.amp = bool(a.compile), bool(a.amp)
    if a.step:  # a child process: one JSON line
        print(json.dumps(STEPS[a.step](a)), flush=True)
        return 0

    start = time.monotonic()
    deadline = start + a.budget
    res: dict = {"dry_run": a.dry_run, "budget_s": a.budget}
    res["env"] = _run_step("env", [], a, deadline)
    if not a.dry_run and not res["env"].get("cuda_available"):
        print("Error: no CUDA device here; run benchmarks/device_check.sh --dry-run on a CPU")
        print(json.dumps({**res, "error": "no CUDA device"}))
        return 2
    res["tests"] = _run_step("tests", [], a, deadline)
    rows = []
    eager = [r for r in ITER_ROWS if not r[1]]
    compiled = [r for r in ITER_ROWS if r[1]]
    for variant, comp, amp in eager:
        rows.append({"variant": variant, "compile": comp, "amp": amp,
                     **_run_step("iter", ["--variant", variant, "--compile", str(int(comp)), "--amp", str(int(amp))],
                                 a, deadline)})
    res["generate"] = _run_step("generate", [], a, deadline)
    res["search"] = _run_step("search", [], a, deadline)
    for variant, comp, amp in compiled:
        rows.append({"variant": variant, "compile": comp, "amp": amp,
                     **_run_step("iter", ["--variant", variant, "--compile", str(int(comp)), "--amp", str(int(amp))],
                                 a, deadline)})
    res["iterations"] = rows
    res["wall_s"] = round(time.monotonic() - start, 1)

    env = res["env"]
    size = "tiny (dry run, CPU)" if a.dry_run else "paper (batch 120, hidden 1024)"
    print(f"device check: {env.get('device')} | torch {env.get('torch')} | CUDA {env.get('cuda_version')} | "
          f"bf16 {env.get('bf16')} | size {size} | {res['wall_s']} s of {a.budget:g}")
    print(f"CUDA tests: {res['tests'].get('status')} {res['tests'].get('summary', res['tests'].get('why', ''))}")
    print(f"{'variant':<12}{'compile':<9}{'amp':<7}{'s/iter':>9}{'compile s':>11}{'peak MiB':>10}  status")
    for r in rows:
        print(f"{r['variant']:<12}{str(r['compile']):<9}{'bf16' if r['amp'] else 'fp32':<7}"
              f"{_fmt(r.get('seconds_per_iter')):>9}{_fmt(r.get('compile_seconds')):>11}"
              f"{_fmt(r.get('peak_cuda_mib')):>10}  {r['status']}"
              + ("" if r["status"] == "ok" or "compiled" not in r or r["compiled"] == r["compile"]
                 else " (compile failed: eager)"))
    g = res["generate"]
    for v in ("rnn", "transformer"):
        if v in g:
            print(f"generate {v:<12} {g[v]['frames']} frames x {g[v]['samples']}: {g[v]['seconds']} s "
                  f"(finite {g[v]['finite']})")
    if g.get("status") != "ok":
        print(f"generate: {g.get('status')} {g.get('error', g.get('why', ''))}")
    s = res["search"]
    print(f"search 4 trials, --gpus-per-trial 0.25{' (dry run)' if a.dry_run else ''}: {s.get('status')}, "
          f"{s.get('seconds', '-')} s")
    line = json.dumps(res)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(line + "\n")
    print(line)
    ok = all(x.get("status") in ("ok", "skipped") for x in [res["tests"], res["generate"], res["search"], *rows])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
