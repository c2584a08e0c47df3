"""Speed of the metric stacks.

    .venv/bin/python benchmarks/metrics.py [--json] [--sequences 1000]

Rows: the whole landmark stack (all keys, via ``suhmo.metrics.compute``) on N sequences of
40 scored frames against CACHED reference statistics (the reference is built first and
timed separately), and the rasteriser in frames per second (one pixel per landmark, lines,
EMA motion maps). Data: the embedded synthetic talking heads (no files needed). With
``--json`` the last line is ``{"rows": [{"stack", "sequences", "frames", "seconds"}, ...],
"raster": [{"mode", "frames", "seconds", "fps"}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sequences", type=int, default=1000)
    ap.add_argument("--raster-frames", type=int, default=4000)
    args = ap.parse_args()
    os.environ.setdefault("SUHMO_HOME", tempfile.mkdtemp(prefix="suhmo-bench-"))

    from suhmo.data import normalize_set, synthesize
    from suhmo.metrics import MetricOptions, compute
    from suhmo.metrics import landmark as lm
    from suhmo.metrics.raster import motion_maps, rasterize

    real = normalize_set(synthesize(24, 12.0, 0), "bbox", 1.1)
    gen_src = normalize_set(synthesize(24, 12.0, 1), "bbox", 1.1)
    windows = lm.real_windows(gen_src.clips, lm.SCORED_FRAMES + 1, 2)
    rng = np.random.default_rng(0)
    seqs = windows[rng.choice(len(windows), args.sequences, replace=len(windows) < args.sequences)]
    opts = MetricOptions(sequences=seqs, real=list(real.clips), real_fps=real.fps,
                         preprocessing={"bench": True}, frames=lm.SCORED_FRAMES, num_samples=args.sequences)
    rows = []
    t = time.perf_counter()
    compute(["landmark"], opts)  # builds and caches the reference statistics
    rows.append({"stack": "landmark (incl. building the reference)", "sequences": args.sequences,
                 "frames": lm.SCORED_FRAMES, "seconds": round(time.perf_counter() - t, 3)})
    t = time.perf_counter()
    res = compute(["landmark"], opts)  # cached reference from disk
    rows.append({"stack": "landmark", "sequences": args.sequences, "frames": lm.SCORED_FRAMES,
                 "seconds": round(time.perf_counter() - t, 3)})

    raster = []
    frames = seqs[:, 1:].reshape(-1, 68, 2)[: args.raster_frames]
    for mode in ("points", "lines"):
        n = len(frames) if mode == "points" else min(len(frames), 1000)
        t = time.perf_counter()
        for lo in range(0, n, 200):
            rasterize(frames[lo:min(n, lo + 200)], lines=mode == "lines")
        dt = time.perf_counter() - t
        raster.append({"mode": mode, "frames": n, "seconds": round(dt, 3), "fps": round(n / dt, 1)})
    n_maps = max(1, min(len(seqs), args.raster_frames // lm.SCORED_FRAMES))
    t = time.perf_counter()
    for lo in range(0, n_maps, 25):
        motion_maps(seqs[lo:min(n_maps, lo + 25), 1:], "ema")
    dt = time.perf_counter() - t
    raster.append({"mode": "motion maps (ema, 40-frame sequences)", "frames": n_maps * lm.SCORED_FRAMES,
                   "seconds": round(dt, 3), "fps": round(n_maps * lm.SCORED_FRAMES / dt, 1)})

    for r in rows:
        print(f"{r['stack']:45s} {r['sequences']:6d} seq x {r['frames']} frames  {r['seconds']:7.2f} s")
    for r in raster:
        print(f"raster {r['mode']:38s} {r['frames']:6d} frames  {r['seconds']:7.2f} s  {r['fps']:9.1f} frames/s")
    print("landmark values (synthetic seed 1 vs seed 0): "
          + ", ".join(f"{k}={v:.3f}" for k, v in res.items()))
    if args.json:
        print(json.dumps({"rows": rows, "raster": raster}))


if __name__ == "__main__":
    main()
