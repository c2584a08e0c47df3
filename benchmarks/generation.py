"""Generation time against length: ``Generator.generate`` from one reference frame (plus a random
initial velocity) for T = 100, 200, 400, 800 frames, both variants, on 2 CPU threads.

Moderate size (not the paper's): hidden / MLP / embedding / feed-forward 256, 1 block, 1 head,
``--samples`` sequences (pairs of rows). The RNN keeps its cell state: constant work per
frame, the per-frame ratio column (time per frame at T / at the shortest T) stays at 1. The
Transformer attends to a key/value cache: each new frame costs one token's projections
(constant) plus attention over the t cached keys, which reads O(t) memory, so at this size
the per-frame time grows with T once the cache dominates (measured: ratio 1.3 / 2.2 / 3.6 at
T = 200 / 400 / 800, 16 samples, emb 256); re-encoding the history would cost O(t) projections
and O(t^2) attention per frame.

Command:
  python benchmarks/generation.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/train_step.py
import torch  # noqa: E402

from suhmo.config import make_config  # noqa: E402
from suhmo.models import build_generator  # noqa: E402

SIZE = {"model.hidden_g": 256, "model.mlp_g": 256, "model.emb_g": 256}


def time_generation(variant: str, frames: int, samples: int, repeats: int) -> float:
    cfg = make_config("paper", overrides={"model.variant": variant, **SIZE})
    torch.manual_seed(0)
    g = build_generator(cfg)
    ref = 0.3 + 0.4 * torch.rand(samples, 1, 68, 2)
    v0 = (torch.rand(samples, 1, 2) * 0.02 - 0.01).expand(samples, 68, 2).contiguous()
    g.generate(ref, 10, init_vel=v0)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = g.generate(ref, frames, init_vel=v0)
        times.append(time.perf_counter() - t)
    assert out.future.shape == (samples, frames, 68, 2) and torch.isfinite(out.future).all()
    return min(times)  # best of the repeats: the machine is shared, contention only adds time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--frames", default="100,200,400,800")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    lengths = [int(f) for f in a.frames.split(",")]
    rows = []
    print(f"{'variant':<12}{'frames':>7}{'samples':>8}{'seconds':>9}{'ms/frame':>10}{'per-frame ratio':>17}")
    for variant in ("rnn", "transformer"):
        base = None
        for T in lengths:
            sec = time_generation(variant, T, a.samples, a.repeats)
            per = sec / T
            base = base or per
            rows.append({"variant": variant, "frames": T, "samples": a.samples, "seconds": round(sec, 4),
                         "per_frame_ratio": round(per / base, 3)})
            print(f"{variant:<12}{T:>7}{a.samples:>8}{sec:>9.3f}{1000 * per:>10.2f}{per / base:>17.2f}", flush=True)
    if a.json:
        print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
