"""The search's wall-clock cap, which never ends a search with nothing evaluated.

Tune's own ``time_budget_s`` stops everything when the time is up, even trials that have not
reported once: on a loaded machine the demo search ended at its cap with every trial at
iteration 0, an empty leaderboard and nothing to export. :class:`TimeCap` is a Tune stopper
(and callback) that stops the search only once the time is up AND at least one trial has
reported an evaluation AND every trial that started before that moment has reported at
least once; trials still pending then are not started.

"That moment" (the hold) is the first check after the deadline at which some trial has
reported. On a loaded machine Ray may start the first trials only after a short budget is
already over; they are waited for all the same (a trial started and then stopped with nothing
evaluated is work thrown away; Tune calls ``on_trial_start`` when it places the trial's actor,
before the trial's own set-up). A trial still pending at the hold is not waited for (it may be
waiting for the very resources the running trials hold), nor is one started after the hold (a
slot freed while the cap waited for the others), so the wait ends.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from ray.tune import Callback
from ray.tune.stopper import Stopper


class TimeCap(Stopper, Callback):
    """Stop all trials after ``budget_s`` seconds of this session, but never before each
    trial started before the hold (at least one) has reported its first evaluation."""

    def __init__(self, budget_s: float, stop_file: Optional[Path] = None):
        self.budget_s = float(budget_s)
        self.stop_file = stop_file  # written when the cap stops the search (launch.trainable.StopFlag)
        self.t0: Optional[float] = None
        self.started: dict[str, float] = {}  # trial id -> start time in this session
        self.reported: set[str] = set()
        self.finished: set[str] = set()
        self.triggered = False  # the cap stopped the search
        self.hold_at: Optional[float] = None  # past the deadline with an evaluation: no new waits

    # -------------------------------------------------------------- Callback
    def setup(self, **info):
        self.t0 = time.time()  # a resumed search gets the budget again
        self.started.clear()
        self.reported.clear()
        self.finished.clear()
        self.triggered = False
        self.hold_at = None

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.reported.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finished.add(trial.trial_id)

    # -------------------------------------------------------------- Stopper
    def __call__(self, trial_id, result) -> bool:
        self.reported.add(trial_id)
        return False

    def due(self, now: Optional[float] = None) -> bool:
        """True when the cap may stop the search now (see the class docstring)."""
        now = time.time() if now is None else now
        if self.t0 is None:
            self.t0 = now
        deadline = self.t0 + self.budget_s
        if now < deadline or not self.reported:
            return False
        if self.hold_at is None:
            self.hold_at = now
        waiting = [t for t, at in self.started.items()
                   if at <= self.hold_at and t not in self.reported and t not in self.finished]
        return not waiting

    def stop_all(self) -> bool:
        if not self.triggered and self.due():
            self.triggered = True
            if self.stop_file is not None:
                try:  # running trials leave their training loop within one iteration
                    self.stop_file.write_text("time budget reached\n")
                except OSError:
                    pass
        return self.triggered
