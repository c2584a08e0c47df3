"""The CUDA test subset (``pytest -m cuda``; benchmarks/device_check.sh runs it on a GPU machine).

Skipped without a CUDA device. Tiny models: the point is that training (eager, bf16, compiled),
resuming, generation and export run on the device and agree with the CPU where they should.
"""

import numpy as np
import pytest
import torch

from suhmo import speed
from suhmo.config import make_config
from suhmo.models import build_generator
from suhmo.train import Trainer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _metrics(sample_fn, step):
    refs = np.full((2, 68, 2), 0.5, np.float32) + np.linspace(-0.2, 0.2, 68, dtype=np.float32)[None, :, None]
    gen = sample_fn(refs, 10, 0)
    return {"finite": float(np.isfinite(gen).all())}


@pytest.mark.parametrize("variant", ["rnn", "transformer"])
@pytest.mark.parametrize("amp", [False, True])
def test_training_runs_on_cuda(tmp_path, variant, amp):
    cfg = make_config("tiny", overrides={"model.variant": variant, "train.device": "cuda", "train.amp": amp,
                                         "train.iterations": 4, "train.eval_every": 2})
    tr = Trainer(cfg, tmp_path, metrics_fn=_metrics)
    m = tr.fit()
    assert torch.backends.cudnn.benchmark
    assert next(tr.G.parameters()).is_cuda and next(tr.D.parameters()).is_cuda
    assert tr.amp is amp and m["finite"] == 1.0 and np.isfinite(m["loss_g"])
    # resume on the device from last.pt
    cfg.train.iterations = 6
    assert Trainer(cfg, tmp_path, metrics_fn=_metrics).fit()["finite"] == 1.0


@pytest.mark.parametrize("variant", ["rnn", "transformer"])
def test_compiled_training_on_cuda(tmp_path, variant):
    cfg = make_config("tiny", overrides={"model.variant": variant, "train.device": "cuda", "train.compile": True,
                                         "train.iterations": 3, "train.eval_every": 3})
    tr = Trainer(cfg, tmp_path, metrics_fn=_metrics)
    assert tr.compile_seconds is not None, "inductor failed on this GPU machine"
    assert tr.fit()["finite"] == 1.0


@pytest.mark.parametrize("variant", ["rnn", "transformer"])
def test_generation_on_cuda_matches_cpu(variant):
    cfg = make_config("tiny", overrides={"model.variant": variant})
    torch.manual_seed(0)
    G = build_generator(cfg)
    obs = 0.3 + 0.4 * torch.rand(4, 1, 68, 2)
    ref = G.generate(obs, 50).future
    got = G.cuda().generate(obs.cuda(), 50).future.cpu()
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)


def test_pinned_batches_reach_the_device():
    a = np.random.default_rng(0).random((4, 45, 68, 2), dtype=np.float32)
    t = speed.to_device(a, torch.device("cuda"))
    torch.cuda.synchronize()
    assert t.is_cuda and torch.equal(t.cpu(), torch.from_numpy(a))
