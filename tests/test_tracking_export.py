"""A small search logged to real MLflow by real tiny Trainer runs (no Ray), then best-export:
the pick matches an independent MLflow query, the TorchScript export matches the checkpoint,
`suhmo generate --model DIR` works from the export alone, the registry alias resolves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tracking

TRIALS = {  # trial name -> overrides of the tiny preset
    "t_lr_low": {"optim.lr_g": 5e-5, "train.seed": 0},
    "t_lr_high": {"optim.lr_g": 3e-4, "train.seed": 1},
}
ITERS, EVERY = 12, 4
SMALL = {"data.seq_len": 16, "windows.tau_max": 16, "data.synth_clips": 8, "data.synth_seconds": 3.0,
         "eval.frames": 16, "eval.samples": 8, "train.device": "cpu", "train.iterations": ITERS,
         "train.eval_every": EVERY, "train.threads": 1}


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """Run the search once for the module: (uri, experiment_id, parent_run_id, run ids, objective, tmp)."""
    from suhmo.config import make_config
    from suhmo.train import Trainer

    tmp = tmp_path_factory.mktemp("search")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUHMO_HOME", str(tmp / "home"))
        uri = f"sqlite:///{(tmp / 'home' / 'mlflow.db').as_posix()}"
        exp = tracking.setup_experiment(uri, "export test")
        space = tmp / "space.yaml"
        space.write_text("optim.lr_g: {loguniform: [1.0e-5, 1.0e-3]}\n")
        probe = make_config("tiny")
        objective = (probe.train.select_metric, probe.train.select_mode)
        pid = tracking.start_search_run(uri, exp, space_file=space, cli_options={"preset": "tiny"}, study_seed=0,
                                        run_name="export-search", objectives=[objective])
        ids = {}
        for name, over in TRIALS.items():
            cfg = make_config("tiny", overrides={**SMALL, **over})
            with tracking.TrialLogger(uri, exp, pid, trial_id=name, trial_name=name, config=cfg.flat(),
                                      seed=cfg.train.seed, objectives=[objective]) as lg:
                box = {}

                def report(step, metrics, ckpt, lg=lg, box=box):
                    refs = np.stack([c[0] for c in box["trainer"].eval_set.clips[:2]])
                    lg.log_eval(step, metrics, ckpt, box["trainer"].sample_fn(refs, 8, 0))

                trainer = Trainer(cfg, tmp / name, report=report)
                box["trainer"] = trainer
                trainer.fit()
                ids[name] = lg.run_id
        tracking.finish_search_run(uri, pid, {"trials": len(TRIALS)})
        yield uri, exp, pid, ids, objective, tmp


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def test_search_logged_parent_children_metrics_params_artifacts(search):
    from suhmo.config import make_config

    uri, exp, pid, ids, (metric, _), _ = search
    c = _client(uri)
    runs = c.search_runs([exp])
    assert len(runs) == 1 + len(TRIALS)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == pid]
    assert {r.info.run_id for r in children} == set(ids.values())
    keys = set(make_config("tiny").flat())
    for r in children:
        assert r.info.status == "FINISHED"
        assert keys <= set(r.data.params) and "seed" in r.data.params
        steps = [m.step for m in c.get_metric_history(r.info.run_id, metric)]
        assert steps == list(range(EVERY, ITERS + 1, EVERY))
        assert any(k.startswith("loss") for k in r.data.metrics), r.data.metrics.keys()
        assert r.data.metrics[f"best_{metric}"] == min(m.value for m in c.get_metric_history(r.info.run_id, metric))
        step = int(r.data.metrics[f"best_{metric}_step"])
        files = {f.path for f in c.list_artifacts(r.info.run_id, f"checkpoints/step_{step}")}
        assert files == {f"checkpoints/step_{step}/last.pt"}
        evals = {f.path for f in c.list_artifacts(r.info.run_id, f"evals/step_{EVERY}")}
        assert {f"evals/step_{EVERY}/{n}" for n in ("samples.gif", "motion_map.png", "metrics.json")} <= evals


@pytest.fixture(scope="module")
def exported(search):
    import time

    from suhmo.cli import cli, run_cli

    uri, exp, pid, ids, _, tmp = search
    out = tmp / "export"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUHMO_HOME", str(tmp / "home"))
        t0 = time.perf_counter()
        rc = run_cli(cli, ["best-export", "--tracking-uri", uri, "--experiment", "export test", "--out", str(out),
                           "--register", "suhmo_gen", "--frames", "12"])
        print(f"best-export took {time.perf_counter() - t0:.1f} s")
    assert rc == 0
    return out


def test_best_export_picks_the_best_checkpoint(search, exported):
    uri, exp, pid, ids, (metric, mode), _ = search
    for name in ("generator.pt", "config.yaml", "generator.ts", "metrics.json", "provenance.json", "README.md",
                 "sample.gif", "sample.png", "reference.npy"):
        assert (exported / name).is_file(), name
    prov = json.loads((exported / "provenance.json").read_text())
    # independent query: MLflow orders the children on the best-so-far metric
    top = _client(uri).search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{pid}'",
                                   order_by=[f"metrics.best_{metric} {'ASC' if mode == 'min' else 'DESC'}"],
                                   max_results=1)[0]
    assert prov["run_id"] == top.info.run_id and prov["parent_run_id"] == pid
    assert prov["step"] == int(top.data.metrics[f"best_{metric}_step"])
    assert prov["value"] == pytest.approx(top.data.metrics[f"best_{metric}"])
    assert prov["experiment"] == "export test"
    m = json.loads((exported / "metrics.json").read_text())
    assert m["step"] == prov["step"] and m["metrics"][metric] == pytest.approx(prov["value"])
    card = (exported / "README.md").read_text()
    assert top.info.run_id in card and "sample.gif" in card
    # registry: a version of the logged MLflow model, reachable by its alias
    c = _client(uri)
    mv = c.get_model_version_by_alias("suhmo_gen", "champion")
    assert mv.run_id == top.info.run_id and mv.source == prov["mlflow_model"]["model_uri"]
    assert prov["registry"]["version"] == str(mv.version)
    got = Path(c.download_artifacts(top.info.run_id, f"exports/step_{prov['step']}/generator.ts",
                                    str(exported.parent / "dl")))
    assert got.read_bytes() == (exported / "generator.ts").read_bytes()


def test_torchscript_export_matches_the_checkpoint(search, exported):
    from suhmo.data import test_partner
    from suhmo.generate import load_model, sample

    uri, *_ = search
    prov = json.loads((exported / "provenance.json").read_text())
    ck = Path(_client(uri).download_artifacts(prov["run_id"], f"checkpoints/step_{prov['step']}/last.pt",
                                              str(exported.parent / "ck")))
    G_ck, _ = load_model(ck)
    G_ex, cfg = load_model(exported)
    ts = torch.jit.load(str(exported / "generator.ts"))
    rng = np.random.default_rng(3)
    ref = np.load(exported / "reference.npy")[None].repeat(3, 0) + rng.normal(0, 0.005, (3, 68, 2)).astype(np.float32)
    pairs = np.stack([ref, test_partner(ref, rng)], 1).reshape(6, 1, 68, 2)
    obs = torch.from_numpy(pairs.astype(np.float32))
    vel = torch.from_numpy(rng.uniform(-0.01, 0.01, (6, 68, 2)).astype(np.float32))
    expected = G_ck.generate(obs, 15, init_vel=vel).future
    assert torch.allclose(ts(obs, vel, 15), expected, atol=1e-5)
    assert torch.equal(G_ex.generate(obs, 15, init_vel=vel).future, expected)
    np.testing.assert_array_equal(sample(G_ex, ref, 10, seed=5), sample(G_ck, ref, 10, seed=5))
    # the scripted file runs with torch alone: suhmo made unimportable in a fresh interpreter
    code = ("import sys; sys.modules['suhmo'] = None\n"
            "import torch\n"
            f"G = torch.jit.load({str(exported / 'generator.ts')!r})\n"
            "y = G(torch.rand(2, 1, 68, 2), torch.zeros(2, 68, 2), 7)\n"
            "assert y.shape == (2, 7, 68, 2) and torch.isfinite(y).all(); print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=exported, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_generate_from_the_export_alone(exported, tmp_path):
    from suhmo.cli import cli, run_cli
    from suhmo.data import load_landmarks

    out = tmp_path / "motion.npz"
    rc = run_cli(cli, ["generate", "--model", str(exported), "--reference", str(exported / "reference.npy"),
                       "--frames", "30", "--samples", "3", "--out", str(out)])
    assert rc == 0
    ls = load_landmarks(out)
    assert len(ls.clips) == 3 and all(c.shape == (31, 68, 2) for c in ls.clips)
    assert all(np.isfinite(c).all() for c in ls.clips)
    assert not np.allclose(ls.clips[0][-1], ls.clips[0][0])  # it moves


def test_best_export_unknown_metric_lists_known(search, capsys):
    from suhmo.cli import cli, run_cli

    uri, *_ = search
    rc = run_cli(cli, ["best-export", "--tracking-uri", uri, "--metric", "fid_video"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown metric 'fid_video'" in err and "known:" in err and err.count("\n") == 1


# ---------------------------------------------------------------------- the MLflow model
@pytest.fixture
def fluent(search):
    """MLflow's fluent API pointed at the test store (put back afterwards)."""
    from tracking.mlflow_model import fluent_uri

    uri, *_ = search
    with fluent_uri(uri):
        yield uri


