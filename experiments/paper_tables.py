"""The paper's Tables 1-3 as CPU-sized experiments: real training runs, S seeds per method,
every model scored at 40 and 80 generated frames from single reference poses.

    python experiments/paper_tables.py --table 1 --data dev --scale 0.2 --seeds 2 --jobs 2
    python experiments/paper_tables.py --table 2 --data dev --scale 0.2 --seeds 2 --jobs 2
    python experiments/paper_tables.py --table 3 --data dev --scale 0.2 --seeds 2 --jobs 2
    python experiments/paper_tables.py --table 1 --data synth ...       # the synthetic talking heads

Data. ``dev``: /work/shared/data/real_dev_landmarks.npz (``$SUHMO_DEV_DATA``), split by person
exactly as the Trainer does (``load_dataset(cfg).split_by_person(data.test_fraction,
SPLIT_SEED)``): models train on the train persons and are scored on the held-out persons.
``synth``: the embedded synthetic talking heads, split the same way. Without the dev file
the script stops with a one-line message (exit code 2).

Methods (all at ``EXP_BASE``: the ``small`` preset with narrower networks, ``ITERATIONS x
--scale`` iterations, batch 32, seq_len 40):

* Table 1: SUHMo-RNN and SUHMo-Transformer at the hyperparameters chosen by a short
  ``suhmo-search`` run per variant ON THE TRAIN PERSONS ONLY (the search's own
  train/validation split of them; Optuna random sampler over lr_g, lr_d, lambda and the
  window family; recorded in the JSON), against the MLE baseline (RNN, ``loss.adversarial=
  false``) and the Δ-based baseline (RNN, ``model.delta=true``), both at the RNN's chosen
  hyperparameters, and the paper's two Transformer VAEs, ACTOR (``model.variant=actor``) and
  HiT-DVAE (``model.variant=hitdvae``), each at the lr_g and KL weight beta chosen by its own
  short search, widths as narrow as the GANs' (``EXP_BASE``). Plus a GIF grid of 4 samples
  from one reference per SUHMo and VAE model.
* Table 2: with / without the multi-scale window discriminator (``windows.single_scale``),
  FD at clip lengths 10, 20, 40.
* Table 3: full, one-sample D (``model.joint_d=false``), one-sample G (``model.pair_g=false``).

Scoring: the FINAL generator of each run (``last.pt``; no checkpoint is chosen on the held-out
persons) by :func:`launch.repeat_trial.score_frames`: the landmark stack on the last 40 of 40
(``_g40``) and of 80 (``_g80``) generated frames, 128 sequences (32 held-out reference
poses x 4), evaluation seed fixed. The detector stack (FID, FVD) is added when its TorchScript
files exist in the detector folder; they do not here, and the JSON says so.

``--recipe cpu`` (issue "Natural head motion"): the same tables with the project's CPU recipe
instead of the paper's landmark-space GANs: every SUHMo row is ``suhmo train --preset cpu``
(semantic space, reverting integrator, noise inputs; no per-variant search, the recipe is the
search's result) with the synthetic speakers mixed in (``data.synth_mix=0.25``), trained on the
train persons of the LARGE dev set (``--data large``, 99 clips, 72 persons) with the Trainer's
own validation split of them choosing ``best.pt`` on ``train.select_metric`` (as users train),
and scored on the held-out persons. The baselines are the recipe with one change each (MLE: no
adversarial loss; Δ-based: ``model.delta``), and the two VAEs at the width of issue 13's runs and
the learning rate / KL weight their searches chose there (``RECIPE_VAE``), the same iterations.
All runs of the three tables share one work folder (``$SUHMO_HOME/experiments/recipe-cpu-<data>``
or ``--work``); a run's folder is named by its configuration, so Table 2's multi-scale row and
Table 3's full row are Table 1's SUHMo-RNN runs, and a rerun of the same command resumes: finished
runs are read from their ``result.json``, an interrupted one continues from its ``last.pt``. The
name hashes the resolved configuration (a changed preset trains anew), and each finished run's
record is also written beside the tables (``<out>/runs/<name>.json``): commit them, and the same
command on a fresh machine trains only the runs still missing.

Output: ``<out>/table<N>_<data>.md`` and ``.json`` (every run's metrics, configs, seeds, wall
times, the command), GIF/PNG previews for Table 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from suhmo.config import VAE_VARIANTS  # noqa: E402
from suhmo.paths import dev_data  # noqa: E402

DEV_DATA = dev_data()
ITERATIONS = 2000  # at --scale 1.0 (about an hour per table on 2 cores)
EXP_BASE = {
    "model.hidden_g": 64, "model.mlp_g": 64, "model.emb_g": 64, "model.hidden_d": 64, "model.emb_d": 32,
    "model.frame_d_hidden": 64, "train.batch_size": 32, "eval.samples": 64, "train.progress": False,
    "optim.lr_decay_iter": None, "optim.grad_clip": 1.0, "loss.w_frame": 5.0,
    # the VAE baselines at about the GANs' width (the small preset's depth and latent sizes)
    "actor.width": 64, "actor.ff": 128, "hitdvae.width": 64, "hitdvae.ff": 128,
}
SEARCHED = ("rnn", "transformer", "actor", "hitdvae")  # Table 1: one short search per variant
# Table 1 rows in the paper's order: (variant whose search sets the hyperparameters, fixed overrides)
TABLE1_ROWS = {
    "HiT-DVAE": ("hitdvae", {"model.variant": "hitdvae"}),
    "ACTOR": ("actor", {"model.variant": "actor"}),
    "Δ-based (RNN)": ("rnn", {"model.variant": "rnn", "model.delta": True}),
    "MLE (RNN, L2 only)": ("rnn", {"model.variant": "rnn", "loss.adversarial": False}),
    "SUHMo-RNN": ("rnn", {"model.variant": "rnn"}),
    "SUHMo-Transformer": ("transformer", {"model.variant": "transformer"}),
}
# --recipe cpu: the VAE rows at issue 13's widths and its searches' choices (experiments/README.md)
RECIPE_VAE = {"model.space": "landmarks", "model.revert": False, "model.noise_g": 0, "model.d_semantic": False,
              "model.d_anchor": False,
              "optim.lr_g": 2.6e-4, "actor.beta": 7.3e-5, "hitdvae.beta": 7.3e-5,
              "actor.width": 64, "actor.ff": 128, "hitdvae.width": 64, "hitdvae.ff": 128}
RECIPE_TABLE1_ROWS = {
    "HiT-DVAE": {"model.variant": "hitdvae", **RECIPE_VAE},
    "ACTOR": {"model.variant": "actor", **RECIPE_VAE},
    "Δ-based (RNN)": {"model.variant": "rnn", "model.delta": True},
    "MLE (RNN, L2 only)": {"model.variant": "rnn", "loss.adversarial": False},
    "SUHMo-RNN": {"model.variant": "rnn"},
    "SUHMo-Transformer": {"model.variant": "transformer"},
}
SCORE_SAMPLES = 128
FRAMES = (40, 80)
TABLES = {
    1: {"title": "Table 1: SUHMo vs MLE, Δ-based, ACTOR and HiT-DVAE baselines",
        "metrics": ["fd_frame", "fd_clip40", "fd_motion", "apd", "drift", "motion_energy"]},
    2: {"title": "Table 2: window-based multi-scale discriminator (FD at clip lengths 10/20/40)",
        "metrics": ["fd_clip10", "fd_clip20", "fd_clip40"],
        "methods": {"multi-scale windows": {}, "single-scale window": {"windows.single_scale": True}}},
    3: {"title": "Table 3: pair-aware G and joint D",
        "metrics": ["fd_frame", "fd_clip40", "fd_motion", "apd", "motion_energy"],
        "methods": {"full": {}, "one-sample D": {"model.joint_d": False}, "one-sample G": {"model.pair_g": False}}},
}


class SkipData(Exception):
    pass


# ---------------------------------------------------------------------- data
def data_overrides(data: str) -> dict:
    if data in ("dev", "large"):
        path = DEV_DATA if data == "dev" else large_dev_data()
        if not path.is_file():
            raise SkipData(f"real dev data not found at {path} (set SUHMO_DEV_DATA, or use --data synth); "
                           "nothing was run")
        return {"data.path": str(path)}
    return {"data.path": None}


def large_dev_data() -> Path:
    """``real_dev_landmarks_large.npz`` beside the dev file (``$SUHMO_DEV_DATA_LARGE`` overrides)."""
    import os

    return Path(os.environ.get("SUHMO_DEV_DATA_LARGE", DEV_DATA.with_name("real_dev_landmarks_large.npz")))


def splits(cfg):
    """(train, test) exactly as the Trainer makes them."""
    from suhmo.data import load_dataset
    from suhmo.data import SPLIT_SEED

    return load_dataset(cfg).split_by_person(cfg.data.test_fraction, seed=SPLIT_SEED)


def train_only_file(cfg, work: Path) -> Path:
    """The raw clips of the train persons as a landmark file (what the search may see)."""
    from suhmo.data import load_landmarks, save_landmarks, synthesize
    from suhmo.data import SPLIT_SEED

    d = cfg.data
    raw = load_landmarks(d.path, fps=d.fps) if d.path else synthesize(d.synth_clips, d.synth_seconds,
                                                                        d.synth_seed, fps=d.fps)
    train_raw, _ = raw.split_by_person(d.test_fraction, seed=SPLIT_SEED)
    train_norm, _ = splits(cfg)
    if train_raw.persons() != train_norm.persons():
        raise RuntimeError("the raw and normalised splits disagree; cannot isolate the train persons")
    path = work / "train_persons.npz"
    save_landmarks(path, train_raw)
    return path


# ---------------------------------------------------------------------- one run
def train_and_score(job: dict) -> dict:
    """Train one (method, seed) in this process; score the final generator (``--recipe cpu``:
    ``best.pt``) at 40/80 frames."""
    import copy

    import torch

    from launch.repeat_trial import score_frames
    from suhmo.config import make_config
    from suhmo.train import Trainer

    done = Path(job["run_dir"]) / "result.json"
    record = Path(job["record"]) if job.get("record") else None
    if job.get("recipe") and record is not None and record.is_file() and not done.is_file():
        # finished on another machine: its committed record (the run folder stayed there)
        return {**json.loads(record.read_text()), "method": job["method"], "reused": True}
    if job.get("recipe") and done.is_file():  # finished in an earlier invocation (perhaps another table's)
        out = {**json.loads(done.read_text()), "method": job["method"], "reused": True}
        if job.get("render") and "previews" not in out:
            from suhmo.generate import load_model

            G = load_model(Path(job["run_dir"]) / out.get("scored", "last.pt"))[0]
            out["previews"] = render_previews(G, make_config(job["preset"], overrides=job["overrides"]),
                                              recipe_test_set(job), Path(job["render"]), job["method"], job["data"])
            _write_run(done, out)
        if record is not None and not record.is_file():  # after the previews: the record has them too
            _write_run(record, out)
        return out
    torch.set_num_threads(1)
    cfg = make_config(job.get("preset", "small"), overrides=job["overrides"])
    t0 = time.time()
    if job.get("recipe"):
        # as users train: the train persons' file, the Trainer's own validation split of it
        # choosing best.pt; scored on the held-out persons of the full file
        from suhmo.generate import load_model

        test_set = recipe_test_set(job)
        trainer = Trainer(cfg, job["run_dir"], resume=True)
        trainer.fit()
        scored = trainer.best_path if trainer.best_path.is_file() else trainer.last_path
        G = load_model(scored)[0]
    else:
        train_set, test_set = splits(cfg)
        trainer = Trainer(cfg, job["run_dir"], train_set=train_set, eval_set=test_set, resume=False)
        trainer.fit()
        G = trainer.G_eval
    train_s = time.time() - t0
    scfg = copy.deepcopy(cfg)
    scfg.eval.samples = SCORE_SAMPLES
    if job.get("detectors"):
        scfg.eval.metrics = ["landmark", "detector"]
    t1 = time.time()
    scores = score_frames(G, scfg, test_set, FRAMES)
    out = {"method": job["method"], "seed": cfg.train.seed, "metrics": scores, "train_s": round(train_s, 1),
           "score_s": round(time.time() - t1, 1), "run_dir": str(job["run_dir"]), "overrides": job["overrides"],
           "train_log_last": trainer.metrics}
    if job.get("recipe"):
        out["scored"] = scored.name
    if job.get("render"):
        out["previews"] = render_previews(G, cfg, test_set, Path(job["render"]), job["method"], job["data"])
    if job.get("recipe"):
        _write_run(done, out)
        if record is not None:  # beside the tables: a rerun on a fresh machine does not train it again
            _write_run(record, out)
    return out


def _write_run(path: Path, out: dict) -> None:
    """A finished run's result (``result.json`` or its record beside the tables), atomically."""
    from suhmo.utils import atomic_write_text

    atomic_write_text(path, json.dumps({k: v for k, v in out.items() if k != "reused"}, indent=2, default=str))


