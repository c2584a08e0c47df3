"""The Ray Tune function trainable around :class:`suhmo.train.Trainer`.

One call = one trial. The trial's config holds the sampled dotted keys (``optim.lr_g``,
``windows.family``, ``train.seed`` ...) and, under :data:`META_KEY`, the constants of the
search (preset, fixed base values, objectives, MLflow ids). The trainer's hooks are wired
to Tune:

* ``report(step, metrics, last.pt)`` -> :class:`TuneReport`: the evaluation goes to the trial's
  tracking outbox (:class:`TrialRun`, the tracking hook; a background thread sends it to MLflow,
  so training never waits on the server), then ``tune.report(metrics, checkpoint=...)`` with
  a checkpoint folder holding ``last.pt`` (+ ``best.pt``, ``config.yaml``,
  ``metrics.jsonl``, ``trial.json``); a trial the scheduler (ASHA) stops ends there;
* ``should_stop()`` -> :class:`StopFlag`: the driver ended the search (time budget), so
  the trial leaves the training loop within one iteration;
* a restored trial copies the files of ``tune.get_checkpoint()`` into its work folder and
  the Trainer resumes from ``last.pt``.
* a trial of ``suhmo-search repeat`` (its seed is one of the repeat's fixed points,
  :mod:`launch.repeat_trial`) then reports its best checkpoint's scores at 40/80 frames.

Only Tune's public API is used (``ray.tune.get_context``, ``get_checkpoint``, ``report``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from launch.repeat_trial import repeat_point, score_repeat, tag_repeat_run
from launch.space import decode_sampled
from suhmo.resolve import resolve_config
from suhmo.utils import SuhmoError, seed_everything

META_KEY = "_search"  # constants of the search inside every trial config
STOP_FILE = "stop-requested"  # in the experiment folder: every trial stops (StopFlag)
CHECKPOINT_FILES = ("last.pt", "best.pt", "config.yaml", "metrics.jsonl")
_DATA_CACHE: dict[str, tuple] = {}  # data config -> (train_set, eval_set); immutable, safe across trials


def sampled_values(config: dict) -> dict[str, Any]:
    """The trial's own (searched) config values, without the search constants."""
    return decode_sampled({k: v for k, v in config.items() if k != META_KEY})


def trial_config(meta: dict, sampled: dict[str, Any]):
    """The resolved config of a trial (:func:`suhmo.resolve.resolve_config`): the preset, the
    fixed base values, then the sampled ones; best.pt is kept on the search's first objective
    unless the space sets ``train.select_metric`` (ConfigError -> the trial errors with it)."""
    return resolve_config(meta["preset"], meta["base"], sampled, meta.get("objectives"))