def _pixel_reference(exported, tmp_path) -> tuple[np.ndarray, Path]:
    """The export's reference pose in pixels (as a photo gives it), saved as POSE.npy."""
    pix = (np.load(exported / "reference.npy") * 380 + 60).astype(np.float32)
    path = tmp_path / "pose_px.npy"
    np.save(path, pix)
    return pix, path


def test_mlflow_model_from_the_registry_moves_like_the_cli(search, exported, fluent, tmp_path):
    import mlflow

    from suhmo.cli import cli, run_cli
    from suhmo.data import load_landmarks
    from suhmo.generate import as_normalised, load_model

    uri, exp, pid, ids, (metric, _), _ = search
    prov = json.loads((exported / "provenance.json").read_text())
    m = mlflow.pyfunc.load_model("models:/suhmo_gen@champion")
    sig = m.metadata.signature
    assert sig.inputs.input_names() == ["reference"] and sig.inputs.inputs[0].shape == (-1, 68, 2)
    assert {p.name: p.default for p in sig.params.params} == {"frames": 120, "samples": 4, "seed": 0}
    pix, pose = _pixel_reference(exported, tmp_path)
    got = m.predict({"reference": pix[None]}, params={"frames": 40, "samples": 2, "seed": 1})
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (2, 41, 68, 2)
    out = tmp_path / "cli.npz"
    assert run_cli(cli, ["generate", "--model", str(exported), "--reference", str(pose), "--frames", "40",
                         "--samples", "2", "--seed", "1", "--out", str(out)]) == 0
    cli_motion = np.stack(load_landmarks(out).clips)
    np.testing.assert_allclose(got, cli_motion, atol=1e-5)  # TorchScript vs eager: same motion
    assert not np.allclose(got[:, -1], got[:, 0], atol=1e-4)  # and it moves
    # normalised input, several references (each repeated `samples` times in a row), defaults
    _, cfg = load_model(exported)
    norm = as_normalised(pix[None], cfg)[0]
    two = m.predict({"reference": np.stack([pix, norm * 0.9 + 0.05])}, params={"frames": 5, "samples": 3, "seed": 2})
    assert two.shape == (6, 6, 68, 2)
    np.testing.assert_allclose(two[:3, 0], np.broadcast_to(norm, (3, 68, 2)), atol=1e-6)
    np.testing.assert_allclose(two[3:, 0], np.broadcast_to(norm * 0.9 + 0.05, (3, 68, 2)), atol=1e-6)
    assert m.predict({"reference": norm[None]}).shape == (4, 121, 68, 2)
    np.testing.assert_array_equal(m.predict({"reference": norm[None]}, params={"frames": 7, "seed": 3}),
                                  m.predict({"reference": norm[None]}, params={"frames": 7, "seed": 3}))
    for bad, says in (({"frames": 0}, "frames=0"), ({"frames": 10000, "samples": 200}, "frames in all")):
        with pytest.raises(Exception, match=says):
            m.predict({"reference": norm[None]}, params=bad)

    # the LoggedModel: linked to the trial run and the metrics of the selected step, card as note
    c = _client(uri)
    model_id = prov["mlflow_model"]["model_id"]
    lm = c.get_logged_model(model_id)
    assert lm.source_run_id == prov["run_id"] and str(lm.status) in ("READY", "LoggedModelStatus.READY")
    at_step = {x.key: x for x in lm.metrics}
    assert at_step[metric].value == pytest.approx(prov["value"]) and at_step[metric].step == prov["step"]
    assert at_step[metric].run_id == prov["run_id"]
    card = (exported / "README.md").read_text()
    assert lm.tags["mlflow.note.content"] == card
    outputs = c.get_run(prov["run_id"]).outputs.model_outputs
    assert any(o.model_id == model_id and o.step == prov["step"] for o in outputs)
    mv = c.get_model_version_by_alias("suhmo_gen", "champion")
    assert mv.source == f"models:/{model_id}" and mv.description == card
    assert {"name": "suhmo_gen", "version": mv.version} in json.loads(
        c.get_logged_model(model_id).tags["mlflow.modelVersions"])
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=str(tmp_path / "m")))
    assert (local / "MLmodel").is_file() and (local / "serving_input_example.json").is_file()
    assert "torch==" in (local / "requirements.txt").read_text()


