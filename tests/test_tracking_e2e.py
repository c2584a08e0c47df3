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
        # closed with the status Tune saw: finished -> FINISHED, stopped by ASHA -> FINISHED (not a
        # failure) with stopped_by_scheduler and the outcome saying so, error -> FAILED
        state = tune_state[r.data.tags["trial_id"]]
        want = {"finished": "FINISHED", "stopped": "FINISHED", "error": "FAILED"}[state]
        assert r.info.status == want == r.data.tags["status"], (r.info.status, tune_state)
        assert r.data.tags["stopped_by_scheduler"] == ("true" if state == "stopped" else "false")
        assert r.data.tags["outcome"].startswith({"finished": "completed", "error": "failed",
                                                  "stopped": "stopped early by the scheduler"}[state])
        assert "optim.lr_g" in r.data.params and "seed" in r.data.params and "model.hidden_g" in r.data.params
        assert "best_fd_clip40" in r.data.metrics and "best_fd_clip40_step" in r.data.metrics
        step = int(r.data.metrics["best_fd_clip40_step"])
        assert c.list_artifacts(r.info.run_id, f"checkpoints/step_{step}")
        assert c.list_artifacts(r.info.run_id, "evals/step_4")
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_best_export_from_the_search(searched, capsys):
    from suhmo.cli import cli, run_cli
    from suhmo.data import load_landmarks
    from suhmo.generate import load_model

    uri, outcome, tmp = searched
    plan = outcome.plan
    out = tmp / "best"
    assert run_cli(cli, ["best-export", "--tracking-uri", uri, "--experiment", "e2e", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    files = sorted(p.name for p in out.iterdir())
    assert {"sample.png", "reference.npy", "README.md", "generator.ts"} <= set(files)
    assert "  " + "  ".join(files) in printed.splitlines(), printed  # lists every file it wrote
    prov = json.loads((out / "provenance.json").read_text())
    # the model card puts each distance beside a frozen face and real data, with a plain verdict
    card = (out / "README.md").read_text()
    scale = prov["scale"]
    assert "## On what scale" in card and "| distance (lower is better) | this model | frozen face | real data |" in card
    v = prov["value"]
    assert f"| fd_clip40 | {v:.4g} | {scale['frozen face']['fd_clip40']:.4g} | {scale['real data']['fd_clip40']:.4g} |" in card
    worse_than_frozen = v >= scale["frozen face"]["fd_clip40"]
    assert ("worse than a frozen face" in card) == (worse_than_frozen or "worse than a frozen face on" in card)
    assert ("worse than a frozen face" in printed) == worse_than_frozen
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


def test_ui_opens_on_the_trials_in_a_real_browser(searched):
    """`suhmo-search ui` as a user starts it; the printed address rendered by headless Chromium
    shows the trial runs and the objective's column (not MLflow's GenAI overview)."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from browser_util import find_chromium, rendered_dom, screenshot
    from mlflow import MlflowClient
    from tracking.ui import free_port

    if find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the browser check of the UI is skipped")
    uri, outcome, tmp = searched
    plan = outcome.plan
    trials = [r.info.run_name for r in MlflowClient(uri).search_runs(
        [plan.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{plan.parent_run_id}'")]
    exe = Path(sys.executable).parent / "suhmo-search"
    proc = subprocess.Popen([str(exe), "ui", "--tracking-uri", uri, "--port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url, seen, t0 = None, [], time.time()
        while url is None and time.time() - t0 < 240:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.match(r"MLflow UI: (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, "".join(seen)
        assert f"/#/experiments/{plan.experiment_id}/runs?" in url, url
        dom = rendered_dom(url)
        shot = screenshot(url, Path(os.environ.get("SUHMO_UI_SCREENSHOT") or tmp / "ui.png"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert shot.stat().st_size > 10_000
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"(?s)<style.*?</style>", " ", dom)))
    assert "Runs - Experiment" in text, text[:3000]  # the runs page ...
    assert "Overview" not in text and "Model training" in text  # ... of the model-training view, not GenAI's
    assert all(name in text for name in trials), (trials, text[:3000])
    assert f"{len(trials)} matching runs" in text  # one row per trial (the parent is filtered out)
    for column in ("best_fd_clip40", "best_fd_clip40_step", "outcome", "optim.lr_g"):
        assert f" {column} " in text, (column, text[:3000])


def test_leaderboard_shows_the_scale_and_runnable_hints(searched):
    """The leaderboard puts the objective beside a frozen face and real data; its next: hints
    spell the commands as the shell finds them (suhmo.hints)."""
    from launch.leaderboard import render_report
    from suhmo import hints
    from suhmo.metrics.scale import scale_for_config

    _, outcome, _ = searched
    lines: list[str] = []
    render_report(outcome, echo=lines.append)
    text = "\n".join(lines)
    scale = scale_for_config(outcome.plan.resolved_space().base_config())
    want = (f"scale of fd_clip40 (same data and protocol): frozen face {scale['frozen face']['fd_clip40']:.4g}, "
            f"real data {scale['real data']['fd_clip40']:.4g}; best trial ")
    assert want in text, text
    assert f"fd_frame {scale['frozen face']['fd_frame']:.4g} / {scale['real data']['fd_frame']:.4g}" in text, text
    assert f"  {hints.suhmo()} render motion.npz --grid 4 --motion-map --out motion.gif" in lines, text
    assert any(ln.startswith(f"  {hints.suhmo_search()} ui") for ln in lines), text


def test_trial_portrait_on_the_artifact_page_in_a_real_browser(searched):
    """Each trial run holds the bundled portrait moved by its best checkpoint (portrait.gif, a
    moving face inside a still border); MLflow's artifact page shows it, as headless Chromium
    renders it."""
    import cv2
    from PIL import Image, ImageSequence

    from browser_util import find_chromium, rendered_dom, screenshot
    from tracking.ui import UIServer, free_port

    uri, outcome, tmp = searched
    plan = outcome.plan
    c = _client(uri)
    children = c.search_runs([plan.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{plan.parent_run_id}'")
    with_portrait = [r for r in children if any(a.path == "portrait.gif" for a in c.list_artifacts(r.info.run_id))]
    assert with_portrait, "no trial run has portrait.gif"
    run = with_portrait[0]
    step = int(run.data.metrics["best_fd_clip40_step"])
    assert c.list_artifacts(run.info.run_id, f"evals/step_{step}")  # beside samples.gif of the best step
    assert f"evals/step_{step}/portrait.gif" in {a.path for a in c.list_artifacts(run.info.run_id, f"evals/step_{step}")}
    gif = Path(c.download_artifacts(run.info.run_id, "portrait.gif", str(tmp / "portrait")))
    with Image.open(gif) as im:
        frames = [np.asarray(f.convert("RGB")).astype(int) for f in ImageSequence.Iterator(im)]
    assert len(frames) >= 2
    ring = lambda f: np.concatenate([f[:2].ravel(), f[-2:].ravel(), f[:, :2].ravel(), f[:, -2:].ravel()])  # noqa: E731
    assert all(np.array_equal(ring(f), ring(frames[0])) for f in frames)  # a still border ...
    assert max(np.abs(f - frames[0]).max() for f in frames) > 40  # ... around a moving face

    if find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the browser check is skipped")
    with UIServer(uri, free_port(), log_path=tmp / "ui-portrait.log") as server:
        url = f"{server.url}/#/experiments/{plan.experiment_id}/runs/{run.info.run_id}/artifactPath/portrait.gif"
        dom = rendered_dom(url)
        shot = screenshot(url, tmp / "portrait-page.png")
    assert '<img alt="portrait.gif"' in dom, dom[-3000:]
    # the face is on the page: the GIF's first frame found in the screenshot
    page = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB).astype(np.float32)
    score = cv2.matchTemplate(page, frames[0].astype(np.float32), cv2.TM_CCOEFF_NORMED).max()
    assert score > 0.7, score
