"""One trial's child run, logged from inside the trial (through its outbox replay).

Layout of a trial's artifacts::

    evals/step_<k>/metrics.json     every metric at evaluation step k
    evals/step_<k>/samples.gif      generated samples at step k (suhmo.render)
    evals/step_<k>/motion_map.png   motion map of the same samples
    evals/step_<k>/checkpoint.json  where the trainer's checkpoint of step k lives
    checkpoints/step_<k>/<file>     a copy of the checkpoint, kept when step k improves
                                    the best-so-far value of an objective (every
                                    checkpoint with keep_checkpoints="all")

Metrics of a trial: every metric at its step, plus per objective ``best_<metric>`` (the
best value so far) and ``best_<metric>_step`` (the step of the checkpoint holding it).
``metrics.<name>`` in the MLflow table is the LAST value; ``best_<name>`` compares trials
on their best checkpoint.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from suhmo.selection import Criterion
from suhmo.utils import SuhmoError, atomic_write_text
from tracking.search_run import close_run
from tracking.store import (CKPT_DIR, EVAL_DIR, KIND_TAG, LAST_STEP_TAG, OBJECTIVES_TAG, PARENT_TAG, find_trial_run,
                            flatten, log_params, mlflow_client, now_ms, objective_pairs, set_tags)


class TrialLogger:
    """Logs one trial into a nested child run of the search's parent run (inside the trial).

    ``config`` is the flat dotted config (``{"optim.lr_g": 1e-4, ...}``; a nested dict is
    flattened); every field becomes a param. ``objectives`` is ``[(metric, "min"|"max")]``.
    A resumed trial reuses its run: pass ``run_id`` (stored in the Tune checkpoint), or let
    the logger find the run by ``trial_id`` under the same parent.

    Use as a context manager so that the run is always closed: a normal exit ends it
    FINISHED, ``SystemExit``/``KeyboardInterrupt`` (Ray Tune stops a trial by raising
    ``SystemExit`` from ``tune.report``) KILLED, any other exception FAILED with the
    exception as error reason. ``close()`` may also be called explicitly first.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, *,
                 trial_id: str, trial_name: str | None = None, config: dict | None = None,
                 seed: int | None = None, objectives: Sequence[Sequence[str]] | None = None,
                 run_id: str | None = None, keep_checkpoints: str = "best",
                 render_samples: int = 4, render_size: int = 128) -> None:
        if keep_checkpoints not in ("best", "all"):
            raise SuhmoError(f"keep_checkpoints={keep_checkpoints!r}: choose best or all")
        flat = flatten(dict(config or {}))
        self.tracking_uri = tracking_uri
        self.client = mlflow_client(tracking_uri)
        self.experiment_id = str(experiment_id)
        self.parent_run_id = parent_run_id
        self.trial_id = str(trial_id)
        self.objectives = objective_pairs(objectives)
        self.keep_checkpoints = keep_checkpoints
        self.render_samples = render_samples
        self.render_size = render_size
        self.fps = float(flat.get("data.fps", 25.0))
        self.closed = False
        self.best: dict[str, tuple[float, int]] = {}  # metric -> (value, step)
        self.last_logged_step = -1  # a resumed run: steps up to this one are in MLflow already
        if run_id is None:
            run_id = find_trial_run(tracking_uri, self.experiment_id, parent_run_id, self.trial_id)
        if run_id is not None:
            self.run_id = run_id
            self._reopen()
        else:
            tags = {PARENT_TAG: parent_run_id, KIND_TAG: "trial", "trial_id": self.trial_id,
                    "status": "RUNNING", "stopped_by_scheduler": "false", "error_reason": "",
                    OBJECTIVES_TAG: json.dumps(self.objectives)}
            variant = flat.get("model.variant")
            if variant is not None:
                tags["variant"] = variant
            run = self.client.create_run(self.experiment_id, run_name=trial_name or self.trial_id, tags=tags)
            self.run_id = run.info.run_id
        params = dict(flat)
        if seed is not None:
            params["seed"] = seed
        log_params(self.client, self.run_id, params)

    # -------------------------------------------------------------- lifecycle
    def _reopen(self) -> None:
        try:
            run = self.client.get_run(self.run_id)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":  # the store did not answer: not a verdict on the run
                raise
            raise SuhmoError(f"trial run {self.run_id} not found at {self.tracking_uri}") from None
        if run.data.tags.get(PARENT_TAG) != self.parent_run_id:
            raise SuhmoError(f"run {self.run_id} is not a child of search run {self.parent_run_id}")
        try:
            self.last_logged_step = int(run.data.tags.get(LAST_STEP_TAG, -1))
        except ValueError:
            self.last_logged_step = -1
        m = run.data.metrics
        for metric, _ in self.objectives:
            if f"best_{metric}" in m and f"best_{metric}_step" in m:
                self.best[metric] = (float(m[f"best_{metric}"]), int(m[f"best_{metric}_step"]))
        self.client.update_run(self.run_id, status="RUNNING")
        set_tags(self.client, self.run_id, {"status": "RUNNING", "resumed": "true"})

    def __enter__(self) -> "TrialLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.closed:
            return False
        if exc_type is None:
            self.close("FINISHED")
        elif issubclass(exc_type, (SystemExit, KeyboardInterrupt, GeneratorExit)):
            why = "stopped by the Tune scheduler" if exc_type is SystemExit else f"interrupted ({exc_type.__name__})"
            self.close("KILLED", why)
        else:
            self.close("FAILED", f"{exc_type.__name__}: {exc}")
        return False

    def close(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED); idempotent."""
        if self.closed:
            return
        close_run(self.tracking_uri, self.run_id, status, reason)
        self.closed = True

    # -------------------------------------------------------------- evaluation
    def log_eval(self, step: int, metrics: dict[str, float], checkpoint_path: str | Path | None = None,
                 samples: np.ndarray | Callable[[], np.ndarray] | None = None,
                 portrait: np.ndarray | Callable[[], np.ndarray] | None = None,
                 timestamp_ms: int | None = None) -> dict[str, tuple[float, int]]:
        """Log one evaluation: metrics at ``step``, best-so-far per objective, artifacts.

        ``samples`` are generated sequences ``[K, T, 68, 2]`` in the [0, 1] frame (a GIF and
        a motion map are rendered from the first ``render_samples``), or a function that
        generates them, called only when this step improved the first objective (the
        samples of each new best checkpoint); ``checkpoint_path`` is
        the trainer's checkpoint file (or folder) of this step. ``portrait`` is RGB frames
        ``[T, H, W, 3]`` of a face animated by the model (``suhmo.animate``), or a function making
        them; like ``samples`` it is used on a new best only, and written as ``portrait.gif`` beside
        ``samples.gif`` and at the top of the run (the portrait of the best checkpoint so far).
        ``timestamp_ms``: when the evaluation happened (a replayed record logs the same metric rows
        again, which MLflow keeps once). Returns the best-so-far ``{metric: (value, step)}``.
        """
        if self.closed:
            raise SuhmoError(f"trial run {self.run_id} is closed; cannot log step {step}")
        step = int(step)
        if step <= self.last_logged_step:
            # a resumed trial that re-evaluates a step it had logged before the interruption
            # (its checkpoint was older than its last report): MLflow keeps one value per step
            return dict(self.best)
        ts = int(timestamp_ms) if timestamp_ms is not None else now_ms()
        values = {str(k): float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}
        batch = [Metric(k, v, ts, step) for k, v in values.items()]
        improved = []
        for metric, mode in self.objectives:
            if metric in values and Criterion(metric, mode).better(values[metric], self.best.get(metric, (None,))[0]):
                self.best[metric] = (values[metric], step)
                improved.append(metric)
            if metric in self.best:
                value, at = self.best[metric]
                batch += [Metric(f"best_{metric}", value, ts, step),
                          Metric(f"best_{metric}_step", float(at), ts, step)]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])
        # lets the driver tell a trial that trained to its end from a stopped one
        self.client.set_tag(self.run_id, LAST_STEP_TAG, str(step))

        with tempfile.TemporaryDirectory(prefix="suhmo-eval-") as tmp:
            d = Path(tmp)
            record = {"step": step, "metrics": values,
                      "best": {m: {"value": v, "step": s} for m, (v, s) in self.best.items()}}
            atomic_write_text(d / "metrics.json", json.dumps(record, indent=2))
            if callable(samples):
                samples = samples() if self.objectives and self.objectives[0][0] in improved else None
            if checkpoint_path is not None:
                atomic_write_text(d / "checkpoint.json",
                                  json.dumps({"step": step, "path": str(Path(checkpoint_path).resolve())}))
            if samples is not None and self.render_samples > 0:
                self._render(np.asarray(samples), d)
            new_best = not self.objectives or self.objectives[0][0] in improved
            if portrait is not None and new_best:
                import cv2

                from suhmo.render import write_video

                try:
                    frames = portrait() if callable(portrait) else portrait
                    write_video(np.asarray(frames), d / "portrait.gif", fps=self.fps)
                except (SuhmoError, ValueError, cv2.error) as e:  # a picture, not worth the trial
                    print(f"[suhmo] trial run {self.run_id}: no portrait at step {step}: {e}", file=sys.stderr)
            self.client.log_artifacts(self.run_id, str(d), f"{EVAL_DIR}/step_{step}")
            if (d / "portrait.gif").is_file():
                self.client.log_artifact(self.run_id, str(d / "portrait.gif"))

        keep = self.keep_checkpoints == "all" or bool(improved) or not self.objectives
        if checkpoint_path is not None and keep:
            self._log_checkpoint(Path(checkpoint_path), step)
        return dict(self.best)

    def _log_checkpoint(self, path: Path, step: int) -> None:
        if not path.exists():
            raise SuhmoError(f"checkpoint {path} (step {step}) does not exist")
        dest = f"{CKPT_DIR}/step_{step}"
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), dest)
            return
        # Copy first: the trainer rewrites last.pt in place while we upload.
        with tempfile.TemporaryDirectory(prefix="suhmo-ckpt-") as tmp:
            snap = Path(tmp) / path.name
            shutil.copy2(path, snap)
            self.client.log_artifact(self.run_id, str(snap), dest)

    def _render(self, samples: np.ndarray, out: Path) -> None:
        """``samples.gif`` and ``motion_map.png`` of the first sequences (suhmo.render)."""
        from suhmo.render import render_png, render_video

        clips = list(samples[: self.render_samples])
        render_video(clips, out / "samples.gif", size=self.render_size, grid=len(clips), fps=self.fps)
        render_png(clips, out / "motion_map.png", size=self.render_size, max_samples=len(clips))