def trial_datasets(cfg) -> tuple:
    """Train/held-out split as the Trainer makes it (:mod:`suhmo.data.split`), cached per
    process (reused actors)."""
    from suhmo.data.split import load_split

    key = json.dumps(cfg.to_dict()["data"], sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_split(cfg)
    return _DATA_CACHE[key]


def import_for_the_trial(tracking_uri: Optional[str]) -> None:
    """Import now what the trial imports later anyway: torch._dynamo (torch.optim loads it with
    the first optimizer) and, when the search tracks, MLflow with its store for ``tracking_uri``
    (MLflow keeps one store per URI: the trial's run reuses it). Then :func:`reset_process_state`
    freezes them with the other modules, and the next trial's collection does not scan their
    ~0.3 M objects again (0.2-0.3 s per trial on a reused worker)."""
    import torch._dynamo  # noqa: F401

    if tracking_uri:
        from tracking import mlflow_client

        mlflow_client(tracking_uri)


def reset_process_state(threads: int, seed: int) -> None:
    """A reused actor carries module state from the previous trial: reset what matters.

    The previous trial's reference cycles are collected; what survives (modules, caches: ~0.5 M
    objects once torch, Ray and MLflow are imported) is then frozen out of later collections, so
    that the next trial's collection scans only the objects made since (0.3 s -> ms per trial)."""
    import torch

    gc.collect()
    gc.freeze()
    torch.set_num_threads(max(1, int(threads)))
    seed_everything(seed)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the trainer replaces files atomically: the link keeps this version
    except OSError:
        shutil.copy2(src, dst)


def _reported_step(d: Path) -> int:
    """The step of the checkpoint folder ``d`` that the trial reported (its trial.json); -1 without one."""
    try:
        return int(json.loads((d / "trial.json").read_text()).get("step", -1))
    except (OSError, ValueError, AttributeError):
        return -1


def stored_checkpoints(trial_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the complete checkpoints a trial persisted in its storage folder
    (``checkpoint_NNNNNN`` with a trial.json and last.pt), oldest first."""
    found = []
    for d in Path(trial_dir).glob("checkpoint_*"):
        step = _reported_step(d)
        if step >= 0 and (d / "last.pt").is_file():
            found.append((step, d))
    return sorted(found)


def storage_trial_dir(meta: dict, trial_name: str) -> Optional[Path]:
    """The trial's folder in the search's storage (where Tune persists its checkpoints)."""
    if meta.get("storage") and meta.get("experiment"):
        return Path(meta["storage"]) / meta["experiment"] / trial_name
    return None


def restore_files(work: Path, ckpt, storage_trial_dir: Optional[Path] = None) -> dict:
    """Copy the newest checkpoint of this trial into ``work``; returns its trial.json.

    The newest is Tune's ``get_checkpoint()`` (``ckpt``) or, when newer, a checkpoint the trial persisted
    in its storage folder that the driver had not recorded yet: ``tune.report`` uploads the
    checkpoint before the driver processes the result, so a search interrupted in between
    would otherwise restart the trial from an older checkpoint (or from iteration 0).
    """
    stored = stored_checkpoints(storage_trial_dir) if storage_trial_dir is not None else []
    with (ckpt.as_directory() if ckpt is not None else contextlib.nullcontext()) as d:
        best = Path(d) if d is not None else None
        if stored and (best is None or stored[-1][0] > _reported_step(best)):
            best = stored[-1][1]
        if best is None:
            return {}
        work.mkdir(parents=True, exist_ok=True)
        for name in CHECKPOINT_FILES:
            if (best / name).is_file():
                shutil.copy2(best / name, work / name)
        info = best / "trial.json"
        return json.loads(info.read_text()) if info.is_file() else {}


def stop_file(meta: dict) -> Optional[Path]:
    """The file whose presence tells every trial of the search to stop (see :class:`StopFlag`)."""
    if meta.get("storage") and meta.get("experiment"):
        return Path(meta["storage"]) / meta["experiment"] / STOP_FILE
    return None


class StopFlag:
    """The trainer's ``should_stop`` hook: True once the driver ended the whole search (its
    time budget is reached: :class:`launch.budget.TimeCap` writes :func:`stop_file`), so that
    the trial leaves within one iteration instead of training until its next evaluation.
    Polled every iteration, the file is looked at once every ``interval_s``.

    A trial the scheduler (ASHA) stops needs no flag: Tune reports synchronously, so the trial
    waits in ``tune.report`` for the driver's decision, and ``tune.report`` ends it.
    """

    def __init__(self, path: Optional[Path], interval_s: float = 1.0):
        self.path, self.interval_s = path, interval_s
        self.checked, self.stop = 0.0, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.stop and self.path is not None and now - self.checked >= self.interval_s:
            self.checked, self.stop = now, self.path.exists()
        return self.stop


def suhmo_trial(config: dict) -> None:
    """Ray Tune function trainable: train one SUHMo configuration (see the module docstring)."""
    clock = SetupClock()
    from ray import tune

    from suhmo.train import Trainer  # torch: the first trial of a new worker process imports it

    meta, ctx = config[META_KEY], tune.get_context()
    import_for_the_trial(meta.get("tracking_uri"))
    clock.mark("imports")
    threads = int(meta.get("threads", 1))
    cfg = trial_config(meta, {**sampled_values(config), "train.threads": threads, "train.progress": False})
    clock.mark("config")
    reset_process_state(threads, int(cfg.train.seed))
    clock.mark("reset")
    work = Path(ctx.get_trial_dir()) / "run"
    restored = restore_files(work, tune.get_checkpoint(), storage_trial_dir(meta, ctx.get_trial_name()))
    clock.mark("restore")
    report = TuneReport(cfg, meta, work, clock)
    point = repeat_point(meta, cfg.train.seed)  # a fixed point of `suhmo-search repeat`, else None
    try:
        with TrialRun(meta, cfg, ctx.get_trial_id(), ctx.get_trial_name(), restored.get("mlflow_run_id")) as run:
            clock.mark("mlflow_start")
            train_set, eval_set = trial_datasets(cfg)
            clock.mark("data")
            trainer = Trainer(cfg, work, train_set=train_set, eval_set=eval_set, resume=True,
                              report=report.to(run), should_stop=StopFlag(stop_file(meta)))
            clock.mark("trainer_init")
            run.watch(trainer, eval_set)
            trainer.fit()
    finally:
        run_id = tag_repeat_run(meta, point, ctx.get_trial_id()) if point is not None else None
    if point is not None:
        tune.report(score_repeat(meta, point, cfg, work, eval_set, run_id, report.last))


class SetupClock:
    """Where a trial's set-up time goes (for ``benchmarks/search.py``): wall-clock marks from
    the trial function's entry, reported with the first result as ``time_setup_<phase>_s``."""

    def __init__(self):
        self.t_entry = self.last = time.time()
        self.parts: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.time()
        self.parts[phase] = self.parts.get(phase, 0.0) + now - self.last
        self.last = now

    def result(self) -> dict[str, float]:
        """The first result's timing keys: the phases, and the entry time (wall clock, the
        driver compares it with the trial's start)."""
        return {"time_entry_wall": self.t_entry, **{f"time_setup_{k}_s": v for k, v in self.parts.items()}}


class TuneReport:
    """The trainer's ``report`` hook: the evaluation goes to MLflow (``run``), then to Tune with
    a checkpoint folder (last.pt, best.pt, config.yaml, metrics.jsonl, trial.json)."""

    def __init__(self, cfg, meta: dict, work: Path, clock: "SetupClock"):
        import ray

        self.cfg, self.meta, self.work, self.run = cfg, meta, work, None
        self.objectives = [m for m, _ in meta["objectives"]]
        self.node_ip = ray.util.get_node_ip_address()
        self.clock, self.t_fit = clock, None  # overhead accounting for benchmarks/search.py
        self.last: dict[str, float] = {}  # the values of the last evaluation

    def to(self, run: "TrialRun") -> "TuneReport":
        """This hook, feeding ``run`` (the trial's tracking) before Tune."""
        self.run = run
        return self

    def __call__(self, step: int, metrics: dict, checkpoint_path: Optional[Path]) -> None:
        from ray import tune

        t_report = time.time()
        values = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        check_objectives(values, self.objectives, step)
        self.last = values
        self.run.log_eval(step, values, checkpoint_path)
        extra = {"step": int(step), "iterations": int(self.cfg.train.iterations), "trial_seed": int(self.cfg.train.seed),
                 "study_seed": int(self.meta.get("study_seed", 0)), "node_ip": self.node_ip,
                 "tracking_waiting": self.run.tracking_waiting()}
        if self.t_fit is None:
            self.t_fit = self.run.t_fit
            extra.update(time_setup_s=self.t_fit - self.clock.t_entry, time_trainer_first_s=t_report - self.t_fit,
                         time_log_eval_s=time.time() - t_report, **self.clock.result())
        with tempfile.TemporaryDirectory(prefix="suhmo-ckpt-") as tmp:
            d = Path(tmp)
            for name in CHECKPOINT_FILES:
                if (self.work / name).is_file():
                    _link_or_copy(self.work / name, d / name)
            info = {"trial_id": self.run.trial_id, "step": int(step), "seed": int(self.cfg.train.seed),
                    "mlflow_run_id": self.run.run_id}
            (d / "trial.json").write_text(json.dumps(info))
            extra["time_report_s"] = time.time() - t_report
            if "time_entry_wall" in extra:
                extra["time_report_wall"] = time.time()  # tune.report is called now (upload, then the driver)
            tune.report({**values, **extra}, checkpoint=tune.Checkpoint.from_directory(tmp))


def check_objectives(values: dict[str, float], objectives: list[str], step: int) -> None:
    """SuhmoError when an objective is missing from an evaluation or not finite (divergence)."""
    missing = [m for m in objectives if m not in values]
    if missing:
        raise SuhmoError(f"objective {missing[0]!r} is not among the trainer's metrics "
                         f"({', '.join(sorted(values)) or 'none'}); check the metric stack / eval.metrics")
    bad = [m for m in objectives if not math.isfinite(values[m])]
    if bad:
        raise SuhmoError(f"diverged at iteration {step}: objective {bad[0]} is {values[bad[0]]}")


class TrialRun:
    """The tracking hook of a trial, a context manager around the training: its MLflow run
    (when the search tracks), fed by :class:`TuneReport`, with samples of each new best
    checkpoint, and closed with the trial's outcome:

    * FINISHED: the trainer reached ``train.iterations`` (also when Tune ends the trial at
      its last report by raising SystemExit from ``tune.report``);
    * KILLED: stopped earlier, by the scheduler or an interrupted search;
    * FAILED with the error as reason (a divergence raises SuhmoError in the trainer; Tune
      records the trial as errored and the search goes on).
    """

    def __init__(self, meta: dict, cfg, trial_id: str, trial_name: str, run_id: Optional[str] = None):
        from tracking.outbox import OutboxLogger

        self.cfg, self.trial_id = cfg, trial_id
        self.trainer, self.refs, self.t_fit = None, None, time.time()
        # every trial records into its outbox, also without tracking (`suhmo-search sync` replays it);
        # the run id lives in the outbox's replay state (``run_id`` of an older checkpoint is not needed)
        folder = outbox_dir(meta, trial_id)
        self.logger = OutboxLogger(folder, tracking_uri=meta.get("tracking_uri"),
                                   experiment_id=meta.get("experiment_id"), parent_run_id=meta.get("parent_run_id"),
                                   trial_id=trial_id, trial_name=trial_name, config=cfg.flat(),
                                   seed=int(cfg.train.seed), objectives=meta["objectives"])
        self.tracks = bool(meta.get("tracking_uri"))

    @property
    def run_id(self) -> Optional[str]:
        return self.logger.run_id

    def tracking_waiting(self) -> int:
        """Records of this trial not yet in the tracking store."""
        return self.logger.waiting() if self.tracks else 0

    def watch(self, trainer, eval_set) -> None:
        """Training starts: samples of a new best come from this trainer and eval set."""
        self.trainer = trainer
        if eval_set is not None and len(eval_set.clips):
            self.refs = sample_refs(eval_set, k=4, seed=self.cfg.eval.seed)
        self.t_fit = time.time()

    def log_eval(self, step: int, values: dict[str, float], checkpoint_path: Optional[Path]) -> None:
        samples = portrait = None
        if self.refs is not None:
            trainer, refs, ev = self.trainer, self.refs, self.cfg.eval
            samples = lambda: trainer.sample_fn(refs, int(ev.frames), ev.seed)  # noqa: E731 - rendered on a new best only
        if self.trainer is not None:
            trainer, cfg = self.trainer, self.cfg
            portrait = lambda: trial_portrait(trainer, cfg)  # noqa: E731 - likewise
        self.logger.log_eval(step, values, checkpoint_path, samples, portrait)

    def __enter__(self) -> "TrialRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        step = self.trainer.step if self.trainer is not None else 0
        done = step >= self.cfg.train.iterations
        status, reason = "FAILED", f"{getattr(exc_type, '__name__', '')}: {exc}"
        if exc_type is None or exc_type is SystemExit:  # Tune ends a trial it stopped by SystemExit
            status, reason = ("FINISHED", None) if done else \
                ("KILLED", f"stopped early at iteration {step} (scheduler or interrupted search)")
        elif exc_type is not None and issubclass(exc_type, StopIteration):
            reason = f"StopIteration escaped from training: {exc!r}"
        try:
            self.logger.close(status, reason)
        except Exception as e:  # noqa: BLE001 - the driver closes runs left open
            print(f"[suhmo] could not record the end of trial {self.trial_id}: {e}", file=sys.stderr)
        if exc_type is not None and issubclass(exc_type, StopIteration):
            # Tune's runner thread takes StopIteration for a clean exit and the error would be
            # lost ("Should not have reached here"): turn it into a real error
            raise SuhmoError(f"trial failed: {reason}") from exc
        return False


def outbox_dir(meta: dict, trial_id: str) -> Path:
    """The trial's tracking outbox: in the search's storage folder (``suhmo-search sync`` and the
    driver find it there), else (a trial run outside a search) a fresh temporary folder."""
    from tracking.outbox import outbox_root

    if meta.get("storage") and meta.get("experiment"):
        return outbox_root(Path(meta["storage"]) / meta["experiment"]) / str(trial_id)
    return Path(tempfile.mkdtemp(prefix=f"suhmo-outbox-{trial_id}-"))


PORTRAIT_FRAMES, PORTRAIT_SIZE = 32, 128  # the trial's portrait GIF: small and cheap (~0.2 MB, ~1 s)


def trial_portrait(trainer, cfg):
    """The bundled portrait moved by the trainer's current generator (its samples' G)."""
    from suhmo.animate import animate_portrait

    return animate_portrait(trainer.sample_fn, cfg, frames=PORTRAIT_FRAMES, seed=cfg.eval.seed,
                            size=PORTRAIT_SIZE)


def sample_refs(eval_set, k: int, seed: int):
    """``k`` first frames of held-out clips, the references of the rendered samples."""
    import numpy as np

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(eval_set.clips), size=min(k, len(eval_set.clips)), replace=False)
    return np.stack([eval_set.clips[i][0] for i in idx]).astype(np.float32)
