"""Generation: sampling from one reference pose, model loading, the generate CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from suhmo.utils import SuhmoError

TINY = {"data.seq_len": 16, "windows.tau_max": 16, "data.synth_clips": 8, "data.synth_seconds": 3.0,
        "train.iterations": 3, "train.eval_every": 3, "eval.samples": 4, "eval.frames": 40,
        "train.device": "cpu"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from suhmo.config import make_config
    from suhmo.train import Trainer

    out = tmp_path_factory.mktemp("gen") / "run"
    Trainer(make_config("tiny", overrides=TINY), out).fit()
    return out


@pytest.fixture(scope="module")
def model(run_dir):
    from suhmo.generate import load_model

    return load_model(run_dir / "last.pt")


@pytest.fixture(scope="module")
def refs():
    from suhmo.data import normalize_set, synthesize

    return normalize_set(synthesize(2, 1.0, seed=5)).clips[1][:3]


def test_sample_shapes_determinism_and_diversity(model, refs):
    from suhmo.generate import sample

    G, cfg = model
    a = sample(G, refs, 20, seed=1)
    assert a.shape == (3, 21, 68, 2) and a.dtype == np.float32
    np.testing.assert_allclose(a[:, 0], refs, atol=1e-6)  # frame 0 is the reference
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, sample(G, refs, 20, seed=1))  # deterministic given the seed
    assert not np.allclose(a, sample(G, refs, 20, seed=2))
    # one reference, several samples: the partner and initial velocity make them differ
    same = sample(G, np.repeat(refs[:1], 4, axis=0), 20, seed=3)
    assert np.abs(same[0] - same[1]).max() > 1e-5
    # without an initial velocity the partner alone still changes the outcome (G has no noise)
    still = [sample(G, refs[:1], 20, seed=s, init_vel=0.0) for s in (4, 5)]
    assert np.abs(still[0] - still[1]).max() > 1e-6


def test_sample_keeps_pairs_apart_across_chunks(model, refs):
    from suhmo.generate import sample

    G, _ = model
    whole = sample(G, refs, 12, seed=7)
    chunked = sample(G, refs, 12, seed=7, chunk=1)
    np.testing.assert_allclose(whole, chunked, atol=1e-5)


def test_sample_rejects_bad_input(model):
    from suhmo.generate import sample

    G, _ = model
    with pytest.raises(SuhmoError, match=r"expected pose\(s\) of shape \[68, 2\]"):
        sample(G, np.zeros((3, 67, 2)), 5, seed=0)
    with pytest.raises(SuhmoError, match="frames=0"):
        sample(G, np.zeros((68, 2)), 0, seed=0)


def test_load_model_from_file_folder_and_export(tmp_path, run_dir, model, refs):
    from suhmo.checkpoint import load_checkpoint, write_export
    from suhmo.config import Config
    from suhmo.generate import load_model, sample

    G, cfg = model
    ref = sample(G, refs, 8, seed=0)
    ck = load_checkpoint(run_dir / "last.pt")
    export = write_export(tmp_path / "export", ck["G"], Config.from_dict(ck["config"]))
    for path in (run_dir, export):
        G2, cfg2 = load_model(path)
        assert cfg2.to_dict() == cfg.to_dict() and not G2.training
        np.testing.assert_array_equal(sample(G2, refs, 8, seed=0), ref)
    with pytest.raises(SuhmoError, match="no such checkpoint file or model folder"):
        load_model(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    torch.save(ck["G"], tmp_path / "half" / "generator.pt")
    with pytest.raises(SuhmoError, match="generator.pt but no config.yaml"):
        load_model(tmp_path / "half")
    with pytest.raises(SuhmoError, match="neither generator.pt"):
        load_model(tmp_path)


def test_generate_cli(tmp_path, run_dir, refs):
    from suhmo.cli import cli, run_cli
    from suhmo.data import LandmarkSet, load_landmarks, normalize_clip, save_landmarks

    pose = tmp_path / "pose.npy"
    np.save(pose, refs[0] * 400 + 120)  # pixel coordinates: normalised like the data layer
    out = tmp_path / "gen.npz"
    res = CliRunner().invoke(cli, ["generate", "--checkpoint", str(run_dir / "last.pt"), "--reference", str(pose),
                                   "--frames", "10", "--samples", "3", "--seed", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ls = load_landmarks(out)
    assert len(ls.clips) == 3 and all(c.shape == (11, 68, 2) for c in ls.clips)
    first = ls.clips[0][0]
    assert 0 <= first.min() and first.max() <= 1
    assert all(np.allclose(c[0], first) for c in ls.clips)  # one reference pose
    assert not np.allclose(ls.clips[0], ls.clips[1])  # diverse samples

    # a dataset in pixels: its clip is normalised like load_dataset does, then frame 0 is used
    data = tmp_path / "data.npz"
    save_landmarks(data, LandmarkSet(clips=[refs * 300 + 50, refs * 200 + 10], fps=25.0))
    out2 = tmp_path / "gen2.npz"
    res = CliRunner().invoke(cli, ["generate", "--model", str(run_dir), "--reference-from", f"{data}:1",
                                   "--frames", "6", "--samples", "2", "--out", str(out2)])
    assert res.exit_code == 0, res.output
    expected = normalize_clip(refs * 200 + 10, "bbox", 1.1)[0][0]
    np.testing.assert_allclose(load_landmarks(out2).clips[0][0], expected, atol=1e-5)
    # generated output is already normalised: its frame 0 is taken as it is
    out3 = tmp_path / "gen3.npz"
    res = CliRunner().invoke(cli, ["generate", "--model", str(run_dir), "--reference-from", f"{out}:2",
                                   "--frames", "6", "--samples", "2", "--out", str(out3)])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(load_landmarks(out3).clips[1][0], first, atol=1e-6)

    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((68, 3)))
    base = ["generate", "--checkpoint", str(run_dir / "last.pt"), "--out", str(tmp_path / "x.npz")]
    for args, msg in [
        (["--reference", str(bad)], "must be a [68, 2] array"),
        (["--reference", str(tmp_path / "none.npy")], "reference pose file not found"),
        (["--reference-from", f"{data}:5"], "clip index 5 out of range"),
        (["--reference-from", str(tmp_path / "none.npz")], "file not found"),
        (["--image", str(tmp_path / "none.jpg")], "image not found"),
        (["--reference", str(pose), "--model", str(run_dir)], "exactly one of --checkpoint"),
        ([], "exactly one of --reference"),
    ]:
        res = CliRunner().invoke(cli, base + args)
        assert res.exit_code != 0
        assert run_cli(cli, base + args) == 2, args
    res = CliRunner().invoke(cli, base + ["--reference-from", f"{data}:5"])
    assert "clip index 5 out of range (the file has 2 clips" in str(res.exception)
    res = CliRunner().invoke(cli, base + ["--reference", str(bad)])
    assert "must be a [68, 2] array, got [68, 3]" in str(res.exception)
