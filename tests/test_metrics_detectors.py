"""Detector stack with tiny TorchScript stand-ins of the same signatures; trainer + evaluate wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from suhmo.metrics import MetricOptions, compute
from suhmo.metrics import landmark as lm
from suhmo.metrics.detectors import detector_path, i3d_features, inception_features, load_detector
from suhmo.utils import SuhmoError


class TinyInception(torch.nn.Module):
    """``model(uint8 [N, 3, H, W], return_features=True) -> [N, dim]``, resizing internally."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=2)
        self.fc = torch.nn.Linear(4 * 4 * 4, dim)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise ValueError("expects uint8 images")
        y = F.interpolate(x.float() / 255.0, size=(75, 75), mode="bilinear", align_corners=False)
        y = F.adaptive_avg_pool2d(torch.relu(self.conv(y * 50.0)), 4).flatten(1)
        f = self.fc(y)
        return f if return_features else f.softmax(-1)


class TinyI3D(torch.nn.Module):
    """``model(float [N, 3, T, 224, 224] in [-1, 1], rescale=False, resize=False,
    return_features=True) -> [N, 400]``."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 4, (3, 8, 8), stride=(2, 8, 8))
        self.fc = torch.nn.Linear(4 * 8, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if x.shape[1] != 3 or bool(x.min() < -1.0) or bool(x.max() > 1.0):
            raise ValueError("expects [N, 3, T, H, W] in [-1, 1]")
        y = F.adaptive_avg_pool3d(torch.relu(self.conv(x + 1.0) * 20.0), (2, 2, 2)).flatten(1)
        f = self.fc(y)
        return f if return_features else f.softmax(-1)


@pytest.fixture(scope="module")
def detector_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("detectors")
    torch.manual_seed(0)
    torch.jit.script(TinyInception()).save(str(d / "inception-2015-12-05.pt"))
    torch.jit.script(TinyI3D()).save(str(d / "i3d_torchscript.pt"))
    return d


@pytest.fixture(scope="module")
def synth():
    from suhmo.data import normalize_set, synthesize

    return normalize_set(synthesize(4, 4.0, 0), "bbox", 1.1)


def test_missing_detector_names_file_folder_and_origin(tmp_path, monkeypatch):
    monkeypatch.setenv("SUHMO_DETECTORS", str(tmp_path / "weights"))
    with pytest.raises(SuhmoError) as e:
        detector_path("inception")
    msg = str(e.value)
    assert "inception-2015-12-05.pt" in msg and str(tmp_path / "weights") in msg
    assert "nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch" in msg and "\n" not in msg
    with pytest.raises(SuhmoError, match="i3d_torchscript.pt.*StyleGAN-V"):
        detector_path("i3d", tmp_path)
    (tmp_path / "i3d_torchscript.pt").write_bytes(b"not torchscript")
    with pytest.raises(SuhmoError, match="not a loadable TorchScript"):
        load_detector("i3d", tmp_path)


def test_feature_collection_is_batch_independent(detector_folder, synth, monkeypatch):
    from suhmo.metrics.raster import rasterize

    monkeypatch.setenv("SUHMO_DETECTORS", str(detector_folder))
    inc = load_detector("inception")  # found through the environment variable
    assert load_detector("inception") is inc  # loaded once per process
    imgs = rasterize(synth.clips[0][:7])
    a, b = inception_features(inc, imgs, batch_size=3), inception_features(inc, imgs, batch_size=100)
    assert a.shape == (7, 64) and np.allclose(a, b, atol=1e-5) and a.std(0).max() > 0
    i3d = load_detector("i3d")
    vids = rasterize(synth.clips[0][:40].reshape(4, 10, 68, 2))  # [4, 10, 3, 224, 224]
    f1, f2 = i3d_features(i3d, vids, batch_size=1), i3d_features(i3d, vids, batch_size=4)
    assert f1.shape == (4, 400) and np.allclose(f1, f2, atol=1e-5)


def test_detector_metrics_end_to_end_with_cached_reference(detector_folder, synth, tmp_path):
    real = lm.real_windows(synth.clips, stride=20)
    opts = MetricOptions(sequences=real, real=list(synth.clips), real_fps=25.0, num_samples=len(real),
                         stride=20, detector_dir=detector_folder, cache_dir=tmp_path, batch_size=32)
    names = ["fid", "tfid40", "fvd10"]
    same = compute(names, opts)
    assert set(same) == set(names)
    assert all(abs(v) < 1e-6 for v in same.values())  # the reference windows themselves
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "metrics").glob("*.npz"))
    assert cached == sorted(names)
    moved = real.copy()
    moved[:, 1:] += np.linspace(0, 0.1, 40)[None, :, None, None]  # drift to the right
    worse = compute(names, opts.replace(sequences=moved))
    assert all(worse[k] > 1e-3 for k in names), worse
    ramp = compute(["tfid40"], opts.replace(sequences=moved, motion_mode="ramp"))
    assert ramp["tfid40"] != pytest.approx(worse["tfid40"])  # its own reference statistics
    assert len(list((tmp_path / "metrics").glob("tfid40-*.npz"))) == 2


def test_trainer_uses_the_stack_and_evaluate_cli(tmp_path, detector_folder):
    from suhmo.cli import cli
    from suhmo.config import make_config
    from suhmo.train import Trainer

    cfg = make_config("tiny", overrides={"data.seq_len": 16, "windows.tau_max": 16, "data.synth_clips": 8,
                                         "data.synth_seconds": 4.0, "train.iterations": 4,
                                         "train.eval_every": 2, "eval.samples": 8, "eval.frames": 16,
                                         "train.device": "cpu"})
    out = tmp_path / "run"
    metrics = Trainer(cfg, out).fit()
    assert {"fd_frame", "fd_clip40", "fd_motion", "apd", "drift", "motion_energy_err"} <= set(metrics)
    assert np.isfinite(metrics["fd_clip40"]) and metrics["fd_clip40"] > 0
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]

    r = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(out / "last.pt"), "--samples", "8",
                                 "--runs", "2", "--frames", "80", "--metrics", "landmark,tfid40",
                                 "--detectors", str(detector_folder), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "fd_clip40" in r.output and "tfid40" in r.output
    rec = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    assert rec["protocol"].startswith("landmark+tfid40/f80/n8/r2") and len(rec["per_run"]) == 2
    assert "fd_clip40_std" in rec["results"] and rec["split"] == "eval"
    r = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(out / "last.pt"), "--metrics", "fvd",
                                 "--samples", "4"])
    assert r.exit_code != 0 and "unknown metric 'fvd'" in str(r.exception or r.output)
