"""End to end through a real Ray Tune + Optuna search (3 tiny trials, ASHA) logging to real
MLflow on sqlite, then best-export, TorchScript check, generate from the export, and the UI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from search_util import tiny_search, tiny_space

pytestmark = pytest.mark.slow

SPACE = tiny_space()


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    uri, outcome, _, _ = tiny_search(tmp, SPACE, "e2e")
    return uri, outcome, tmp


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def test_search_hierarchy_in_mlflow(searched):
    uri, outcome, _ = searched
    plan = outcome.plan
    c = _client(uri)
    runs = c.search_runs([plan.experiment_id])
    parents = [r for r in runs if r.data.tags.get("suhmo.kind") == "search"]
    assert [p.info.run_id for p in parents] == [plan.parent_run_id]
    assert parents[0].info.status == "FINISHED"
    assert {"search.num_samples", "study_seed"} & set(parents[0].data.params)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == plan.parent_run_id]
    assert len(children) == 3 == len(outcome.rows)
    tune_state = {r.trial_id: r.state for r in outcome.rows}
    print("trial states:", sorted(tune_state.values()), "mlflow:", sorted(r.info.status for r in children))
    for r in children:
        # closed with the status Tune saw: finished -> FINISHED, stopped by ASHA -> KILLED
        want = {"finished": "FINISHED", "stopped": "KILLED", "error": "FAILED"}[tune_state[r.data.tags["trial_id"]]]
        assert r.info.status == want == r.data.tags["status"], (r.info.status, tune_state)
        assert r.data.tags["stopped_by_scheduler"] == ("true" if want == "KILLED" else "false")
        assert "optim.lr_g" in r.data.params and "seed" in r.data.params and "model.hidden_g" in r.data.params
        assert "best_fd_clip40" in r.data.metrics and "best_fd_clip40_step" in r.data.metrics
        step = int(r.data.metrics["best_fd_clip40_step"])
        assert c.list_artifacts(r.info.run_id, f"checkpoints/step_{step}")
        assert c.list_artifacts(r.info.run_id, "evals/step_4")
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_best_export_from_the_search(searched):
    from suhmo.cli import cli, run_cli
    from suhmo.data import load_landmarks
    from suhmo.generate import load_model

    uri, outcome, tmp = searched
    plan = outcome.plan
    out = tmp / "best"
    assert run_cli(cli, ["best-export", "--tracking-uri", uri, "--experiment", "e2e", "--out", str(out)]) == 0
    prov = json.loads((out / "provenance.json").read_text())
    c = _client(uri)
    top = c.search_runs([plan.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{plan.parent_run_id}'",
                        order_by=["metrics.best_fd_clip40 ASC"], max_results=1)[0]
    assert prov["run_id"] == top.info.run_id and prov["step"] == int(top.data.metrics["best_fd_clip40_step"])
    # TorchScript == the checkpoint's generator on the same input
    ck = Path(c.download_artifacts(prov["run_id"], f"checkpoints/step_{prov['step']}/last.pt", str(tmp / "ck")))
    G, _ = load_model(ck)
    ts = torch.jit.load(str(out / "generator.ts"))
    g = torch.Generator().manual_seed(0)
    obs = 0.3 + 0.4 * torch.rand(4, 1, 68, 2, generator=g)
    vel = 0.01 * torch.randn(4, 68, 2, generator=g)
    assert torch.allclose(ts(obs, vel, 20), G.generate(obs, 20, init_vel=vel).future, atol=1e-5)
    # generate from the export alone
    npz = tmp / "gen.npz"
    assert run_cli(cli, ["generate", "--model", str(out), "--reference", str(out / "reference.npy"),
                         "--frames", "25", "--samples", "2", "--out", str(npz)]) == 0
    clips = load_landmarks(npz).clips
    assert len(clips) == 2 and all(cl.shape == (26, 68, 2) and np.isfinite(cl).all() for cl in clips)


def test_ui_lists_the_search_runs(searched):
    from tracking.ui import UIServer, free_port

    uri, outcome, tmp = searched
    plan = outcome.plan
    with UIServer(uri, free_port(), log_path=tmp / "ui.log") as server:
        runs = server.api("runs/search", {"experiment_ids": [plan.experiment_id]})["runs"]
    assert len(runs) == 4
    assert sum(1 for r in runs for t in r["data"]["tags"]
               if t["key"] == "mlflow.parentRunId" and t["value"] == plan.parent_run_id) == 3
    assert server.proc.poll() is not None
