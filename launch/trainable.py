"""The Ray Tune function trainable around :class:`suhmo.train.Trainer`.

One call = one trial. The trial's config holds the sampled dotted keys (``optim.lr_g``,
``windows.family``, ``train.seed`` ...) and, under :data:`META_KEY`, the constants of the
search (preset, fixed base values, objectives, MLflow ids). The trainer's hooks are wired
to Tune:

* ``report(step, metrics, last.pt)`` -> ``tune.report(metrics, checkpoint=...)`` at every
  evaluation, with a checkpoint folder holding ``last.pt`` (+ ``best.pt``, ``config.yaml``,
  ``metrics.jsonl``, ``trial.json``); the same evaluation goes to MLflow (TrialLogger);
* ``should_stop()`` -> the Tune session's stop event, so a trial stopped by ASHA (or by
  Ctrl-C) leaves the training loop within one iteration;
* a restored trial copies the files of ``tune.get_checkpoint()`` into its work folder and
  the Trainer resumes from ``last.pt``.

The MLflow run of the trial is closed FINISHED (the trainer reached ``train.iterations``),
KILLED (stopped earlier: by the scheduler or an interrupted search) or FAILED with the
error as reason (a divergence raises SuhmoError in the trainer; Tune records the trial as
errored and the search goes on).
"""

from __future__ import annotations

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

META_KEY = "_search"  # constants of the search inside every trial config
CHECKPOINT_FILES = ("last.pt", "best.pt", "config.yaml", "metrics.jsonl")
_DATA_CACHE: dict[str, tuple] = {}  # data config -> (train_set, eval_set); immutable, safe across trials


def sampled_values(config: dict) -> dict[str, Any]:
    """The trial's own (searched) config values, without the search constants."""
    from launch.space import decode_sampled

    return decode_sampled({k: v for k, v in config.items() if k != META_KEY})


def trial_overrides(config: dict) -> dict[str, Any]:
    """Dotted overrides of one trial: the fixed base values, then the sampled ones."""
    meta = config[META_KEY]
    return {**meta["base"], **sampled_values(config)}


