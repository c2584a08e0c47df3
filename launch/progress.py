"""A Tune callback printing one compact line per trial event, instead of Ray's status tables,
and a progress line for the whole search: trials done / running / budget, elapsed time, the
best value so far. On a terminal the progress line is redrawn in place (at most once a
second) under the event lines; when the output is a log or a pipe it is printed as a plain
line at most once every ``interval_s`` (60 s), so logs are not flooded."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable

from ray.tune import Callback

from launch.leaderboard import describe_config, error_reason, trial_name
from launch.space import format_duration
from suhmo.selection import Criterion, criteria_of


class Progress(Callback):
    """``[  1m05s] eval  trial_ab12  it 100/200  fd_clip40=0.31 (best 0.29)  @10.0.0.3``.

    Also keeps, per trial, when the driver started it and when its first result arrived
    (``benchmarks/search.py`` computes the per-trial overhead from them).
    """

    def __init__(self, objectives: list[list[str]], echo: Callable[[str], None] = print, *,
                 budget: int | None = None, stream=None, interval_s: float | None = None,
                 tracking: tuple | None = None):
        self.tracking = tracking  # (experiment folder, tracking URI, parent run id): the trials' outboxes
        self.objectives = [tuple(o) for o in objectives]
        self.echo = echo
        self.budget = budget
        self.stream = stream
        self.interval_s = interval_s
        self.t0 = time.time()
        self.started: dict[str, float] = {}  # trial id -> driver wall time of its (first) start
        self.first_result: dict[str, float] = {}
        self.first_metrics: dict[str, dict] = {}
        self.best: dict[tuple[str, str], float] = {}

    def setup(self, **info):
        self.t0 = time.time()  # also after `suhmo-search resume` (this object is restored from tuner.pkl)
        self._status_at = self.t0
        self._status_shown = False

    # ------------------------------------------------------------------ the progress line
    def _live(self) -> bool:
        """Redraw in place only on a terminal (never in a log, a pipe or a test's capture)."""
        stream = getattr(self, "stream", None) or sys.stdout
        try:
            return bool(stream.isatty())
        except (AttributeError, ValueError):
            return False

    def _clear(self) -> None:
        if getattr(self, "_status_shown", False):
            stream = getattr(self, "stream", None) or sys.stdout
            stream.write("\r\033[K")
            stream.flush()
            self._status_shown = False

    def tracking_note(self, every_s: float = 10.0) -> str | None:
        """``tracking unreachable (...): 12 record(s) of 2 trial(s) wait ...`` while records wait
        for the tracking store (read from the trials' outboxes at most every ``every_s``)."""
        tr = getattr(self, "tracking", None)
        if not tr or not tr[1]:
            return None
        now = time.time()
        if now - getattr(self, "_tracking_at", 0.0) >= every_s:
            from tracking.outbox import describe, summary

            self._tracking_at = now
            s = summary(tr[0], tr[1], tr[2])
            self._tracking_note = describe(s, tr[1]) if s["unreachable"] or s["waiting"] > 2 * max(1, s["trials"]) \
                else None
            unreachable = bool(s["unreachable"])
            if unreachable != getattr(self, "_unreachable", False):  # say it once when it changes
                self._unreachable = unreachable
                self._line(self._tracking_note or "tracking reachable again: the waiting records are being logged")
        return getattr(self, "_tracking_note", None)

    def status_line(self, trials) -> str:
        """``progress 3/8 trials done, 2 running, 1m05s, best fd_clip40 9180 (trial_ab12)``."""
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        budget = getattr(self, "budget", None) or len(trials)
        text = (f"progress {done}/{budget} trials done, {running} running, "
                f"{format_duration(time.time() - self.t0)}")
        if self.objectives:
            obj = Criterion.of(self.objectives[0])
            m = obj.metric
            best = obj.best_of([(v, tid) for (tid, key), v in self.best.items() if key == m], lambda x: x[0])
            if best is not None:
                v, tid = best
                name = next((trial_name(t) for t in trials if t.trial_id == tid), tid)
                text += f", best {m} {v:.4g} ({name})"
        note = self.tracking_note()
        if note:
            text += "; " + note
        return text

    def on_step_end(self, iteration, trials, **info):
        self.tracking_note()  # prints a line when the tracking store stops or starts answering
        live = self._live()
        interval = getattr(self, "interval_s", None) or (1.0 if live else 60.0)
        now = time.time()
        if now - getattr(self, "_status_at", self.t0) < interval:
            return
        self._status_at = now
        line = self.status_line(trials)
        if live:
            stream = getattr(self, "stream", None) or sys.stdout
            stream.write("\r\033[K" + line)
            stream.flush()
            self._status_shown = True
        else:
            self.echo(f"[{format_duration(now - self.t0):>6}] {line}")

    def on_experiment_end(self, trials, **info):
        self._clear()

    def _line(self, text: str) -> None:
        self._clear()
        self.echo(f"[{format_duration(time.time() - self.t0):>6}] {text}")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, time.time())
        self._line(f"start    {trial_name(trial)}  {describe_config(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = trial.trial_id
        if tid not in self.first_result:
            self.first_result[tid] = time.time()
            self.first_metrics[tid] = dict(result)
        parts = []
        for obj in criteria_of(self.objectives):
            m, v = obj.metric, result.get(obj.metric)
            if isinstance(v, (int, float)) and math.isfinite(v):
                b = self.best.get((tid, m))
                if obj.better(v, b):
                    self.best[(tid, m)] = b = v
                parts.append(f"{m}={v:.4g} (best {b:.4g})")
        step, total = result.get("step", "?"), result.get("iterations", "?")
        self._line(f"eval     {trial_name(trial)}  it {step}/{total}  " + "  ".join(parts)
                   + f"  @{result.get('node_ip', '?')}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        step, total = last.get("step", 0), last.get("iterations", 0)
        if step and total and step >= total:
            self._line(f"done     {trial_name(trial)}  finished {step} iterations")
        else:
            self._line(f"stopped  {trial_name(trial)}  stopped early at iteration {step} (scheduler)")

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = ""
        if trial.error_file and Path(trial.error_file).is_file():
            reason = error_reason(Path(trial.error_file).read_text())
        self._line(f"ERROR    {trial_name(trial)}  {reason}")
