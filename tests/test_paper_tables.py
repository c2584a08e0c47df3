"""experiments/paper_tables.py end to end on a tiny budget: searches, training, scoring, the
markdown/JSON tables and the previews (real Ray, Optuna, MLflow and torch)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_table1_on_synthetic_data_writes_tables_and_previews(tmp_path, monkeypatch):
    monkeypatch.setenv("SUHMO_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "experiments" / "paper_tables.py"), "--table", "1", "--data", "synth",
           "--iterations", "2", "--seeds", "1", "--jobs", "1", "--search-trials", "1",
           "--out", str(out), "--work", str(tmp_path / "work")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = json.loads((out / "table1_synth.json").read_text())
    methods = [r["method"] for r in table["runs"]]
    assert methods == ["HiT-DVAE", "ACTOR", "Δ-based (RNN)", "MLE (RNN, L2 only)", "SUHMo-RNN",
                       "SUHMo-Transformer"]  # the paper's row order
    assert set(table["search"]) == {"rnn", "transformer", "actor", "hitdvae"}
    assert "actor.beta" in table["search"]["actor"]["sampled"]
    for run in table["runs"]:
        assert all(math.isfinite(run["metrics"][f"{k}_g{n}"]) for k in ("fd_frame", "fd_clip40", "apd")
                   for n in (40, 80)), run["method"]
    md = (out / "table1_synth.md").read_text()
    assert all(f"| {m} |" in md for m in methods)
    # previews carry the dataset in their names, so the dev and synthetic tables do not overwrite each other
    for slug in ("suhmo-rnn", "suhmo-transformer", "actor", "hit-dvae"):
        for suffix in ("4samples.gif", "4samples.png", "4references.png"):
            assert (out / f"table1_synth_{slug}_{suffix}").stat().st_size > 0
    assert not list(out.glob("table1_suhmo-*"))
