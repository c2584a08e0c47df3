"""Checkpoint files: round trip with weights_only, RNG states, clear errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from suhmo.checkpoint import (copy_checkpoint, decode_state, encode_state, load_checkpoint, rng_state,
                              save_checkpoint, set_rng_state)
from suhmo.config import Config
from suhmo.utils import SuhmoError


def test_round_trip_loads_with_weights_only(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    sampler_state = {"rng": np.random.default_rng(5).bit_generator.state, "batches": np.int64(7),
                     "perm": np.arange(6, dtype=np.uint32)}
    payload = {"step": 12, "config": Config().to_dict(), "seed": 3, "G": net.state_dict(),
               "opt_g": opt.state_dict(), "rng": rng_state(), "sampler": sampler_state,
               "metrics": {"fd_clip40": 1.5}, "best": {"metric": "fd_clip40", "value": 1.5, "step": 12}}
    path = save_checkpoint(tmp_path / "last.pt", payload)
    raw = torch.load(path, weights_only=True)  # the file itself is weights_only-safe
    assert raw["format"] == "suhmo-checkpoint" and raw["step"] == 12
    ck = load_checkpoint(path)
    assert Config.from_dict(ck["config"]).to_dict() == Config().to_dict()
    for k, v in net.state_dict().items():
        assert torch.equal(ck["G"][k], v)
    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-3)
    opt2.load_state_dict(ck["opt_g"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert ck["sampler"]["batches"] == 7
    assert ck["sampler"]["perm"].dtype == np.uint32 and ck["sampler"]["perm"].tolist() == list(range(6))
    assert ck["sampler"]["rng"] == sampler_state["rng"]
    assert ck["metrics"] == {"fd_clip40": 1.5}
    best = copy_checkpoint(path, tmp_path / "best.pt")
    assert load_checkpoint(best)["step"] == 12
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_rng_state_restores_every_generator():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    saved = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(()).item())
    random.random(), np.random.rand(), torch.rand(())
    set_rng_state(decode_state(encode_state(saved)))
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == first


def test_missing_and_corrupt_files_are_one_line_errors(tmp_path):
    with pytest.raises(SuhmoError, match=r"nope\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(SuhmoError, match=r"bad\.pt: not a readable checkpoint") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(SuhmoError, match=r"other\.pt: not a suhmo checkpoint"):
        load_checkpoint(other)
    # half a file (as after a crash during a non-atomic write) is also reported, not a traceback
    good = save_checkpoint(tmp_path / "good.pt", {"step": 1})
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SuhmoError, match=r"trunc\.pt: not a readable checkpoint"):
        load_checkpoint(trunc)


def test_generator_state_prefers_the_moving_average():
    from suhmo.checkpoint import generator_state

    g, avg = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    assert generator_state({"G": g}) is g
    assert generator_state({"G": g, "G_ema": avg}) is avg


def test_migrate_steps_an_old_checkpoint_up_to_the_current_version():
    from suhmo.checkpoint import MODEL_FIELDS_V1, VERSION, migrate

    old = {"step": 3, "config": {"model": {"variant": "rnn", "d_centred": True}}, "G": {}}
    new = migrate(dict(old), 0)
    assert new["version"] == VERSION
    assert new["config"]["model"] == {**MODEL_FIELDS_V1, "variant": "rnn", "d_centred": True}
    assert migrate({"config": {"model": 5}}, 1)["config"] == {"model": 5}  # malformed: left to the checks
    current = {"config": {"model": {"d_centred": True}}}
    assert migrate(dict(current), VERSION)["config"] == current["config"]  # nothing to do
