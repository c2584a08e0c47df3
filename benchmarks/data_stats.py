"""Synthetic talking heads vs the real dev clips: per-clip motion statistics side by side.

    .venv/bin/python benchmarks/data_stats.py                 # 48 clips x 8 s, seed 0 (the default set)
    .venv/bin/python benchmarks/data_stats.py --json          # last line: one JSON object
    .venv/bin/python benchmarks/data_stats.py --real PATH.npz --clips 96 --seed 3

Both sets go through the same bbox normalisation (``suhmo.data.stats``); each statistic is
computed per clip, then summarised by the median and the min .. max over clips. The real
set defaults to ``../shared/data/real_dev_landmarks.npz`` (``$SUHMO_DEV_DATA`` overrides);
without it only the synthetic column is printed. Also times ``load_dataset`` on the default
synthetic configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from suhmo.config import make_config  # noqa: E402
from suhmo.data import load_dataset, load_landmarks, synthesize  # noqa: E402
from suhmo.data.stats import STAT_KEYS, set_stats  # noqa: E402
from suhmo.paths import dev_data  # noqa: E402

UNITS = {"speed": "units/s", "roll_range": "deg", "yaw_range": "nose/iod", "pitch_range": "nose/iod",
         "mouth_range": "lips/iod", "mouth_max": "lips/iod"}


def summary(values: np.ndarray) -> dict:
    return {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real", default=str(dev_data()))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    syn = synthesize(args.clips, args.seconds, args.seed)
    t_synth = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_dataset(make_config("paper"))
    t_load = time.perf_counter() - t0
    rows = {"synthetic": set_stats(syn)}
    real_path = Path(args.real)
    if real_path.is_file():
        rows["real"] = set_stats(load_landmarks(real_path))

    out = {"clips": {"synthetic": len(syn)}, "synth_s": round(t_synth, 3), "load_dataset_s": round(t_load, 3)}
    if "real" in rows:
        out["clips"]["real"] = len(rows["real"]["speed"])
    print(f"synthetic: {len(syn)} clips x {args.seconds:g} s, seed {args.seed} ({t_synth:.2f} s to make; "
          f"load_dataset(paper defaults) {t_load:.2f} s)")
    print(f"real:      {real_path if 'real' in rows else '(not found: synthetic only)'}")
    head = f"{'statistic':<13}{'unit':<10}" + "".join(f"{k + ' median [min .. max]':<36}" for k in rows)
    print(head)
    for key in STAT_KEYS:
        cells = []
        for name, st in rows.items():
            s = summary(st[key])
            out.setdefault(key, {})[name] = {k: round(v, 4) for k, v in s.items()}
            cells.append(f"{s['median']:8.3f}  [{s['min']:.3f} .. {s['max']:.3f}]".ljust(36))
        ratio = ""
        if "real" in rows:
            r = np.median(rows["synthetic"][key]) / max(np.median(rows["real"][key]), 1e-12)
            out[key]["median_ratio_synth_over_real"] = round(float(r), 3)
            ratio = f"x{r:.2f}"
        print(f"{key:<13}{UNITS[key]:<10}" + "".join(cells) + ratio)
    if args.json:
        print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