def test_mlflow_model_loads_with_torch_and_numpy_only(search, exported):
    """In a fresh interpreter where suhmo and tracking cannot be imported."""
    uri, *_ = search
    code = ("import sys; sys.modules['suhmo'] = None; sys.modules['tracking'] = None\n"
            "import numpy as np, mlflow\n"
            f"mlflow.set_tracking_uri({uri!r}); mlflow.set_registry_uri({uri!r})\n"
            "m = mlflow.pyfunc.load_model('models:/suhmo_gen@champion')\n"
            f"ref = np.load({str(exported / 'reference.npy')!r})[None]\n"
            "y = m.predict({'reference': ref}, params={'frames': 9, 'samples': 2, 'seed': 0})\n"
            "assert y.shape == (2, 10, 68, 2) and np.isfinite(y).all(), y.shape\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=exported.parent,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


@pytest.mark.slow
def test_served_model_answers_invocations_like_the_cli(search, exported, tmp_path):
    """A real `mlflow models serve -m models:/suhmo_gen@champion --env-manager local` on loopback."""
    from suhmo.cli import cli, run_cli
    from suhmo.data import load_landmarks
    from tracking.ui import ModelServer, free_port

    uri, *_ = search
    pix, pose = _pixel_reference(exported, tmp_path)
    server = ModelServer("models:/suhmo_gen@champion", uri, free_port(), log_path=tmp_path / "serve.log")
    try:
        server.start(timeout_s=300)
        body = {"inputs": {"reference": pix[None].tolist()}, "params": {"frames": 40, "samples": 2, "seed": 1}}
        served = np.asarray(server.invoke(body)["predictions"], np.float32)
        bad = urllib_error(server, {"inputs": {"reference": [[1.0, 2.0]]}})
    finally:
        server.stop()
    assert served.shape == (2, 41, 68, 2)
    out = tmp_path / "cli.npz"
    assert run_cli(cli, ["generate", "--model", str(exported), "--reference", str(pose), "--frames", "40",
                         "--samples", "2", "--seed", "1", "--out", str(out)]) == 0
    np.testing.assert_allclose(served, np.stack(load_landmarks(out).clips), atol=1e-5)
    assert bad is not None and 400 <= bad[0] < 600 and "68" in bad[1], bad


def urllib_error(server, payload):
    """(status, body) of a request the server refuses, or None if it answered 200."""
    import urllib.error

    try:
        server.invoke(payload)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    return None
