"""Memory and speed against corpus size: packed datasets of 0.25 M, 2 M and 8 M frames.

The sets tile the real dev clips (``../shared/data/real_dev_landmarks_xl.npz``, or the
embedded synthetic speakers without it) with new person labels, so that the person split and
the statistics see a corpus of that size. Each is written as a canonical ``.npz`` and packed
with ``suhmo data pack`` (timed). For each set it measures, from a cold ``$SUHMO_HOME`` cache:

- the peak private memory (Pss_Anon + Pss_Shmem over the process tree: ``benchmarks/memory.py``)
  of ``suhmo train --preset cpu --iterations 40 --set train.eval_every=20`` (two evaluations);
- the same for ``suhmo data check``;
- on the smallest set, the same training command on the ``.npz`` (today's in-memory path);
- training iterations per second on packed data against the in-memory ``.npz``, side by side
  (rounds alternate), on the smallest set, and the milliseconds per batch of the sampler alone
  (the only part of an iteration that differs);
- with ``--search``, a 2-trial search (2 concurrent, local Ray) on the 2 M set, whole tree.

    python benchmarks/data_scale.py                       # 0.25, 2, 8 M frames; ~30 min
    python benchmarks/data_scale.py --sizes 0.25,2 --search --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from memory import peak_private_memory  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "real_dev_landmarks_xl.npz"
BIN = Path(sys.executable).parent


def tiled(target_frames: int):
    """A LandmarkSet of at least ``target_frames`` frames: copies of the dev clips, each copy
    a new set of persons (``t<k>-<person>``)."""
    from suhmo.data import LandmarkSet, load_landmarks, synthesize

    base = load_landmarks(DEV) if DEV.is_file() else synthesize(48, 8.0, 0)
    persons = np.asarray(base.persons())
    clips, meta = [], {"person": [], "source": []}
    k = 0
    total = 0
    while total < target_frames:
        for i, c in enumerate(base.clips):
            clips.append(c)
            meta["person"].append(f"t{k}-{persons[i]}")
            meta["source"].append(f"tile{k}:{i}")
            total += len(c)
        k += 1
    return LandmarkSet(clips=clips, fps=base.fps, meta={k: np.asarray(v) for k, v in meta.items()})


def run(cmd, env, label: str, timeout: float = 3600) -> dict:
    peak, rc, wall, tail = peak_private_memory(cmd, env=env, timeout=timeout)
    if rc != 0:
        print(f"{label}: exit {rc}\n{tail}", file=sys.stderr)
    print(f"  {label:34s} peak private {peak / 1e9:6.2f} GB   {wall:6.1f} s   exit {rc}", flush=True)
    return {"peak_gb": round(peak / 1e9, 3), "wall_s": round(wall, 1), "rc": rc}


def cold_env(work: Path) -> dict:
    home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
    return {**os.environ, "SUHMO_HOME": str(home), "OMP_NUM_THREADS": "1"}


def time_iterations(data: str, iterations: int) -> float:
    """Iterations per second of the cpu preset's training loop on ``data`` (no evaluation)."""
    from suhmo.config import make_config
    from suhmo.train import Trainer

    cfg = make_config("cpu", overrides={"data.path": data, "train.iterations": iterations,
                                        "train.eval_every": 10 * iterations, "train.progress": False,
                                        "train.threads": 1})
    out = tempfile.mkdtemp(prefix="its-")
    try:
        t = Trainer(cfg, out, metrics_fn=lambda sample_fn, step: {}, resume=False)
        t0 = time.perf_counter()
        t.fit()
        return iterations / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def sampler_ms(data: str, batches: int = 200) -> float:
    """Milliseconds per training batch of the cpu preset's sampler on ``data`` (the only part of
    an iteration that differs between an .npz and a packed set)."""
    from suhmo.config import make_config
    from suhmo.data import load_dataset
    from suhmo.data.loading import make_sampler

    cfg = make_config("cpu", overrides={"data.path": data})
    train, _ = load_dataset(cfg).split_by_person(cfg.data.test_fraction, seed=0)
    sampler = make_sampler(train, cfg, seed=0)
    sampler.next()
    t0 = time.perf_counter()
    for _ in range(batches):
        sampler.next()
    return (time.perf_counter() - t0) / batches * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.25,2,8", help="millions of frames")
    ap.add_argument("--work", default=None, help="folder for the sets (default: a temporary one, removed)")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the iterations/s comparison")
    ap.add_argument("--search", action="store_true", help="also a 2-trial search on the 2 M set")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--time-iterations", metavar="DATA", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.time_iterations:
        print(json.dumps({"its": time_iterations(a.time_iterations, a.iterations)}))
        return
    from suhmo.data import save_landmarks

    work = Path(a.work or tempfile.mkdtemp(prefix="suhmo-data-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"sets": {}}
    sizes = [float(s) for s in a.sizes.split(",")]
    try:
        for m in sizes:
            name = f"{m:g}M"
            ls = tiled(int(m * 1e6))
            npz, packed = work / f"{name}.npz", work / f"{name}-packed"
            print(f"{name}: {len(ls)} clips, {ls.num_frames} frames ({ls.num_frames * 544 / 1e9:.2f} GB float32)",
                  flush=True)
            save_landmarks(npz, ls)
            del ls
            r: dict = {"frames": None}
            t0 = time.perf_counter()
            subprocess.run([str(BIN / "suhmo"), "data", "pack", str(npz), "--out", str(packed), "--no-progress"],
                           check=True, env={**os.environ, "SUHMO_HOME": str(work / "home-pack")})
            r["pack_s"] = round(time.perf_counter() - t0, 1)
            from suhmo.data.packed import PackedDataset

            r["frames"] = PackedDataset(packed).num_frames
            print(f"  suhmo data pack                    {r['pack_s']:6.1f} s "
                  f"({r['frames'] / r['pack_s'] / 1e3:.0f} k frames/s)", flush=True)
            train = [str(BIN / "suhmo"), "train", "--preset", "cpu", "--iterations", str(a.iterations),
                     "--set", f"train.eval_every={a.iterations // 2}", "--set", "train.progress=false"]
            r["train_packed"] = run(train + ["--data", str(packed), "--out", str(work / f"run-{name}")],
                                    cold_env(work), "train, packed, cold cache")
            r["check_packed"] = run([str(BIN / "suhmo"), "data", "check", str(packed), "--json"], cold_env(work),
                                    "data check, packed")
            if m == min(sizes):
                r["train_npz"] = run(train + ["--data", str(npz), "--out", str(work / f"run-{name}-npz")],
                                     cold_env(work), "train, .npz (in memory), cold cache")
                its = {"npz": [], "packed": []}
                for _ in range(a.rounds):
                    for kind, data in (("npz", npz), ("packed", packed)):
                        out = subprocess.run([sys.executable, __file__, "--time-iterations", str(data),
                                              "--iterations", "30"], capture_output=True, text=True, check=True,
                                             env=cold_env(work))
                        its[kind].append(json.loads(out.stdout.strip().splitlines()[-1])["its"])
                ms = {"npz": [], "packed": []}
                for _ in range(a.rounds):
                    for kind, data in (("npz", npz), ("packed", packed)):
                        ms[kind].append(sampler_ms(str(data)))
                r["batch_ms_npz"] = round(statistics.median(ms["npz"]), 2)
                r["batch_ms_packed"] = round(statistics.median(ms["packed"]), 2)
                print(f"  sampler ms/batch (median of {a.rounds})     npz {r['batch_ms_npz']:.2f}   packed "
                      f"{r['batch_ms_packed']:.2f}", flush=True)
                r["its_npz"] = round(statistics.median(its["npz"]), 3)
                r["its_packed"] = round(statistics.median(its["packed"]), 3)
                print(f"  iterations/s (median of {a.rounds})      npz {r['its_npz']:.2f}   packed "
                      f"{r['its_packed']:.2f}   ratio {r['its_packed'] / r['its_npz']:.3f}", flush=True)
            if m != min(sizes) or len(sizes) == 1:
                npz.unlink()  # only the smallest .npz is needed again
            if a.search and abs(m - 2) < 1e-9:
                r["search"] = search(work, packed)
            results["sets"][name] = r
        sets = results["sets"]
        if "2M" in sets and "8M" in sets:
            p2, p8 = sets["2M"]["train_packed"]["peak_gb"], sets["8M"]["train_packed"]["peak_gb"]
            results["growth_8M_over_2M"] = round(p8 / p2, 3)
            print(f"8 M / 2 M peak private memory of training: {p8:.2f} / {p2:.2f} GB = {p8 / p2:.3f}")
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(results, sort_keys=True))


def search(work: Path, packed: Path) -> dict:
    space = work / "scale-space.yaml"
    space.write_text(
        "description: two trials of the cpu preset on a large packed set (benchmarks/data_scale.py)\n"
        "base:\n  preset: cpu\n"
        f"  data.path: {packed}\n  train.iterations: 40\n  train.eval_every: 20\n"
        "params:\n  optim.lr_g: {type: loguniform, low: 1.0e-4, high: 1.0e-3}\n"
        "objective: fd_clip40:min\nscheduler: {type: fifo}\nbudget: {num_samples: 2, max_concurrent: 2}\n"
        "seed: 0\n")
    env = cold_env(work)
    return run([str(BIN / "suhmo-search"), "run", "--space", str(space), "--storage", str(work / "search"),
                "--tracking-uri", "none"], env, "search, 2 trials at once (tree, Ray)")


if __name__ == "__main__":
    main()