def recipe_test_set(job: dict):
    """``--recipe cpu``: the held-out persons of the full data file the job's train persons came from."""
    from suhmo.config import make_config

    return splits(make_config(job["preset"], overrides={**job["overrides"], "data.path": job["full_data"]}))[1]


def render_previews(G, cfg, test_set, out: Path, method: str, data: str) -> dict:
    """GIF grid of 4 samples from ONE held-out reference (80 frames, shown at every other frame),
    a PNG still of it (first frame | last frame | motion map per sample), and a PNG still of 4
    different references."""
    import numpy as np

    from suhmo.generate import sample
    from suhmo.render import render_png

    slug = f"{data}_" + method.lower().replace(" ", "-")
    ref = np.asarray(test_set.clips[0][0], np.float32)
    same = sample(G, np.repeat(ref[None], 4, 0), 80, seed=7, init_vel=cfg.eval.init_vel)
    rng = np.random.default_rng(3)
    refs = np.stack([test_set.clips[i][0] for i in rng.choice(len(test_set.clips), 4, replace=False)])
    diff = sample(G, refs.astype(np.float32), 80, seed=7, init_vel=cfg.eval.init_vel)
    files = {"gif_one_reference": out / f"table1_{slug}_4samples.gif",
             "png_one_reference": out / f"table1_{slug}_4samples.png",
             "png_four_references": out / f"table1_{slug}_4references.png"}
    small_gif(list(same), files["gif_one_reference"], size=96, fps=cfg.data.fps)
    render_png(list(same), files["png_one_reference"], size=96, max_samples=4)
    render_png(list(diff), files["png_four_references"], size=96, max_samples=4)
    # spread between the 4 samples of one reference, frames 41-80 (normalised units, RMS per point)
    seg = same[:, 41:].reshape(4, 40, -1)
    pair = [float(np.sqrt(((seg[i] - seg[j]) ** 2).sum(-1) / 68).mean()) for i in range(4) for j in range(i + 1, 4)]
    return {**{k: str(v.relative_to(REPO)) if v.is_relative_to(REPO) else str(v) for k, v in files.items()},
            "mean_pairwise_rms_41_80": float(np.mean(pair))}


