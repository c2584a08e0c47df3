"""What a trial of ``suhmo-search repeat`` does beyond a search trial: it knows which finalist
and seed it repeats (from the search constants, by its ``train.seed``), tags its MLflow run as a
repeat, and scores its best checkpoint at 40 and 80 generated frames (keys ``<metric>_g40`` /
``<metric>_g80``).

:func:`score_frames` needs no Ray: ``experiments/paper_tables.py`` uses it for models trained
in-process.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from suhmo.selection import Criterion
from tracking.results import (CONFIG_KEY_TAG, REPEAT_BATCH_TAG, REPEAT_OF_TAG, SEED_INDEX_TAG, frame_key, log_scores,
                              tag_run)

REPEAT_KEY = "repeat"  # in the search constants of a repeat's trials: what each seed repeats


def _memo_sample_fn(sample_fn: Callable) -> Callable:
    """Cache ``sample_fn`` on (refs, frames, seed): scoring at 40 and at 80 frames generates
    the same 80-frame sequences (the landmark stack runs to 80 frames for drift)."""
    cache: dict = {}

    def fn(refs: np.ndarray, frames: int, seed: int) -> np.ndarray:
        key = (hashlib.sha1(np.ascontiguousarray(refs).tobytes()).hexdigest(), int(frames), int(seed))
        if key not in cache:
            cache.clear()
            cache[key] = sample_fn(refs, frames, seed)
        return cache[key]

    return fn


def score_frames(G, cfg, eval_set, frames=(40, 80), device=None) -> dict[str, float]:
    """Metric stack of ``G`` at each number of generated ``frames`` -> ``{metric_g<f>: value}``.

    Uses ``suhmo.metrics.trainer_metrics`` with ``eval.frames = f`` (the LAST 40 of f frames
    are scored, paper Table 1), the evaluation seed and reference poses of ``cfg.eval``, and
    the eval set's cached reference statistics. ``drift`` (frames 41-80 against 1-40) does not
    depend on f.
    """
    from suhmo.generate import make_sample_fn
    from suhmo.metrics import trainer_metrics

    sample_fn = _memo_sample_fn(make_sample_fn(G, cfg, device))
    out: dict[str, float] = {}
    for f in frames:
        c = copy.deepcopy(cfg)
        c.eval.frames = int(f)
        for k, v in trainer_metrics(c, eval_set)(sample_fn, 0).items():
            out[frame_key(k, f)] = float(v)
    return out


def repeat_point(meta: dict, seed: int) -> Optional[dict]:
    """What the trial with ``train.seed = seed`` repeats (``repeat_of``, ``config_key``,
    ``seed_index``, ``batch``, ``frames``); None in a search trial."""
    rep = meta.get(REPEAT_KEY)
    if not rep or str(int(seed)) not in rep["points"]:
        return None
    return {**rep["points"][str(int(seed))], "batch": rep["batch"], "frames": rep["frames"]}


def tag_repeat_run(meta: dict, point: dict, trial_id: str) -> Optional[str]:
    """Tag the trial's MLflow run as a repeat (:mod:`tracking.results`); its run id, if any."""
    if not meta.get("tracking_uri"):
        return None
    import tracking

    run_id = tracking.find_trial_run(meta["tracking_uri"], meta["experiment_id"], meta["parent_run_id"], trial_id)
    if run_id is not None:
        tag_run(meta["tracking_uri"], run_id, {
            REPEAT_OF_TAG: point["repeat_of"], CONFIG_KEY_TAG: point["config_key"],
            REPEAT_BATCH_TAG: point["batch"], SEED_INDEX_TAG: point["seed_index"]})
    return run_id


def score_repeat(meta: dict, point: dict, cfg, work: Path, eval_set, run_id: Optional[str], last: dict) -> dict:
    """The trained trial's best checkpoint scored at the point's numbers of generated frames:
    logged to its MLflow run; returns the final result to report to Tune (with the objectives'
    values of the last evaluation, ``last``, which the searcher reads). ``eval_set``: the
    trial's held-out set."""
    from suhmo.generate import load_model

    ck = work / "best.pt" if (work / "best.pt").is_file() else work / "last.pt"
    G, _ = load_model(ck)
    step = int(_trained_step(ck))
    scores = score_frames(G, cfg, eval_set, point["frames"])
    m, mode = meta["objectives"][0]
    best = _best_from_log(work / "metrics.jsonl", m, mode)
    if run_id is not None:
        log_scores(meta["tracking_uri"], run_id, scores, step)
    objectives = {o: last[o] for o, _ in meta["objectives"] if o in last}
    return {**objectives, **scores, f"best_{m}": best, "scored_step": step, "step": int(cfg.train.iterations),
            "iterations": int(cfg.train.iterations), "mlflow_run_id": run_id or ""}


def _trained_step(path: Path) -> int:
    """The training step saved in the checkpoint file ``path``."""
    from suhmo.checkpoint import load_checkpoint

    return int(load_checkpoint(path).get("step", 0))


def _best_from_log(path: Path, metric: str, mode: str) -> float:
    lines = path.read_text().splitlines() if path.is_file() else []
    best = Criterion(metric, mode).best_of(json.loads(line).get(metric) for line in lines)
    return float("nan") if best is None else float(best)