def _datasets(cfg) -> tuple:
    """Train/held-out split as the Trainer makes it, cached per process (reused actors)."""
    from suhmo.data import load_dataset
    from suhmo.train import SPLIT_SEED

    key = json.dumps(cfg.to_dict()["data"], sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        full = load_dataset(cfg)
        _DATA_CACHE[key] = full.split_by_person(cfg.data.test_fraction, seed=SPLIT_SEED)
    return _DATA_CACHE[key]


def _reset_process_state(threads: int, seed: int) -> None:
    """A reused actor carries module state from the previous trial: reset what matters."""
    import torch

    from suhmo.utils import seed_everything

    gc.collect()
    torch.set_num_threads(max(1, int(threads)))
    seed_everything(seed)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _stop_requested() -> bool:
    """True once Tune asked this trial to stop (scheduler decision, search ended, Ctrl-C).

    Tune reports results asynchronously: after a report the function keeps training while
    the driver decides. The stop event lets the trainer leave within one iteration instead
    of finishing a whole evaluation interval the scheduler already discarded.
    """
    try:
        from ray.train._internal.session import get_session

        session = get_session()
        return bool(session is not None and session.stop_event.is_set())
    except Exception:  # noqa: BLE001 - an internal API; never let it break training
        return False


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the trainer replaces files atomically: the link keeps this version
    except OSError:
        shutil.copy2(src, dst)


def _checkpoint_step(d: Path) -> int:
    try:
        return int(json.loads((d / "trial.json").read_text()).get("step", -1))
    except (OSError, ValueError, AttributeError):
        return -1


def stored_checkpoints(trial_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of the complete checkpoints a trial persisted in its storage folder
    (``checkpoint_NNNNNN`` with a trial.json and last.pt), oldest first."""
    found = []
    for d in Path(trial_dir).glob("checkpoint_*"):
        step = _checkpoint_step(d)
        if step >= 0 and (d / "last.pt").is_file():
            found.append((step, d))
    return sorted(found)


def _restore_files(work: Path, storage_trial_dir: Optional[Path] = None) -> dict:
    """Copy the newest checkpoint of this trial into ``work``; returns its trial.json.

    The newest is Tune's ``get_checkpoint()`` or, when newer, a checkpoint the trial persisted
    in its storage folder that the driver had not recorded yet: ``tune.report`` uploads the
    checkpoint before the driver processes the result, so a search interrupted in between
    would otherwise restart the trial from an older checkpoint (or from iteration 0).
    """
    from ray import tune

    ckpt = tune.get_checkpoint()
    stored = stored_checkpoints(storage_trial_dir) if storage_trial_dir is not None else []
    with (ckpt.as_directory() if ckpt is not None else _null_dir()) as d:
        best = Path(d) if d is not None else None
        if stored and (best is None or stored[-1][0] > _checkpoint_step(best)):
            best = stored[-1][1]
        if best is None:
            return {}
        work.mkdir(parents=True, exist_ok=True)
        for name in CHECKPOINT_FILES:
            if (best / name).is_file():
                shutil.copy2(best / name, work / name)
        info = best / "trial.json"
        return json.loads(info.read_text()) if info.is_file() else {}


class _null_dir:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def suhmo_trial(config: dict) -> None:
    """Ray Tune function trainable: train one SUHMo configuration (see the module docstring)."""
    import ray
    from ray import tune
    from ray.tune import Checkpoint

    from suhmo.config import make_config
    from suhmo.train import Trainer
    from suhmo.utils import SuhmoError

    t_entry = time.time()
    meta = config[META_KEY]
    ctx = tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    threads = int(meta.get("threads", 1))
    overrides = trial_overrides(config)
    overrides.update({"train.threads": threads, "train.progress": False})
    objectives = [tuple(o) for o in meta["objectives"]]
    if objectives and not overrides.get("train.select_metric"):
        # best.pt is kept on the search objective, not on the preset's select_metric
        overrides.update({"train.select_metric": objectives[0][0], "train.select_mode": objectives[0][1]})
    cfg = make_config(meta["preset"], overrides=overrides)  # ConfigError -> the trial errors with it
    seed = int(cfg.train.seed)
    _reset_process_state(threads, seed)

    work = Path(ctx.get_trial_dir()) / "run"
    storage_trial_dir = (Path(meta["storage"]) / meta["experiment"] / trial_name
                         if meta.get("storage") and meta.get("experiment") else None)
    restored = _restore_files(work, storage_trial_dir)
    work.mkdir(parents=True, exist_ok=True)

    logger = None
    if meta.get("tracking_uri"):
        from tracking import TrialLogger

        logger = TrialLogger(meta["tracking_uri"], meta["experiment_id"], meta["parent_run_id"],
                             trial_id=trial_id, trial_name=trial_name, config=cfg.flat(), seed=seed,
                             objectives=objectives, run_id=restored.get("mlflow_run_id"))
    node_ip = ray.util.get_node_ip_address()
    state: dict[str, Any] = {"last_step": int(restored.get("step", 0)), "first": True,
                             "best": restored.get("best")}
    trainer_box: dict[str, Any] = {}
    status, reason = "FAILED", None

    def report(step: int, metrics: dict, checkpoint_path: Optional[Path]) -> None:
        t_report = time.time()
        values = {k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        missing = [m for m, _ in objectives if m not in values]
        if missing:
            raise SuhmoError(f"objective {missing[0]!r} is not among the trainer's metrics "
                             f"({', '.join(sorted(values)) or 'none'}); check the metric stack / eval.metrics")
        bad = [m for m, _ in objectives if not math.isfinite(values[m])]
        if bad:
            raise SuhmoError(f"diverged at iteration {step}: objective {bad[0]} is {values[bad[0]]}")
        improved = False
        if objectives:
            m, mode = objectives[0]
            best = state["best"]
            improved = best is None or (values[m] < best if mode == "min" else values[m] > best)
            if improved:
                state["best"] = values[m]
        samples = None
        if logger is not None and improved and trainer_box.get("refs") is not None:
            # samples of the best checkpoint so far, rendered into the MLflow run
            samples = trainer_box["trainer"].sample_fn(trainer_box["refs"], int(cfg.eval.frames), cfg.eval.seed)
        if logger is not None:
            logger.log_eval(step, values, checkpoint_path, samples)
        extra = {"step": int(step), "iterations": int(cfg.train.iterations), "trial_seed": seed,
                 "study_seed": int(meta.get("study_seed", 0)), "node_ip": node_ip}
        if state["first"]:
            # overhead accounting for benchmarks/search.py
            extra["time_setup_s"] = trainer_box["t_fit"] - t_entry
            extra["time_trainer_first_s"] = t_report - trainer_box["t_fit"]
            state["first"] = False
        state["last_step"] = int(step)
        with tempfile.TemporaryDirectory(prefix="suhmo-ckpt-") as tmp:
            d = Path(tmp)
            for name in CHECKPOINT_FILES:
                if (work / name).is_file():
                    _link_or_copy(work / name, d / name)
            info = {"trial_id": trial_id, "step": int(step), "seed": seed, "best": state["best"],
                    "mlflow_run_id": logger.run_id if logger is not None else None}
            (d / "trial.json").write_text(json.dumps(info))
            extra["time_report_s"] = time.time() - t_report
            tune.report({**values, **extra}, checkpoint=Checkpoint.from_directory(tmp))

    try:
        train_set, eval_set = _datasets(cfg)
        trainer = Trainer(cfg, work, train_set=train_set, eval_set=eval_set, report=report,
                          should_stop=_stop_requested, resume=True)
        trainer_box["trainer"] = trainer
        if logger is not None and eval_set is not None and len(eval_set.clips):
            trainer_box["refs"] = _sample_refs(eval_set, k=4, seed=cfg.eval.seed)
        trainer_box["t_fit"] = time.time()
        trainer.fit()
        if trainer.step >= cfg.train.iterations:
            status = "FINISHED"
        else:
            status, reason = "KILLED", f"stopped early at iteration {trainer.step} (scheduler or interrupted search)"
    except SystemExit:
        # Tune ends a trial it stopped by raising SystemExit from tune.report
        done = state["last_step"] >= cfg.train.iterations
        status, reason = ("FINISHED", None) if done else \
            ("KILLED", f"stopped early at iteration {state['last_step']} (scheduler or interrupted search)")
        raise
    except StopIteration as e:
        # Tune's runner thread takes StopIteration for a clean exit and the error would be
        # lost ("Should not have reached here"): turn it into a real error
        status, reason = "FAILED", f"StopIteration escaped from training: {e!r}"
        raise SuhmoError(f"trial failed: {reason}") from e
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised for Tune
        status, reason = "FAILED", f"{type(e).__name__}: {e}"
        raise
    finally:
        if logger is not None:
            try:
                logger.close(status, reason)
            except Exception as e:  # noqa: BLE001 - the driver closes runs left open
                print(f"[suhmo] could not close MLflow run of trial {trial_id}: {e}", file=sys.stderr)


def _sample_refs(eval_set, k: int, seed: int):
    """``k`` first frames of held-out clips, the references of the rendered samples."""
    import numpy as np

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(eval_set.clips), size=min(k, len(eval_set.clips)), replace=False)
    return np.stack([eval_set.clips[i][0] for i in idx]).astype(np.float32)