def small_gif(clips, path: Path, size: int, fps: float, every: int = 2, colors: int = 16) -> None:
    """``suhmo.render`` frames of the clips side by side, every ``every``-th frame, ``colors``
    colours: a preview small enough to keep in the repository (~0.3 MB for 4 x 80 frames)."""
    import io

    from PIL import Image

    from suhmo.render import compose_frames
    from suhmo.utils import atomic_write_bytes

    frames = compose_frames(clips, size=size, grid=len(clips))[::every]
    imgs = [Image.fromarray(f).quantize(colors=colors, dither=Image.Dither.NONE) for f in frames]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=round(1000 * every / fps),
                 loop=0, optimize=True)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------- table 1 search
def search_space(variant: str, iterations: int, train_file: Path, data: dict, samples: int) -> dict:
    base = {"preset": "small", **EXP_BASE, **data, "data.path": str(train_file), "model.variant": variant,
            "train.iterations": iterations, "train.eval_every": max(1, iterations // 4)}
    base = {k: v for k, v in base.items() if not (k == "data.path" and v is None)}
    return {
        "description": f"table 1: short {variant} search on the train persons",
        "base": base,
        "params": {"optim.lr_g": {"type": "loguniform", "low": 5e-5, "high": 1e-3}, **(
            {f"{variant}.beta": {"type": "loguniform", "low": 1e-7, "high": 1e-3}} if variant in VAE_VARIANTS else {
                "optim.lr_d": {"type": "loguniform", "low": 2e-5, "high": 5e-4},
                "loss.lam": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
                "windows.family": {"type": "choice", "values": ["uniform", "fixed"]}})},
        "objective": "fd_clip40:min",
        "scheduler": "fifo",
        "budget": {"num_samples": samples, "max_concurrent": 2},
        "sampler": "random",
        "seed": 0,
    }


def run_searches(iterations: int, train_file: Path, data: dict, samples: int, work: Path, echo,
                 variants=SEARCHED) -> dict:
    """One short search per variant (Ray Tune + Optuna + MLflow); the best trial's sampled values."""
    import tracking
    from launch.leaderboard import rank_rows
    from launch.plan import make_plan
    from launch.runner import run_search
    from launch.space import parse_space
    from launch.trainable import sampled_values

    uri = tracking.default_tracking_uri()
    chosen = {}
    for variant in variants:  # each search starts and stops its own local Ray
        space = parse_space(search_space(variant, iterations, train_file, data, samples),
                            name=f"table1-{variant}")
        name = f"table1-{variant}-{time.strftime('%Y%m%d-%H%M%S')}"
        plan = make_plan(space, experiment=name, storage=str(work / "search"), tracking_uri=uri)
        t0 = time.time()
        outcome = run_search(plan, echo=lambda s: None)
        rows = rank_rows(outcome.rows, plan.objectives)
        best = rows[0]
        vals = {k: v for k, v in sampled_values(best.config).items() if k != "train.seed"}
        chosen[variant] = {"experiment": name, "storage": str(work / "search"), "tracking_uri": uri,
                           "trials": len(rows), "iterations": iterations, "wall_s": round(time.time() - t0, 1),
                           "best_trial": best.name, "best_fd_clip40_val": best.best["fd_clip40"][0],
                           "best_at": best.best["fd_clip40"][1], "sampled": vals,
                           "all": [{"trial": r.name, "state": r.state,
                                    "fd_clip40_val": r.best.get("fd_clip40", (None,))[0],
                                    "sampled": {k: v for k, v in sampled_values(r.config).items()
                                                if k != "train.seed"}} for r in rows]}
        echo(f"search {name}: {len(rows)} trials in {time.time() - t0:.0f} s; best {best.name} "
             f"fd_clip40(val)={best.best['fd_clip40'][0]:.4g}: {vals}")
    return chosen


# ---------------------------------------------------------------------- driver
def parse_rows(text: str) -> list[str]:
    """``--rows``: comma-separated Table 1 row names, where a name may itself hold a comma
    ("MLE (RNN, L2 only)"): pieces are joined until they make a known name; an unknown piece is
    kept as it is (the caller names it in its error)."""
    out, acc = [], ""
    for piece in text.split(","):
        acc = f"{acc},{piece}" if acc else piece
        if acc.strip() in TABLE1_ROWS or not any(r.startswith(acc.strip()) for r in TABLE1_ROWS):
            if acc.strip():
                out.append(acc.strip())
            acc = ""
    if acc.strip():
        out.append(acc.strip())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=int, choices=[1, 2, 3], required=True)
    ap.add_argument("--data", choices=["dev", "large", "synth"], default="dev",
                    help="dev: the 23-clip dev set; large: the 99-clip one; synth: the synthetic heads")
    ap.add_argument("--recipe", choices=["paper", "cpu"], default="paper",
                    help="paper: the paper's GANs at EXP_BASE with short searches; cpu: --preset cpu, "
                         "resumable (module docstring)")
    ap.add_argument("--scale", type=float, default=1.0, help=f"iterations = {ITERATIONS} x scale")
    ap.add_argument("--iterations", type=int, default=None, help="override the iterations (ignores --scale)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1, help="training processes at once")
    ap.add_argument("--search-trials", type=int, default=3, help="table 1: trials per variant search")
    ap.add_argument("--rows", type=parse_rows, default=None,
                    help=f"table 1: only these rows, comma-separated ({', '.join(TABLE1_ROWS)}); default all")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results")
    ap.add_argument("--work", type=Path, default=None, help="run folders (default: $SUHMO_HOME/experiments)")
    args = ap.parse_args(argv)
    unknown = [r for r in (args.rows or []) if r not in TABLE1_ROWS]
    if unknown or (args.rows is not None and (args.table != 1 or not args.rows)):
        ap.error(f"--rows {','.join(args.rows or [])}: table 1 rows only, from {', '.join(TABLE1_ROWS)}")
    from suhmo.paths import home

    t_start = time.time()
    try:
        data = data_overrides(args.data)
    except SkipData as e:
        print(f"skipped: {e}", file=sys.stderr)
        return 2
    iterations = args.iterations or max(20, int(round(ITERATIONS * args.scale)))
    spec = dict(TABLES[args.table])
    recipe = args.recipe == "cpu"
    if recipe:
        work = args.work or home() / "experiments" / f"recipe-cpu-{args.data}"
    else:
        work = (args.work or home() / "experiments") / f"table{args.table}-{args.data}-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if recipe:
        from suhmo.config import make_config

        if data["data.path"] is None:
            ap.error("--recipe cpu trains on real data: --data dev or large")
        full = data["data.path"]
        train_file = train_only_file(make_config("cpu", overrides=data), work)
        common = {"data.path": str(train_file), "data.synth_mix": 0.25, "train.iterations": iterations,
                  "train.progress": False}
    else:
        common = {**EXP_BASE, **data, "train.iterations": iterations, "train.eval_every": max(1, iterations // 4)}
    print(f"table {args.table} on {args.data}: {iterations} iterations per run, {args.seeds} seed(s), "
          f"work folder {work}", flush=True)

    search = None
    if recipe:
        methods = (dict(RECIPE_TABLE1_ROWS) if args.table == 1
                   else {k: {"model.variant": "rnn", **v} for k, v in spec["methods"].items()})
        if args.rows is not None:
            methods = {k: v for k, v in methods.items() if k in args.rows}
    elif args.table == 1:
        from suhmo.config import make_config

        train_file = train_only_file(make_config("small", overrides=common), work)
        search_iters = max(20, iterations // 2)
        rows = {k: v for k, v in TABLE1_ROWS.items() if args.rows is None or k in args.rows}
        needed = [v for v in SEARCHED if any(src == v for src, _ in rows.values())]
        search = run_searches(search_iters, train_file, data, args.search_trials, work, print, needed)
        methods = {name: {**fixed, **search[src]["sampled"]} for name, (src, fixed) in rows.items()}
    else:
        methods = {k: {"model.variant": "rnn", **v} for k, v in spec["methods"].items()}

    det_note = detector_status()
    det_ok = det_note.startswith("files present")
    scoring = f"{SCORE_SAMPLES} sequences, frames {FRAMES}" + (", detector stack" if det_ok else "")
    jobs = []
    for s in range(args.seeds):  # seed-major: a partial run has every row's first seed
        for method, extra in methods.items():
            seed = 1000 + s
            render = args.out if (args.table == 1 and s == 0 and method.startswith(("SUHMo", "ACTOR", "HiT"))) else None
            overrides = {**common, **extra, "train.seed": seed}
            name = (f"{run_key('cpu', overrides, 'train persons of ' + Path(full).name, scoring)}-seed{seed}" if recipe
                    else f"{method.split()[0].lower()}-seed{seed}")
            run_dir = work / name
            job = {"method": method, "overrides": overrides, "run_dir": run_dir, "render": render,
                   "data": args.data, "detectors": det_ok}
            if recipe:
                job.update(recipe=True, preset="cpu", full_data=full, record=args.out / "runs" / f"{name}.json")
            jobs.append(job)
    t_train = time.time()
    if args.jobs > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as ex:
            results = []
            for r in ex.map(train_and_score, jobs):
                print(f"  {r['method']:<22} seed {r['seed']}: train {r['train_s']:.0f} s, "
                      f"fd_clip40@40={r['metrics']['fd_clip40_g40']:.4g}", flush=True)
                results.append(r)
    else:
        results = []
        for j in jobs:
            r = train_and_score(j)
            print(f"  {r['method']:<22} seed {r['seed']}: train {r['train_s']:.0f} s, "
                  f"fd_clip40@40={r['metrics']['fd_clip40_g40']:.4g}", flush=True)
            results.append(r)

    from tracking.results import aggregate, format_markdown

    table = aggregate([{"group": r["method"], "metrics": r["metrics"], "run": r["run_dir"]} for r in results],
                      spec["metrics"], FRAMES)
    wall = time.time() - t_start
    cmd = "python experiments/paper_tables.py " + " ".join(sys.argv[1:] if argv is None else argv)
    recipe_note = (["With the CPU recipe (`--preset cpu`, semantic space; `data.synth_mix=0.25`), trained on "
                    "the train persons, `best.pt` chosen on their own validation split by "
                    "`fd_clip40_dyn`, scored on the held-out persons.", ""] if recipe else [])
    md = [f"# {spec['title']} ({args.data} data)", "", *recipe_note,
          f"`{cmd}`: {iterations} iterations per run, {args.seeds} seed(s) per method, "
          f"wall {wall / 60:.1f} min (training {(time.time() - t_train) / 60:.1f} min).",
          "Cells: mean ± std (n seeds) over training seeds; @40 / @80 = landmark stack on the last 40 of "
          f"40 / 80 frames generated from single held-out reference poses ({SCORE_SAMPLES} sequences). "
          "Lower is better except apd (higher = more diverse) and motion_energy (1.0 = real speed). "
          "drift compares frames 41-80 with 1-40 (same value in both columns).", "",
          format_markdown(table, spec["metrics"], FRAMES), f"Detector stack: {det_note}"]
    if search:
        md += ["", "Hyperparameters (short `suhmo-search` per variant on the train persons; objective "
               "fd_clip40 on their own validation split):", ""]
        for v, s in search.items():
            md.append(f"- {v}: search `{s['experiment']}` ({s['trials']} trials x {s['iterations']} it, "
                      f"{s['wall_s']:.0f} s), best {s['best_trial']} fd_clip40(val)={s['best_fd_clip40_val']:.4g}: "
                      f"`{json.dumps(s['sampled'])}`")
    previews = {r["method"]: r["previews"] for r in results if r.get("previews")}
    if previews:
        md += ["", "Previews (4 samples from one held-out reference, 80 frames):", ""]
        for m, p in previews.items():
            md.append(f"- {m}: `{p['gif_one_reference']}`, `{p['png_one_reference']}`, 4 references: "
                      f"`{p['png_four_references']}`; mean pairwise RMS between the 4 samples over frames "
                      f"41-80: {p['mean_pairwise_rms_41_80']:.4f}")
    stem = args.out / f"table{args.table}_{args.data}"
    from suhmo.utils import atomic_write_text

    atomic_write_text(stem.with_suffix(".md"), "\n".join(md) + "\n")
    atomic_write_text(stem.with_suffix(".json"), json.dumps({
        "table": args.table, "data": args.data, "command": cmd, "iterations": iterations, "seeds": args.seeds,
        "wall_s": round(wall, 1), "frames": list(FRAMES), "score_samples": SCORE_SAMPLES, "base": common,
        "detector_stack": det_note, "search": search, "rows": table,
        "runs": [{k: v for k, v in r.items() if k != "train_log_last"} for r in results]},
        indent=2, default=str))
    print("\n".join(md))
    print(f"\nwrote {stem}.md and {stem}.json ({wall / 60:.1f} min)")
    return 0


def run_key(preset: str, overrides: dict, data_label: str, scoring: str = "") -> str:
    """A recipe run's name: the hash of its RESOLVED configuration (the preset's values with the
    overrides; seed, threads and progress excluded), so equal configs share runs and a run
    trained under an older ``--preset cpu`` is not read back as this one's. Only the values that
    differ from the config's defaults enter, so a config field added later at its default leaves
    the names (and the committed records) as they were. ``data.path`` (the train persons' file
    in a machine's work folder) enters as ``data_label`` (which file's train persons), so the
    same run has the same name on every machine; ``scoring`` names how it was scored (samples,
    frames, detector stack), so a record scored otherwise is not read back."""
    from suhmo.config import Config, make_config
    from tracking.results import config_key

    defaults = Config().flat()
    flat = {k: v for k, v in make_config(preset, overrides=overrides).flat().items() if k not in defaults
            or v != defaults[k]}
    return config_key({**flat, "data.path": data_label, **({"scoring": scoring} if scoring else {})})


def detector_status() -> str:
    """Whether the detector stack (FID/FVD TorchScript files) can run here."""
    from suhmo.metrics.detectors import DETECTORS
    from suhmo.paths import detector_dir

    folder = detector_dir()
    missing = [spec.filename for spec in DETECTORS.values() if not (folder / spec.filename).is_file()]
    if missing:
        return f"not run: {', '.join(sorted(set(missing)))} not found in {folder}"
    return "files present: FID/t-FID/FVD added to the scores"


if __name__ == "__main__":
    sys.exit(main())
