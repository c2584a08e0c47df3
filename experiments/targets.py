"""Score trained generators against the natural-motion targets, beside a frozen face and real data.

Protocol (the one of the issue "Natural head motion..."): on the held-out persons of ``--data``
(split by person exactly as the Trainer splits, ``SPLIT_SEED``), ``--poses`` reference poses are
frame 0 of evenly spread real 81-frame windows; each model generates 4 sequences of 80 frames
from each pose (seeded), the landmark metric stack scores the last 40 of the 80 frames, and the
shape error (``experiments/shape_drift.py``) is read at frames 40 and 80. The same protocol
scores two yardsticks on the same poses: a **frozen face** (the reference repeated) and the
**real continuation** (the 80 real frames that follow each reference pose).

Models are given as ``LABEL=CK1,CK2,...`` (one checkpoint or export folder per training seed):
each metric is the mean (± std) over them. A label starting with ``mle`` is the MLE baseline of
the target "fd_clip40 at most 0.5x MLE's".

``--fidelity`` adds the fidelity protocol (``suhmo.metrics.fidelity``) on the same held-out persons:
``--poses`` references, frame 0 of real 201-frame windows, 4 sequences of 200 frames each, scored
for pose memory (lag correlations of the yaw / pitch / roll proxies at 40, 80, 200 frames, the
generated minus the real), per-window speed percentiles (over the real median window speed) and
identity drift, the pose proxies' spread over the sequences from frame 40 on (``spread_*``, no
target), beside the real windows themselves; and a long-horizon probe of ``--long`` frames
(16 sequences): frozen and broken windows and the median speed of every 8-s block. Its targets:
each pose-memory cell within 0.1 of real's, the speed percentiles 10 / 50 / 90 within 25 % of
real's, no frozen or broken window and every block's speed 0.7-1.3 of real over the long horizon;
with it the main table checks that issue's tighter targets too: fd_clip40 at most 2x the real
continuation's and motion_energy in [0.85, 1.15].

``--probe`` also prints, for models in the semantic space, how far the state wanders from the
reference: the mean |z_t - z_0| of the pose dimensions and of the shape coefficients (averaged)
at frames 10 / 40 / 80, for the model and for the real continuation in the model's own state
units. Real faces saturate; a free integrator's distance keeps growing (experiments/README.md).

Command:
  python experiments/targets.py semantic=RUN1/best.pt,RUN2/best.pt,RUN3/best.pt mle=M1/last.pt \
      [--data FILE] [--poses 64] [--seed 0] [--probe] [--fidelity [--long 1500]] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shape_drift import shape_error  # noqa: E402

from suhmo.config import make_config  # noqa: E402
from suhmo.data import load_dataset  # noqa: E402
from suhmo.generate import load_model, sample  # noqa: E402
from suhmo.metrics import APD_GROUP, compute, options_from_config  # noqa: E402
from suhmo.metrics import fidelity as fid  # noqa: E402
from suhmo.metrics.landmark import LandmarkBasis, real_windows  # noqa: E402
from suhmo.paths import dev_data  # noqa: E402
from suhmo.data import SPLIT_SEED  # noqa: E402

FRAMES = 80
KEYS = ("fd_frame", "fd_clip40", "fd_motion", "motion_energy", "drift", "apd", "shape40", "shape80")
TARGETS = {  # key -> (test, text); ctx holds the yardsticks
    "fd_clip40": (lambda v, c: v <= 0.2 * c["frozen"]["fd_clip40"] and ("mle" not in c or v <= 0.5 * c["mle"]),
                  "<= 0.2x frozen face and <= 0.5x MLE"),
    "motion_energy": (lambda v, c: 0.7 <= v <= 1.3, "in [0.7, 1.3]"),
    "shape40": (lambda v, c: v <= 1.5 * c["real"]["shape40"], "<= 1.5x real"),
    "shape80": (lambda v, c: v <= 1.5 * c["real"]["shape80"], "<= 1.5x real"),
    "drift": (lambda v, c: v <= 0.18, "<= 0.18"),
    "apd": (lambda v, c: v >= 0.02, ">= 0.02"),
}
LIVELY_TARGETS = {  # with --fidelity: the issue "Motion as lively as real..." tightens two of them
    **TARGETS,
    "fd_clip40": (lambda v, c: v <= 2.0 * c["real"]["fd_clip40"], "<= 2x real"),
    "motion_energy": (lambda v, c: 0.85 <= v <= 1.15, "in [0.85, 1.15]"),
}


FID_KEYS = fid.MEM_KEYS + ("speed_p10", "speed_p50", "speed_p90", "id_drift")
LONG_KEYS = ("frozen_frac", "broken_frac", "block_speed_min", "block_speed_max")
FID_TARGETS = {  # key -> (test, text); ctx["real"] holds the real windows' own fidelity keys
    **{k: (lambda v, c: v <= 0.1, "within 0.1 of real") for k in fid.MEM_KEYS},
    **{f"speed_p{q}": (lambda v, c, q=q: abs(v / c["real"][f"speed_p{q}"] - 1) <= 0.25, "within 25 % of real's")
       for q in fid.PERCENTILES},
    "frozen_frac": (lambda v, c: v == 0, "= 0"), "broken_frac": (lambda v, c: v == 0, "= 0"),
    "block_speed_min": (lambda v, c: v >= 0.7, ">= 0.7"), "block_speed_max": (lambda v, c: v <= 1.3, "<= 1.3"),
}


def held_out(data: str):
    """The held-out persons' clips of ``data``, normalised as in training, and a config to score with."""
    cfg = make_config("small", overrides={"data.path": data, "eval.frames": FRAMES})
    _, test = load_dataset(cfg).split_by_person(cfg.data.test_fraction, seed=SPLIT_SEED)
    return cfg, test


