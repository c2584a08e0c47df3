"""Where the shared push comes from: over time, on seen and unseen persons, and in the data.

    python experiments/push_probe.py RUN/best.pt [RUN2/best.pt ...] [--data FILE] [--frames 200]

For each checkpoint (a semantic-space generator): from 256 references (64 poses of the held-out
persons, then of the train persons, 4 samples each) it generates ``--frames`` frames and prints
the mean over samples of ``z_t - z_0`` at t = 5 ... frames for the four dimensions pushed most
by frame 80, and the mean over all dimensions, in units of the real states' sd (the unit of
``targets.py --probe``'s shared push). Then the same push over the training windows themselves
(the real train persons and the procedural speakers that ``data.synth_mix`` mixes in) with their
per-frame rms change: the data cannot teach a push it does not have.

A push that is there on the train persons as on the held-out ones is G's own, not a pull towards
the training persons' mean shape; one that saturates in about ``1 / k`` frames (``k`` the
reverting integrator's rates, ~0.05 per frame for the shape coefficients) is a constant velocity
``b`` held against the reversion, ``b / k`` (experiments/README.md, "Every head moves alike;
the push no discriminator sees")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suhmo.data import BatchSampler, load_dataset  # noqa: E402
from suhmo.data.loading import load_synthetic  # noqa: E402
from suhmo.config import make_config  # noqa: E402
from suhmo.generate import load_model, sample  # noqa: E402
from suhmo.metrics.landmark import real_windows  # noqa: E402
from suhmo.paths import dev_data  # noqa: E402
from suhmo.data import SPLIT_SEED  # noqa: E402

TIMES = (5, 10, 20, 40, 80, 120, 200)


def _encode(space, x) -> np.ndarray:
    with torch.no_grad():
        return space.encode(torch.as_tensor(np.asarray(x, np.float32))).numpy().astype(np.float64)


def generated_push(G, cfg, clips, frames: int, sd: np.ndarray) -> str:
    win = real_windows(clips, 2, stride=5)
    refs = np.repeat(win[np.linspace(0, len(win), 64, endpoint=False).astype(int), 0], 4, axis=0)
    z = _encode(G.space, sample(G, refs, frames, 0, init_vel=cfg.eval.init_vel))
    m = (z - z[:, :1]).mean(0) / sd  # [T, D]
    times = [t for t in TIMES if t <= frames]
    top = np.argsort(-np.abs(m[min(80, frames)]))[:4]
    dims = "; ".join(f"dim {j} " + " ".join(f"{m[t, j]:+.2f}" for t in times) for j in top)
    return f"{dims} | mean |push| " + " ".join(f"{np.abs(m[t]).mean():.2f}" for t in times)


def data_push(space, ds, cfg) -> str:
    z = np.concatenate([_encode(space, BatchSampler(ds, cfg, seed=s, batch_size=512).next()) for s in range(4)])
    sd = z.reshape(-1, z.shape[-1]).std(0)
    push = np.abs((z[:, -1] - z[:, 0]).mean(0)) / sd
    vel = np.sqrt((np.diff(z, axis=1) ** 2).mean((0, 1)))
    return (f"{len(z)} windows of {z.shape[1]} frames: mean |E[z_T - z_0]| {push.mean():.2f}, largest "
            f"{push.max():.2f}; per-frame rms change x {vel[0]:.3f}, y {vel[1]:.3f}, roll {vel[3]:.3f}, "
            f"shape (mean) {vel[4:].mean():.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default=str(dev_data().with_name("real_dev_landmarks_large.npz")))
    p.add_argument("--frames", type=int, default=200)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if not Path(a.data).is_file():
        print(f"skipped: {a.data} not found", file=sys.stderr)
        return 2
    scfg = make_config("small", overrides={"data.path": a.data})
    train, test = load_dataset(scfg).split_by_person(scfg.data.test_fraction, seed=SPLIT_SEED)
    print(f"mean over 256 samples of z_t - z_0 / real sd, at t = {', '.join(str(t) for t in TIMES if t <= a.frames)}")
    for ck in a.checkpoints:
        G, cfg = load_model(ck)
        if not hasattr(G.space, "fit"):
            print(f"{ck}: not a semantic-space generator, skipped")
            continue
        sd = _encode(G.space, np.concatenate(test.clips)).std(0)
        for name, ds in (("held-out persons", test), ("train persons", train)):
            print(f"{ck} {name}: {generated_push(G, cfg, ds.clips, a.frames, sd)}")
    if hasattr(G.space, "fit"):  # the last checkpoint's space, loaded above
        dcfg = make_config("cpu", overrides={"data.path": a.data})
        print(f"data, real train persons: {data_push(G.space, train, dcfg)}")
        print(f"data, procedural speakers (data.synth_mix): {data_push(G.space, load_synthetic(dcfg), dcfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
