"""benchmarks/device_check.sh: the dry run on the CPU (the GPU run itself needs a CUDA machine)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"


def _run(*args, timeout=600):
    r = subprocess.run([str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    return r, json.loads(r.stdout.strip().splitlines()[-1])


def test_no_budget_skips_every_step_and_still_prints_the_table(tmp_path):
    out = tmp_path / "res" / "check.json"
    r, res = _run("--dry-run", "--budget", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "variant     compile  amp" in r.stdout
    assert [x["status"] for x in res["iterations"]] == ["skipped"] * 8
    assert res["search"]["status"] == "skipped" and res["dry_run"] is True
    assert json.loads(out.read_text()) == res


def test_without_cuda_the_real_check_refuses_with_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the real check would run")
    r, res = _run("--budget", "60")
    assert r.returncode == 2
    assert r.stdout.splitlines()[0].startswith("Error: no CUDA device here")
    assert res["error"] == "no CUDA device"


@pytest.mark.slow
def test_dry_run_runs_every_step_on_the_cpu(tmp_path):
    r, res = _run("--dry-run", "--budget", "850", timeout=900)  # a loaded CPU: generous
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert res["env"]["status"] == "ok" and res["env"]["torch"].startswith("2.")
    assert res["tests"]["status"] == "ok"  # the CUDA subset: skipped here, passed on a GPU
    rows = res["iterations"]
    assert [(x["variant"], x["compile"], x["amp"]) for x in rows][:2] == [("rnn", False, False),
                                                                       ("transformer", False, False)]
    for x in rows:
        assert x["status"] == "ok", x
        assert x["seconds_per_iter"] > 0 and x["timed_iters"] == 1
        assert x["compiled"] is x["compile"] and x["amp"] is x["amp"]
        assert (x["compile_seconds"] is not None) is x["compile"]
    for v in ("rnn", "transformer"):
        assert res["generate"][v]["finite"] and res["generate"][v]["frames"] == 20
    assert res["search"]["status"] == "ok" and "dry run: nothing started" in res["search"]["last_lines"][-1]
    assert "0.25 GPU each" in " ".join(res["search"]["last_lines"])