def protocol(cfg, test, poses: int, seed: int):
    """``(windows [P, 81, 68, 2], refs [4P, 68, 2], score(seqs) -> dict)`` for the held-out set."""
    win = real_windows(test.clips, FRAMES + 1, stride=5)
    idx = np.linspace(0, len(win), poses, endpoint=False).astype(int)
    win = win[idx]
    refs = np.repeat(win[:, 0], APD_GROUP, axis=0)
    opts = options_from_config(cfg, test, frames=FRAMES, num_samples=len(refs), runs=1, seed=seed)
    opts = opts.replace(refs=refs)

    def score(seqs: np.ndarray) -> dict:
        out = compute(["landmark"], opts.replace(sample_fn=lambda r, f, s: seqs))
        err = shape_error(np.asarray(seqs, np.float64))
        out["shape40"], out["shape80"] = float(err[:, 40].mean()), float(err[:, 80].mean())
        return out

    return win, refs, score


def fidelity_protocol(cfg, test, poses: int, seed: int, long: int):
    """``(real_scores, score(G, gcfg) -> dict)``: the fidelity protocol on the held-out set (module
    docstring); ``real_scores`` are the real 201-frame windows scored as if generated."""
    h = fid.HORIZON
    win = real_windows(test.clips, h + 1, stride=5)
    win = win[np.linspace(0, len(win), poses, endpoint=False).astype(int)]
    refs = np.repeat(win[:, 0], APD_GROUP, axis=0)
    opts = options_from_config(cfg, test, frames=h, num_samples=len(refs), runs=1, seed=seed, horizon=h)
    opts = opts.replace(refs=refs)
    real = compute(["fidelity"], opts.replace(sample_fn=lambda r, f, s: np.repeat(win, APD_GROUP, axis=0)))
    real.update(pose_spread(np.repeat(win, APD_GROUP, axis=0)))
    long_refs = win[np.linspace(0, len(win), 16, endpoint=False).astype(int), 0]
    long_opts = options_from_config(cfg, test, frames=long, num_samples=16, runs=1, seed=seed, horizon=long)
    long_opts = long_opts.replace(refs=long_refs)

    def score(G, gcfg) -> dict:
        seqs = sample(G, refs, h, seed, init_vel=gcfg.eval.init_vel)
        out = compute(["fidelity"], opts.replace(sample_fn=lambda r, f, s: seqs))
        out.update(pose_spread(seqs))
        far = sample(G, long_refs, long, seed, init_vel=gcfg.eval.init_vel)
        out.update({k: v for k, v in compute(["fidelity"], long_opts.replace(sample_fn=lambda r, f, s: far)).items()
                    if k in LONG_KEYS})
        return out

    return real, score


