"""How far generated heads keep the spread of their start poses, frame by frame, against real ones.

On the held-out persons of ``--data`` (split by person as the Trainer splits), ``--poses``
reference poses are frame 0 of evenly spread real 201-frame windows (the fidelity protocol's,
``experiments/targets.py --fidelity``); each model generates 4 sequences of 200 frames from each.
For each pose proxy (``suhmo.metrics.fidelity.pose_proxies``: yaw, pitch, roll) and each of
``--at`` frames it prints the proxy's standard deviation over the sequences and its correlation
with the reference's value, for the real continuations and for every model. Real heads keep the
spread of their start poses; heads that slide towards the population's mean pose lose it within
tens of frames (experiments/README.md, "Heads as fast as people and keeping their pose").

Command:
  python experiments/pose_spread.py LABEL=RUN/best.pt [LABEL2=...] [--data FILE] [--poses 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import held_out  # noqa: E402

from suhmo.generate import load_model, sample  # noqa: E402
from suhmo.metrics import APD_GROUP  # noqa: E402
from suhmo.metrics import fidelity as fid  # noqa: E402
from suhmo.metrics.landmark import real_windows  # noqa: E402
from suhmo.paths import dev_data  # noqa: E402


def spread_rows(seqs: np.ndarray, start: np.ndarray, at: list[int]) -> dict[str, list[tuple[float, float]]]:
    """``{proxy: [(sd over sequences, corr with the start value) per frame in at]}``."""
    poses, first = fid.pose_proxies(seqs), fid.pose_proxies(start)
    out = {}
    for p in fid.PROXIES:
        v0 = first[p]
        out[p] = [(float(poses[p][:, t].std()), float(np.corrcoef(poses[p][:, t], v0)[0, 1])) for t in at]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help="LABEL=CHECKPOINT")
    p.add_argument("--data", default=str(dev_data().with_name("real_dev_landmarks_xl.npz")))
    p.add_argument("--poses", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--at", default="0,20,40,100,200", help="frames, comma-separated (at most 200)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if not Path(a.data).is_file():
        print(f"skipped: {a.data} not found", file=sys.stderr)
        return 2
    at = [int(t) for t in a.at.split(",")]
    if not at or min(at) < 0 or max(at) > fid.HORIZON:
        print(f"--at {a.at}: frames between 0 and {fid.HORIZON}", file=sys.stderr)
        return 2
    _, test = held_out(a.data)
    win = real_windows(test.clips, fid.HORIZON + 1, stride=5)
    win = win[np.linspace(0, len(win), a.poses, endpoint=False).astype(int)]
    refs = np.repeat(win[:, 0], APD_GROUP, axis=0)
    rows = {"real continuation": spread_rows(win, win[:, 0], at)}
    for spec in a.models:
        label, _, ck = spec.partition("=")
        G, cfg = load_model(ck)
        rows[label] = spread_rows(sample(G, refs, fid.HORIZON, a.seed, init_vel=cfg.eval.init_vel), refs, at)
    print(f"held-out persons of {a.data}: {a.poses} reference poses; per frame: sd over sequences / corr "
          f"with the reference's value (roll in degrees)")
    print(f"{'':<24}{'proxy':<7}" + "".join(f"{'frame ' + str(t):>15}" for t in at))
    for label, r in rows.items():
        for proxy, cells in r.items():
            print(f"{label[:23]:<24}{proxy:<7}" + "".join(f"{f'{sd:.3g} / {c:.2f}':>15}" for sd, c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
