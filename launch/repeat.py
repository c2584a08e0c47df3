"""``suhmo-search repeat``: re-train the K best configurations of a search with S fresh seeds.

The paper reports every GAN as mean ± std over 3 trainings; a search keeps one (lucky) seed
per configuration. A repeat takes the ``top`` K trials of a finished search, ranked like
``best-export`` (the best value of the first objective at a checkpoint), and trains each
configuration again with ``seeds`` new seeds through the search's own path: one fixed point
per (configuration, seed) enqueued into the Optuna study (``Study.enqueue_trial``) of the
search's Tuner (:func:`launch.runner.build_tuner`), FIFO, as many trials as points. Each trial
runs the search's trainable (:func:`launch.trainable.suhmo_trial`: same MLflow logging,
checkpoints and resume), which then scores its best checkpoint at 40 and 80 generated frames
(:mod:`launch.repeat_trial`, keys ``<metric>_g40`` / ``<metric>_g80``).

Seeds: ``repeat_seed(study_seed, config_key, i)``, a stable hash, so the same command gives
the same seeds and they differ from the search's own trial seeds; recorded in the trial
config (``train.seed``), the MLflow params (``seed``) and ``repeat.json``.

MLflow: the repeat runs are children of the search's parent run, tagged ``repeat_of``,
``config_key``, ``repeat_batch`` and ``repeat_seed_index`` (:mod:`tracking.results`); the
summary (mean ± std over seeds) goes to the parent run as ``repeats/<batch>/summary.{md,json}``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

from launch.leaderboard import rank_rows, read_trials
from launch.plan import SearchPlan
from launch.rayenv import start_ray
from launch.space import FixedPoint
from launch.repeat_trial import REPEAT_KEY, repeat_point
from launch.trainable import META_KEY, sampled_values, trial_config
from suhmo.utils import SuhmoError, atomic_write_text
from tracking.results import (close_unfinished, config_key, format_cell, log_parent_artifacts, mean_std,
                              search_runs)

REPEAT_FILE = "repeat.json"


# ---------------------------------------------------------------------- planning
def parse_frames(text: str) -> list[int]:
    """``"40,80"`` -> ``[40, 80]``; each >= 40 (the stack scores the last 40 generated frames)."""
    try:
        frames = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise SuhmoError(f"--frames {text!r}: expected numbers such as 40,80") from None
    if not frames or any(f < 40 for f in frames):
        raise SuhmoError(f"--frames {text!r}: the metric stack scores the last 40 generated frames; "
                         "give numbers >= 40, e.g. 40,80")
    return sorted(set(frames))


def repeat_seed(study_seed: int, key: str, index: int) -> int:
    """Seed of repeat ``index`` of configuration ``key``: a stable hash, < 2**31."""
    digest = hashlib.sha256(f"suhmo-repeat:{int(study_seed)}:{key}:{int(index)}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


@dataclass
class RepeatPlan:
    name: str  # the repeat batch (also the Tune experiment name)
    search: str  # the search experiment
    search_dir: str
    storage: str
    top: int
    seeds: int
    frames: list[int]
    study_seed: int
    objectives: list[list[str]]
    tracking_uri: Optional[str]
    experiment_id: Optional[str]
    parent_run_id: Optional[str]
    max_concurrent: int
    configs: list[dict] = field(default_factory=list)  # per configuration: key, repeat_of, sampled, seeds, ...
    created: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))

    @property
    def exp_dir(self) -> Path:
        return Path(self.storage) / self.name

    def fixed_points(self) -> list[FixedPoint]:
        """The trials of the repeat, in order: each configuration with each of its seeds."""
        return [FixedPoint(c["params"], seed) for c in self.configs for seed in c["seeds"]]

    def trial_meta(self) -> dict:
        """The search constants that make a trial of the search's Tuner a repeat trial: per seed,
        what it repeats (:func:`repeat_point`)."""
        points = {str(seed): {"repeat_of": c["repeat_of"], "config_key": c["config_key"], "seed_index": i}
                  for c in self.configs for i, seed in enumerate(c["seeds"])}
        return {REPEAT_KEY: {"batch": self.name, "frames": list(self.frames), "points": points}}


def finalist(found: dict, meta: dict, study_seed: int, seeds: int) -> dict:
    """A configuration to repeat, from the config of the search trial that found it: its Optuna
    values (``params``, the fixed point's), its config values without the seed (``sampled``),
    its ``config_key`` and its ``seeds`` new seeds."""
    params = {k: v for k, v in found.items() if k not in (META_KEY, "train.seed")}
    sampled = {k: v for k, v in sampled_values(found).items() if k != "train.seed"}
    key = config_key(trial_config(meta, sampled).flat())
    return {"config_key": key, "sampled": sampled, "params": params,
            "seeds": [repeat_seed(study_seed, key, i) for i in range(seeds)]}


def plan_repeat(search_dir: Path, *, top: int, seeds: int, frames: list[int], tracking_uri: Optional[str],
                storage: Optional[str] = None, max_concurrent: Optional[int] = None,
                name: Optional[str] = None) -> RepeatPlan:
    """Pick the ``top`` configurations of the search in ``search_dir`` and their new seeds."""

    if top < 1 or seeds < 1:
        raise SuhmoError(f"--top {top} --seeds {seeds}: both must be >= 1")
    plan = SearchPlan.load(search_dir)
    space = plan.resolved_space()
    rows = read_trials(search_dir, plan.objectives, space.iterations)
    m = plan.objectives[0][0]
    ranked = [r for r in rank_rows(rows, plan.objectives) if r.state in ("finished", "stopped") and m in r.best]
    if not ranked:
        raise SuhmoError(f"search {plan.experiment}: no finished trial with a value of {m} to repeat "
                         f"({len(rows)} trial(s): {', '.join(sorted({r.state for r in rows})) or 'none'})")
    meta = {"preset": space.preset, "base": dict(space.base), "objectives": plan.objectives}
    configs, seen = [], set()
    for r in ranked:
        c = finalist(r.config, meta, plan.seed, seeds)
        if c["config_key"] in seen:  # two trials of the same configuration: repeat it once
            continue
        seen.add(c["config_key"])
        configs.append({**c, "repeat_of": r.trial_id, "original_seed": r.seed,
                        "original_best": r.best[m][0], "original_best_step": r.best[m][1]})
        if len(configs) == top:
            break
    if tracking_uri and not plan.parent_run_id:
        raise SuhmoError(f"search {plan.experiment} was run without MLflow (no parent run); "
                         "pass --tracking-uri none to repeat it without tracking")
    name = name or f"{plan.experiment}-repeat-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    root = Path(storage).expanduser().resolve() if storage else Path(plan.storage)
    return RepeatPlan(name=name, search=plan.experiment, search_dir=str(search_dir), storage=str(root), top=top,
                      seeds=seeds, frames=list(frames), study_seed=plan.seed, objectives=plan.objectives,
                      tracking_uri=tracking_uri, experiment_id=plan.experiment_id if tracking_uri else None,
                      parent_run_id=plan.parent_run_id if tracking_uri else None,
                      max_concurrent=int(max_concurrent or plan.max_concurrent), configs=configs)


# ---------------------------------------------------------------------- driver
def _progress(rp: RepeatPlan, echo):
    from launch.progress import Progress

    class RepeatProgress(Progress):
        def on_trial_start(self, iteration, trials, trial, **info):
            seed = trial.config["train.seed"]
            p = repeat_point(trial.config[META_KEY], seed)
            self.started.setdefault(trial.trial_id, time.time())
            self._line(f"start    trial_{trial.trial_id}  config {p['config_key']} (repeat of trial_{p['repeat_of']}) "
                       f"seed #{p['seed_index']} = {seed}")

    return RepeatProgress(rp.objectives, echo)


def tuner_plan(rp: RepeatPlan, search: SearchPlan, address: Optional[str], cpus_per_trial: float) -> SearchPlan:
    """The plan the search's Tuner runs the repeat with: its fixed points, FIFO, no time budget,
    logged under the search's MLflow parent run."""
    return replace(search, experiment=rp.name, storage=rp.storage, num_samples=len(rp.fixed_points()),
                   max_concurrent=rp.max_concurrent, cpus_per_trial=float(cpus_per_trial), gpus_per_trial="auto",
                   scheduler={"type": "fifo"}, objectives=rp.objectives, time_budget_s=None, seed=rp.study_seed,
                   address=address, tracking_uri=rp.tracking_uri, experiment_id=rp.experiment_id,
                   parent_run_id=rp.parent_run_id)


def _announce(rp: RepeatPlan, echo) -> None:
    echo(f"repeat {rp.name}: {len(rp.configs)} configuration(s) of search {rp.search} x {rp.seeds} seed(s) "
         f"= {len(rp.fixed_points())} trials, {rp.max_concurrent} at a time; scored at "
         f"{', '.join(map(str, rp.frames))} generated frames")
    for c in rp.configs:
        echo(f"  config {c['config_key']}  repeat of trial_{c['repeat_of']} "
             f"(best {rp.objectives[0][0]}={c['original_best']:.4g} at it {c['original_best_step']}), "
             f"seeds {', '.join(map(str, c['seeds']))}")


def _result_row(res) -> dict:
    seed = res.config["train.seed"]
    p = repeat_point(res.config[META_KEY], seed)
    metrics = {k: float(v) for k, v in (res.metrics or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"config_key": p["config_key"], "repeat_of": p["repeat_of"], "seed": seed,
            "seed_index": p["seed_index"], "error": str(res.error).splitlines()[0][:200] if res.error else None,
            "metrics": metrics if res.error is None else {}}


def _finish_tracking(rp: RepeatPlan, echo) -> None:
    from tracking.outbox import replay_search

    left = replay_search(rp.exp_dir, rp.tracking_uri, rp.experiment_id, rp.parent_run_id, keep_files=False,
                         budget_s=300.0)
    if left["waiting"]:
        echo(f"tracking: {left['waiting']} record(s) of the repeat could not be logged to {rp.tracking_uri} "
             f"({left['errors'][0] if left['errors'] else 'time is up'}); they are kept in "
             f"{rp.exp_dir / 'tracking-outbox'}")
    close_unfinished(rp.tracking_uri, rp.experiment_id, rp.parent_run_id, rp.name)


def run_repeat(rp: RepeatPlan, *, address: Optional[str] = None, cpus_per_trial: float = 1.0,
               echo: Callable[[str], None] = print, shutdown: bool = True) -> dict:
    """Train every (configuration, seed) of ``rp`` as fixed points of the search's own Tuner
    (:func:`launch.runner.build_tuner`); returns the summary (also saved/logged)."""
    from launch.rayenv import trial_resources
    from launch.runner import build_tuner

    if rp.exp_dir.exists():
        raise SuhmoError(f"repeat {rp.name!r} already exists in {rp.storage}; pass another --name")
    search = SearchPlan.load(Path(rp.search_dir))
    plan = tuner_plan(rp, search, address, cpus_per_trial)
    if rp.tracking_uri:
        search_runs(rp.tracking_uri, rp.search, rp.parent_run_id)  # the parent must exist in this store
    t0 = time.time()
    cluster = start_ray(address, echo)
    try:
        rp.exp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(rp.exp_dir / REPEAT_FILE, json.dumps(rp.__dict__, indent=2, default=str))
        tuner = build_tuner(plan, search.resolved_space(), trial_resources(plan, cluster), [_progress(rp, echo)],
                            fixed=rp.fixed_points(), meta=rp.trial_meta())
        _announce(rp, echo)
        results = [_result_row(res) for res in tuner.fit()]
    finally:
        if rp.tracking_uri:
            _finish_tracking(rp, echo)
        if shutdown:
            import ray

            ray.shutdown()
    summary = summarize(rp, results, time.time() - t0)
    atomic_write_text(rp.exp_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    atomic_write_text(rp.exp_dir / "summary.md", summary["markdown"])
    if rp.tracking_uri:
        log_parent_artifacts(rp.tracking_uri, rp.parent_run_id, f"repeats/{rp.name}",
                             {"summary.json": json.dumps(summary, indent=2, default=str),
                              "summary.md": summary["markdown"]},
                             tags={"last_repeat": rp.name})
    return summary


def summarize(rp: RepeatPlan, results: list[dict], wall_s: float) -> dict:
    """Mean ± std over the seeds of every metric, per configuration (+ a markdown table)."""

    by_key: dict[str, list[dict]] = {}
    for r in results:
        by_key.setdefault(r["config_key"], []).append(r)
    skip = {"step", "iterations", "scored_step", "training_iteration", "time_this_iter_s", "time_total_s",
            "timestamp", "pid", "time_since_restore", "iterations_since_restore", "done", "trial_seed",
            "study_seed", "time_setup_s", "time_trainer_first_s", "time_report_s", "tracking_waiting",
            *(m for m, _ in rp.objectives)}  # the last evaluation's objectives: the searcher's, not a score
    keys = sorted({k for r in results for k in r["metrics"] if k not in skip and not k.startswith("time_")})
    configs = []
    for c in rp.configs:
        rs = by_key.get(c["config_key"], [])
        stats = {k: dict(zip(("mean", "std", "n"), mean_std([r["metrics"].get(k, float("nan")) for r in rs])))
                 for k in keys}
        configs.append({**{k: c[k] for k in ("config_key", "repeat_of", "sampled", "seeds", "original_best")},
                        "errors": [r["error"] for r in rs if r["error"]], "stats": stats})
    header = ["metric"] + [f"{c['config_key']} (trial_{c['repeat_of']})" for c in configs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(format_cell(**c["stats"][k]) for c in configs) + " |")
    md = (f"# Repeat {rp.name}\n\nsearch `{rp.search}`, top {rp.top} configuration(s) x {rp.seeds} seed(s); "
          f"cells: mean ± std (n seeds); `_g40`/`_g80`: scored on the last 40 of 40/80 generated frames\n\n"
          + "\n".join(lines) + "\n")
    return {"repeat": rp.name, "search": rp.search, "wall_s": round(wall_s, 1), "configs": configs,
            "metrics": keys, "trials": results, "markdown": md}


def render_summary(summary: dict, echo: Callable[[str], None] = print) -> None:
    """Print the summary table: one row per metric, one column per configuration."""

    configs = summary["configs"]
    echo("")
    echo(f"repeat {summary['repeat']} of search {summary['search']} ({summary['wall_s']:.0f} s wall): "
         "mean ± std (n seeds)")
    header = ["metric"] + [f"{c['config_key']} (trial_{c['repeat_of']})" for c in configs]
    table = [[k] + [format_cell(**c["stats"][k]) for c in configs] for k in summary["metrics"]]
    widths = [max(len(h), *(len(r[j]) for r in table)) if table else len(h) for j, h in enumerate(header)]
    echo("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    echo("  ".join("-" * w for w in widths))
    for r in table:
        echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for c in configs:
        for e in c["errors"]:
            echo(f"error in config {c['config_key']}: {e}")
