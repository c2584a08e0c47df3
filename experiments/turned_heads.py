"""Turned heads over 200 frames: GIFs of generated motion from references whose head is turned.

From the held-out persons of ``--data`` (split by person as the Trainer splits), the references
are real frames in the top tenth of |yaw proxy| (``suhmo.metrics.fidelity.pose_proxies``: the
nose against the jaw ends), spread over clips; each model generates ``--frames`` frames from the
same references (seeded). One GIF per model, the references side by side, plus one of the real
continuations of the same frames, and a line per model with the yaw proxy at frames 0 / 40 / 100
/ 200 averaged over the references (does a turned head stay turned?) against the real one.

Command:
  python experiments/turned_heads.py sem=RUN/best.pt pose3d=RUN2/best.pt \\
      [--data FILE] [--refs 4] [--frames 200] [--out experiments/results/turned]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_tables import small_gif  # noqa: E402

from suhmo.config import make_config  # noqa: E402
from suhmo.data import load_split  # noqa: E402
from suhmo.generate import load_model, sample  # noqa: E402
from suhmo.metrics.fidelity import pose_proxies  # noqa: E402
from suhmo.paths import dev_data  # noqa: E402

AT = (0, 40, 100, 200)


def turned_references(test, n: int, frames: int) -> np.ndarray:
    """``[n, frames + 1, 68, 2]`` real windows whose first frame's |yaw| is in the top tenth,
    at most one per clip, the most turned first."""
    picks = []
    for clip in test.clips:
        clip = np.asarray(clip, np.float32)
        if len(clip) <= frames:
            continue
        yaw = np.abs(pose_proxies(clip[: len(clip) - frames])["yaw"])
        i = int(np.argmax(yaw))
        picks.append((float(yaw[i]), clip[i:i + frames + 1]))
    if not picks:
        raise SystemExit(f"no held-out clip is longer than {frames} frames")
    yaws = np.array([y for y, _ in picks])
    top = [w for y, w in sorted(picks, key=lambda p: -p[0]) if y >= np.quantile(yaws, 0.9) or len(picks) < 10 * n]
    return np.stack(top[:n])


def yaw_line(label: str, seqs: np.ndarray) -> str:
    yaw = np.abs(pose_proxies(seqs)["yaw"])
    return f"{label:<24} |yaw| at frames {'/'.join(map(str, AT))}: " + " / ".join(
        f"{yaw[:, t].mean():.3f}" for t in AT if t < seqs.shape[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="LABEL=CHECKPOINT")
    p.add_argument("--data", default=str(dev_data().with_name("real_dev_landmarks_xl.npz")))
    p.add_argument("--refs", type=int, default=4)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results/turned")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if not Path(a.data).is_file():
        print(f"skipped: {a.data} not found", file=sys.stderr)
        return 2
    _, test = load_split(make_config("small", overrides={"data.path": a.data}))
    real = turned_references(test, a.refs, a.frames)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    small_gif(list(real), out / "real.gif", size=128, fps=test.fps)
    print(yaw_line("real continuation", real))
    for spec in a.models:
        label, _, ck = spec.partition("=")
        G, cfg = load_model(ck)
        seqs = sample(G, real[:, 0].copy(), a.frames, a.seed, init_vel=cfg.eval.init_vel)
        small_gif(list(seqs), out / f"{label}.gif", size=128, fps=test.fps)
        print(yaw_line(label, seqs))
    print(f"GIFs in {out}/ ({a.refs} references side by side, every other frame)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
