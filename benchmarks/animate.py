"""Time and size of `suhmo animate` on the bundled 512 x 512 portrait.

    .venv/bin/python benchmarks/animate.py [--model DIR] [--frames 120] [--threads 2] [--json]

What `suhmo animate --model DIR --frames 120 --out face.mp4` does, phase by phase, in one
process: load the model, generate the motion from the portrait's pose, warp the photo for
every frame (suhmo.animate), write the MP4 (OpenCV mp4v) and, for comparison, a GIF.
Without ``--model`` a tiny model is trained first (a few iterations, not timed): the warp's
cost does not depend on the model, the generation's hardly at these sizes. Target of the
portrait issue: 120 frames in <= 10 s on 2 cores, MP4 <= 2 MB. With ``--json`` the last
line is ``{"frames", "size", "load_s", "generate_s", "warp_s", "warp_ms_per_frame",
"mp4_write_s", "mp4_mb", "total_mp4_s", "gif_write_s", "gif_mb"}``.
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


def tiny_model(out: Path) -> Path:
    from suhmo.config import make_config
    from suhmo.train import Trainer

    over = {"data.seq_len": 16, "windows.tau_max": 16, "data.synth_clips": 8, "data.synth_seconds": 3.0,
            "train.iterations": 3, "train.eval_every": 3, "eval.samples": 4, "eval.frames": 40,
            "train.device": "cpu"}
    Trainer(make_config("tiny", overrides=over), out).fit()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="export / training folder or checkpoint")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from suhmo import animate as an
    from suhmo.generate import load_model
    from suhmo.render import write_video

    with tempfile.TemporaryDirectory(prefix="suhmo-bench-animate-") as tmp:
        tmp = Path(tmp)
        model = args.model or tiny_model(tmp / "run")
        t0 = time.perf_counter()
        image, lm = an.bundled_portrait()
        G, cfg = load_model(model, "cpu")
        t1 = time.perf_counter()
        motion = an.generate_portrait_motion(G, cfg, lm, args.frames, args.seed)
        t2 = time.perf_counter()
        video = an.animate(image, lm, motion, size=512)
        t3 = time.perf_counter()
        write_video(video, tmp / "face.mp4", fps=cfg.data.fps)
        t4 = time.perf_counter()
        write_video(video, tmp / "face.gif", fps=cfg.data.fps)
        t5 = time.perf_counter()
        res = {"frames": len(video), "size": f"{video.shape[2]}x{video.shape[1]}", "load_s": t1 - t0,
               "generate_s": t2 - t1, "warp_s": t3 - t2, "warp_ms_per_frame": 1000 * (t3 - t2) / len(video),
               "mp4_write_s": t4 - t3, "mp4_mb": (tmp / "face.mp4").stat().st_size / 2 ** 20,
               "total_mp4_s": t4 - t0, "gif_write_s": t5 - t4, "gif_mb": (tmp / "face.gif").stat().st_size / 2 ** 20}
    res["load_average"] = os.getloadavg()[0]
    print(f"suhmo animate, bundled portrait {res['size']}, {res['frames']} frames, {args.threads} threads "
          f"(load average {res['load_average']:.1f} on {os.cpu_count()} cores)")
    print(f"  load model {res['load_s']:.2f} s | generate {res['generate_s']:.2f} s | warp {res['warp_s']:.2f} s "
          f"({res['warp_ms_per_frame']:.1f} ms/frame) | write mp4 {res['mp4_write_s']:.2f} s")
    print(f"  total to MP4: {res['total_mp4_s']:.2f} s (target <= 10 s); MP4 {res['mp4_mb']:.2f} MB (target <= 2 MB)")
    print(f"  (GIF instead: write {res['gif_write_s']:.2f} s, {res['gif_mb']:.2f} MB)")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
