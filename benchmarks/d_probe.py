"""Can the frame discriminator see a distorted face? D_F alone, real clips vs warped copies.

A generator that lets every landmark wander a little per frame ends, 40 frames later, with a
face that is no longer a face (measured on trained models before this probe existed: shape
error 0.3-0.4 of the face radius at frame 40, against 0.08 for real clips). This probe asks
whether D_F can even learn to penalise that. It trains a fresh D_F (the trainer's class,
features and optimiser settings) for ``--steps`` Adam steps on real training windows against
copies of the same windows whose landmarks drift away from the face shape: a fixed random
non-rigid direction per landmark, growing linearly to ``--warp`` x the face's RMS radius at
frame 40. Head motion, speed and translation are untouched. Hinge loss 2.0 = chance, 0 = the
distortion is fully detected.

Side by side, on the same batches and the same initial weights:
  absolute   the paper's raw per-frame input [pos | vel | acc] (``model.d_centred=false``)
  centred    positions about the frame's centroid, centroid appended (the default)

Command:
  python benchmarks/d_probe.py [--data ../shared/data/real_dev_landmarks.npz] [--json]
Measured (dev set, 1 thread, width 64, lr 4e-4): hinge loss at steps 0/100/200/300
  absolute 2.13 / 1.95 / 1.99 / 1.99, centred 1.97 / 1.53 / 0.38 / 0.21 (final ratio 9.3x).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

from suhmo.config import make_config  # noqa: E402
from suhmo.data import BatchSampler, load_dataset  # noqa: E402
from suhmo.losses import hinge_d, sequence_features  # noqa: E402
from suhmo.models.discriminators import FrameDiscriminator  # noqa: E402
from suhmo.paths import dev_data  # noqa: E402
from suhmo.data import SPLIT_SEED  # noqa: E402

DEV = dev_data()


def warp(batch: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Landmarks drift along a random direction each, ``amount`` x the face radius at frame 40."""
    B, T = batch.shape[:2]
    d = torch.randn(B, 1, 68, 2, generator=gen)
    d = d / d.pow(2).sum(-1).mean(-1).sqrt()[..., None, None]
    first = batch[:, :1]
    radius = (first - first.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()[..., None, None]
    t = torch.arange(T, dtype=batch.dtype).view(1, T, 1, 1) / 40.0
    return batch + amount * radius * t * d


def probe(cfg, train_set, steps: int, amount: float, every: int) -> list[float]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    sampler = BatchSampler(train_set, cfg, seed=0)
    d_f = FrameDiscriminator(cfg.model.frame_d_hidden, spectral=cfg.model.spectral_norm)
    opt = torch.optim.Adam(d_f.parameters(), lr=cfg.optim.lr_d, betas=(cfg.optim.beta1, cfg.optim.beta2))
    n = cfg.train.batch_size
    curve = []
    for step in range(steps + 1):
        real = torch.from_numpy(sampler.next())
        feats = sequence_features(torch.cat([real, warp(real, amount, gen)]), cfg.model)[:, -cfg.data.seq_len:]
        scores = d_f(feats)
        loss = hinge_d(scores[:n], scores[n:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0:
            curve.append(round(float(loss.detach()), 3))
    return curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEV), help="landmark .npz (default: the shared dev set; "
                   "the embedded synthetic data when it is absent)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--warp", type=float, default=0.3, help="distortion at frame 40, x face radius")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = {"data.path": a.data} if Path(a.data).is_file() else {}
    base = {"model.frame_d_hidden": 64, "train.batch_size": 32, "optim.lr_d": 4e-4, **data}
    print(f"data: {data.get('data.path', 'embedded synthetic set')}; D_F width 64, lr 4e-4, warp {a.warp}")
    rows = []
    for name, centred in (("absolute", False), ("centred", True)):
        cfg = make_config("small", overrides={**base, "model.d_centred": centred})
        train_set, _ = load_dataset(cfg).split_by_person(cfg.data.test_fraction, SPLIT_SEED)
        curve = probe(cfg, train_set, a.steps, a.warp, a.every)
        rows.append({"features": name, "steps": list(range(0, a.steps + 1, a.every)), "hinge_loss": curve})
        print(f"{name:<9} hinge loss at steps {'/'.join(map(str, rows[-1]['steps']))}: "
              f"{' / '.join(f'{v:.2f}' for v in curve)}", flush=True)
    last = {r["features"]: r["hinge_loss"][-1] for r in rows}
    print(f"final loss ratio absolute / centred: {last['absolute'] / max(last['centred'], 1e-9):.1f}x "
          "(2.0 = chance)")
    if a.json:
        print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
