"""A Tune callback printing one compact line per trial event, instead of Ray's status tables."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

from ray.tune import Callback

from launch.space import format_duration


class Progress(Callback):
    """``[  1m05s] eval  trial_ab12  it 100/200  fd_clip40=0.31 (best 0.29)  @10.0.0.3``.

    Also keeps, per trial, when the driver started it and when its first result arrived
    (``benchmarks/search.py`` computes the per-trial overhead from them).
    """

    def __init__(self, objectives: list[list[str]], echo: Callable[[str], None] = print):
        self.objectives = [tuple(o) for o in objectives]
        self.echo = echo
        self.t0 = time.time()
        self.started: dict[str, float] = {}  # trial id -> driver wall time of its (first) start
        self.first_result: dict[str, float] = {}
        self.first_metrics: dict[str, dict] = {}
        self.best: dict[tuple[str, str], float] = {}

    def setup(self, **info):
        self.t0 = time.time()  # also after `suhmo-search resume` (this object is restored from tuner.pkl)

    def _line(self, text: str) -> None:
        self.echo(f"[{format_duration(time.time() - self.t0):>6}] {text}")

    def on_trial_start(self, iteration, trials, trial, **info):
        from launch.runner import describe_config, trial_name

        self.started.setdefault(trial.trial_id, time.time())
        self._line(f"start    {trial_name(trial)}  {describe_config(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from launch.runner import trial_name

        tid = trial.trial_id
        if tid not in self.first_result:
            self.first_result[tid] = time.time()
            self.first_metrics[tid] = dict(result)
        parts = []
        for m, mode in self.objectives:
            v = result.get(m)
            if isinstance(v, (int, float)) and math.isfinite(v):
                b = self.best.get((tid, m))
                if b is None or (v < b if mode == "min" else v > b):
                    self.best[(tid, m)] = b = v
                parts.append(f"{m}={v:.4g} (best {b:.4g})")
        step, total = result.get("step", "?"), result.get("iterations", "?")
        self._line(f"eval     {trial_name(trial)}  it {step}/{total}  " + "  ".join(parts)
                   + f"  @{result.get('node_ip', '?')}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        from launch.runner import trial_name

        last = trial.last_result or {}
        step, total = last.get("step", 0), last.get("iterations", 0)
        if step and total and step >= total:
            self._line(f"done     {trial_name(trial)}  finished {step} iterations")
        else:
            self._line(f"stopped  {trial_name(trial)}  stopped early at iteration {step} (scheduler)")

    def on_trial_error(self, iteration, trials, trial, **info):
        from launch.runner import error_reason, trial_name

        reason = ""
        if trial.error_file and Path(trial.error_file).is_file():
            reason = error_reason(Path(trial.error_file).read_text())
        self._line(f"ERROR    {trial_name(trial)}  {reason}")
