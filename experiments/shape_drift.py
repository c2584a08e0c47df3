"""How fast does a trained generator lose the face? Shape error against frame index.

For each checkpoint (or export folder), sequences of ``--frames`` frames are generated from the
first frame of the first ``--refs`` clips of ``--data`` (one sample each, seed fixed). Per
frame, the shape error is the RMS landmark distance to frame 0 after removing translation and
scale (each frame centred on its centroid and divided by its RMS radius), in units of the face
radius. The same number for the real clips (their own frames 0..T) is printed as the yardstick:
real heads turn and talk, so it is not 0, but it stays flat (about 0.06-0.10 on the dev set).
A generator whose error grows linearly with t lets its landmarks wander apart: by frame 40 the
drawing is no longer a face (see ``experiments/README.md``, "Training diagnosis").

Command:
  python experiments/shape_drift.py RUN/last.pt [RUN2/last.pt ...] [--data FILE] [--frames 80]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from suhmo.config import make_config
from suhmo.data import load_dataset
from suhmo.generate import load_model, sample
from suhmo.paths import dev_data

DEV = dev_data()
AT = (1, 5, 10, 20, 40, 60, 80)


def shape_error(seqs: np.ndarray) -> np.ndarray:
    """``[K, T, 68, 2] -> [K, T]``: distance of each frame's normalised shape to frame 0's."""
    centred = seqs - seqs.mean(-2, keepdims=True)
    unit = centred / np.sqrt((centred ** 2).sum(-1).mean(-1))[..., None, None]
    return np.sqrt(((unit - unit[:, :1]) ** 2).sum(-1).mean(-1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default=str(DEV))
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--refs", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if not Path(a.data).is_file():
        print(f"skipped: {a.data} not found", file=sys.stderr)
        return 2
    clips = load_dataset(make_config("small", overrides={"data.path": a.data})).clips
    refs = np.stack([c[0] for c in clips[:a.refs]]).astype(np.float32)
    at = [t for t in AT if t <= a.frames]
    print(f"{'shape error at frame':<40}" + "".join(f"{t:>7}" for t in at))
    real = [np.asarray(c[:a.frames + 1]) for c in clips if len(c) > a.frames]
    err = shape_error(np.stack(real))
    print(f"{'real clips (' + str(len(real)) + ')':<40}" + "".join(f"{err[:, t].mean():>7.3f}" for t in at))
    for ck in a.checkpoints:
        G, cfg = load_model(ck)
        err = shape_error(sample(G, refs, a.frames, a.seed, init_vel=cfg.eval.init_vel))
        print(f"{ck[-40:]:<40}" + "".join(f"{err[:, t].mean():>7.3f}" for t in at))
    return 0


if __name__ == "__main__":
    sys.exit(main())
