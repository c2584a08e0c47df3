"""benchmarks/vs_reference.py: the authors' solver side by side with ours (tiny size)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "vs_reference.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
import vs_reference  # noqa: E402


def _run(*args):
    # a process of its own: the stand-in modules must not leak into the test session
    r = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, json.loads(r.stdout.strip().splitlines()[-1])


def test_without_a_checkout_it_skips_with_a_message(tmp_path):
    out, res = _run(str(tmp_path / "nowhere"), "--json")
    assert out.startswith("skipped: no checkout of the authors' code at")
    assert res == {"skipped": True, "checkout": str(tmp_path / "nowhere"), "rows": []}


@pytest.mark.skipif(not (vs_reference.DEFAULT_CHECKOUT / "nets" / "solver.py").is_file(),
                    reason="the authors' code is not beside this checkout")
def test_alternates_their_iteration_and_ours():
    out, res = _run("--size", "tiny", "--rounds", "2", "--variants", "rnn,transformer", "--modes", "grid", "--amp",
                    "--json")
    assert not res["skipped"] and len(res["rows"]) == 2
    from suhmo.speed import amp_supported

    amp = amp_supported(torch.device("cpu"))  # without native bf16 the script says so and times fp32 only
    assert ("no native bf16 products" in out) is not amp
    for row in res["rows"]:
        if amp:  # ours under train.amp, a third side in the rotation
            assert row["amp_s"] > 0 and len(row["speedup_amp_per_round"]) == 2
            assert row["speedup_amp"] == pytest.approx(row["authors_s"] / row["amp_s"], rel=0.02)
        else:
            assert "amp_s" not in row
        assert row["authors_s"] > 0 and row["ours_s"] > 0 and len(row["speedup_per_round"]) == 2
        assert row["speedup"] == pytest.approx(row["authors_s"] / row["ours_s"], rel=0.02)
        assert row["authors_cpu_s"] > 0 and row["ours_cpu_s"] > 0
        assert row["speedup_cpu"] == pytest.approx(row["authors_cpu_s"] / row["ours_cpu_s"], rel=0.02)
    assert "their G runs twice per iteration" in out and "What differs in the work done" in out


def test_reference_config_matches_the_compared_sizes():
    class Cfg:  # their Config's defaults that reference_config overrides
        pass

    utils = type("U", (), {"Config": Cfg})
    c = vs_reference.reference_config(utils, "transformer", "small", "sampled")
    assert (c.batch_size, c.hidden_size, c.hidden_size_D, c.emb_dim, c.emb_dim_D) == (32, 256, 256, 256, 64)
    assert c.cnn_config == c.interaction_config == 100 and c.pool_type == "late_pool" and not c.init_metrics
    g = vs_reference.reference_config(utils, "rnn", "small", "grid")
    assert not hasattr(g, "cnn_config") and g.obs_len == 5 and g.seq_len == 40