SPREAD_KEYS = tuple(f"spread_{p}" for p in fid.PROXIES)


def pose_spread(seqs: np.ndarray) -> dict:
    """``spread_<proxy>``: the pose proxy's standard deviation over the sequences (all started
    from the same reference poses), averaged over frames 40 to the end. Real heads keep the
    spread of their start poses; heads that slide to the population's mean pose lose it (a turned
    head swinging frontal), which the lag correlations alone show only as a lower value."""
    poses = fid.pose_proxies(np.asarray(seqs, np.float64)[:, 40:])
    return {f"spread_{p}": float(poses[p].std(0).mean()) for p in fid.PROXIES}


def speeds(x: np.ndarray, smooth: int = 5) -> tuple[float, float]:
    """Mean landmark speed of frames 41-80 as they are and after a ``smooth``-frame moving
    average: what is left after smoothing is the head's motion, the rest frame-to-frame jitter."""
    seg = np.asarray(x[:, FRAMES - 40:], np.float64)
    k = np.ones(smooth) / smooth
    low = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, seg)

    def speed(a):
        return float(np.sqrt((np.diff(a, axis=1) ** 2).sum(-1)).mean())

    return speed(seg), speed(low)


def probe(space, seqs: np.ndarray, real: np.ndarray, label: str, basis=None) -> None:
    """Mean |z_t - z_0| of pose dimensions (x, y, log scale, roll) and of the shape coefficients;
    the speed of frames 41-80 raw and smoothed over 5 frames (the jitter share: 1 - smoothed / raw);
    the rms change of each state dimension over 1 and 5 frames against the real continuation's;
    the push all samples share: the mean over samples of ``z_80 - z_0`` per dimension, in units of
    the real state's sd (real windows from different poses: sampling noise only), against the
    spread between samples (experiments/README.md, "The drift is a shared push"); with ``basis``
    (a ``LandmarkBasis`` of the held-out frames) the drift metric's shape implausibility ``u`` per
    10-frame block, model and real: where along the 80 frames it grows; how much samples differ
    in head speed (percentiles of each sample's speed in x, and the fastest tenth's share of the
    mean square: experiments/README.md, "Every head moves alike")."""
    at = [10, 40, FRAMES]
    real_raw, real_low = speeds(real)
    disp, states = {}, {}
    for name, x in (("model", seqs), ("real", real)):
        with torch.no_grad():
            z = states[name] = space.encode(torch.as_tensor(np.asarray(x, np.float32))).numpy().astype(np.float64)
        seg = z[:, FRAMES - 40:]
        disp[name] = {L: np.sqrt(((seg[:, L:] - seg[:, :-L]) ** 2).mean((0, 1))) for L in (1, 5)}
        d = np.abs(z - z[:, :1])
        pose = " ".join("/".join(f"{d[:, t, j].mean():.2f}" for t in at) for j in range(4))
        shape = "/".join(f"{d[:, t, 4:].mean():.3f}" for t in at)
        raw, low = speeds(x)
        print(f"probe {label[-30:]:<30} {name:<5} |z_t - z_0| at {at}: pose x, y, log s, roll {pose}; "
              f"shape {shape}; speed x real: raw {raw / real_raw:.2f}, smoothed {low / real_low:.2f} "
              f"(jitter share {1 - low / raw:.0%})")
    # the push all samples share (the drift's cause), in units of the real state's sd
    sd = states["real"].reshape(-1, states["real"].shape[-1]).std(0)
    shared = {n: z[:, FRAMES] - z[:, 0] for n, z in states.items()}
    push = {n: np.abs(d.mean(0)) / sd for n, d in shared.items()}
    spread = {n: np.sqrt((d.std(0) ** 2 / sd ** 2).mean()) for n, d in shared.items()}
    top = np.argsort(-push["model"])[:3]
    print(f"probe {label[-30:]:<30} shared push z_{FRAMES} - z_0 over all samples, x the real state's sd: "
          f"mean |E[dz]| model {push['model'].mean():.2f} (real {push['real'].mean():.2f}), largest "
          + ", ".join(f"dim {j} {push['model'][j]:.2f}" for j in top)
          + f"; spread between samples model {spread['model']:.2f} (real {spread['real']:.2f})")
    if basis is not None:
        blocks = {n: basis.implausibility(np.asarray(x[:, 1:FRAMES + 1], np.float64)).reshape(len(x), -1, 10).mean((0, 2))
                  for n, x in (("model", seqs), ("real", real))}
        print(f"probe {label[-30:]:<30} implausibility u per 10 frames (1-{FRAMES}): "
              + "; ".join(f"{n} " + " ".join(f"{v:.2f}" for v in b) for n, b in blocks.items()))
    ratio = {L: disp["model"][L] / disp["real"][L] for L in (1, 5)}
    print(f"probe {label[-30:]:<30} rms displacement of frames 41-80 x real, over 1 / 5 frames: " + ", ".join(
        f"{n} {ratio[1][j]:.2f}/{ratio[5][j]:.2f}" for j, n in enumerate(("x", "y", "log s", "roll")))
        + f", shape (mean of {len(ratio[1]) - 4}) {ratio[1][4:].mean():.2f}/{ratio[5][4:].mean():.2f}")
    # how much windows differ: each sample's rms change of x over 5 frames (frames 41-80), its
    # 10th/50th/90th percentiles and the share of the batch's mean square held by the fastest tenth
    per = {n: np.sqrt(((z[:, FRAMES - 40:, 0][:, 5:] - z[:, FRAMES - 40:, 0][:, :-5]) ** 2).mean(1))
           for n, z in states.items()}
    top = {n: np.sort(p ** 2)[::-1][:max(1, len(p) // 10)].sum() / (p ** 2).sum() for n, p in per.items()}
    print(f"probe {label[-30:]:<30} each sample's head speed (x over 5 frames, 41-80), 10/50/90th percentile "
          f"x real's median: " + "; ".join(
              f"{n} " + "/".join(f"{v / np.median(per['real']):.2f}" for v in np.percentile(p, [10, 50, 90]))
              + f" (fastest tenth holds {top[n]:.0%})" for n, p in per.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help="LABEL=CK1,CK2,... (checkpoints or export folders)")
    p.add_argument("--data", default=str(dev_data().with_name("real_dev_landmarks_large.npz")))
    p.add_argument("--poses", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--probe", action="store_true", help="print the state-wandering probe of semantic models")
    p.add_argument("--fidelity", action="store_true", help="add the fidelity protocol and the long-horizon probe")
    p.add_argument("--long", type=int, default=1500, help="frames of the long-horizon probe (with --fidelity)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if not Path(a.data).is_file():
        print(f"skipped: {a.data} not found", file=sys.stderr)
        return 2
    cfg, test = held_out(a.data)
    win, refs, score = protocol(cfg, test, a.poses, a.seed)
    rows: dict[str, dict] = {}
    t0 = time.time()
    basis = LandmarkBasis.fit(np.concatenate([np.asarray(c) for c in test.clips]).astype(np.float64)) if a.probe else None
    rows["frozen face"] = {"mean": score(np.repeat(refs[:, None], FRAMES + 1, axis=1)), "n": 1}
    rows["real continuation"] = {"mean": score(np.repeat(win, APD_GROUP, axis=0)), "n": 1}
    if a.fidelity:
        real_fid, fid_score = fidelity_protocol(cfg, test, a.poses, a.seed, a.long)
        rows["real continuation"]["fidelity"] = real_fid
    for spec in a.models:
        label, _, paths = spec.partition("=")
        runs = []
        for ck in paths.split(","):
            G, gcfg = load_model(ck)
            seqs = sample(G, refs, FRAMES, a.seed, init_vel=gcfg.eval.init_vel)
            runs.append(score(seqs))
            if a.fidelity:
                runs[-1].update({f"fid.{k}": v for k, v in fid_score(G, gcfg).items()})
            if a.probe and hasattr(G.space, "fit"):
                probe(G.space, seqs, np.repeat(win, APD_GROUP, axis=0), ck, basis)
        rows[label] = {"mean": {k: float(np.mean([r[k] for r in runs])) for k in runs[0]},
                       "std": {k: float(np.std([r[k] for r in runs])) for k in runs[0]}, "n": len(runs),
                       "checkpoints": paths.split(",")}
    ctx = {"frozen": rows["frozen face"]["mean"], "real": rows["real continuation"]["mean"]}
    targets = LIVELY_TARGETS if a.fidelity else TARGETS
    mle = [r for lab, r in rows.items() if lab.lower().startswith("mle")]
    if mle:
        ctx["mle"] = mle[0]["mean"]["fd_clip40"]
    print(f"held-out persons of {a.data}: {len(test.clips)} clips; {len(refs)} sequences of {FRAMES} frames "
          f"from {a.poses} poses; the last 40 frames scored")
    print(f"{'':<22}" + "".join(f"{k:>15}" for k in KEYS))
    for label, r in rows.items():
        cells = []
        for k in KEYS:
            v = r["mean"][k]
            s = f"{v:.3g}" + (f"±{r['std'][k]:.2g}" if r.get("n", 1) > 1 else "")
            ok = label not in ("frozen face", "real continuation") and k in targets
            s += ("+" if targets[k][0](v, ctx) else "-") if ok else " "
            cells.append(f"{s:>15}")
        print(f"{label[:22]:<22}" + "".join(cells))
    print("targets (+ met, - missed): " + "; ".join(f"{k} {t}" for k, (_, t) in targets.items()))
    if a.fidelity:
        print_fidelity(rows, real_fid)
    print(f"scored in {time.time() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps({"data": a.data, "poses": a.poses, "seed": a.seed, "rows": rows},
                                           indent=1))
    return 0


def print_fidelity(rows: dict, real: dict) -> None:
    """The fidelity table: pose-memory cells (|generated - real| lag correlation), speed
    percentiles and identity drift over 200 frames, and the long-horizon probe."""
    keys = FID_KEYS + SPREAD_KEYS + LONG_KEYS
    ctx = {"real": real}
    print(f"fidelity over {fid.HORIZON} frames and the long-horizon probe (pose_mem: |corr generated - corr real|)")
    print(f"{'':<22}" + "".join(f"{k.replace('pose_mem_', 'mem_'):>14}" for k in keys))
    print(f"{'real windows':<22}" + "".join(f"{real.get(k, float('nan')):>14.3g}" for k in keys))
    for label, r in rows.items():
        if label in ("frozen face", "real continuation"):
            continue
        cells = []
        for k in keys:
            v = r["mean"].get(f"fid.{k}", float("nan"))
            s = f"{v:.3g}" + (f"±{r['std'][f'fid.{k}']:.1g}" if r.get("n", 1) > 1 else "")
            s += ("+" if FID_TARGETS[k][0](v, ctx) else "-") if k in FID_TARGETS else " "
            cells.append(f"{s:>14}")
        print(f"{label[:22]:<22}" + "".join(cells))
    print("fidelity targets: pose memory each within 0.1 of real; speed percentiles within 25 % of real's; "
          "long horizon: no frozen or broken window, block speeds 0.7-1.3 (spread_*: the pose proxies' spread over "
          "sequences from frame 40 on, no target: real keeps its start poses' spread)")


if __name__ == "__main__":
    sys.exit(main())
