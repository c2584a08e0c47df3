"""The search's time cap never ends a search with nothing evaluated, and the report's
"next:" hints only offer an export when there is something to export."""

from __future__ import annotations

from types import SimpleNamespace

from launch.budget import TimeCap
from launch.leaderboard import SearchOutcome, TrialRow, render_report
from launch.plan import make_plan
from launch.space import parse_space
from launch.trainable import STOP_FILE, StopFlag, stop_file


def _trial(tid: str):
    return SimpleNamespace(trial_id=tid)  # the one attribute the cap reads from Tune's Trial


def test_cap_waits_for_every_started_trials_first_evaluation():
    cap = TimeCap(10.0)
    cap.setup()
    t0 = cap.t0
    cap.started = {"a": t0 + 1, "b": t0 + 2}
    assert not cap.due(t0 + 5)  # before the deadline
    assert not cap.due(t0 + 60)  # time is up but nothing was evaluated
    cap("a", {"step": 100})
    assert not cap.due(t0 + 60)  # b started before the deadline and has not reported yet
    cap("b", {"step": 100})
    assert cap.due(t0 + 60)
    assert not cap.stop_all() or cap.triggered


def test_cap_that_stops_the_search_tells_the_running_trials(tmp_path):
    """TimeCap writes the stop file when it ends the search; a trial's should-stop hook
    (StopFlag, polled every iteration) turns true once it sees the file."""
    meta = {"storage": str(tmp_path), "experiment": "exp"}
    (tmp_path / "exp").mkdir()
    flag = StopFlag(stop_file(meta), interval_s=0.0)
    cap = TimeCap(0.0, stop_file=tmp_path / "exp" / STOP_FILE)
    cap.setup()
    assert not cap.stop_all() and not flag()  # nothing evaluated yet: the cap waits
    cap.on_trial_start(0, [], _trial("a"))
    cap("a", {"step": 10})
    assert cap.stop_all() and (tmp_path / "exp" / STOP_FILE).is_file()
    assert flag() and flag()  # stays true
    assert not StopFlag(None)()  # no storage (a trial outside a search): never stops by itself
    slow = StopFlag(stop_file(meta), interval_s=3600.0)
    slow.checked = 1e18  # just looked: the file is not read again before interval_s
    assert not slow()


def test_cap_waits_for_trials_started_after_a_short_deadline_before_any_report():
    """On a loaded machine a 1 s budget is over before Ray starts the first trials: each trial
    that started before the first evaluation came in is still waited for (CI, 2026-12-02: one
    of two trials was stopped with nothing evaluated)."""
    cap = TimeCap(1.0)
    cap.setup()
    t0 = cap.t0
    assert not cap.due(t0 + 2)  # nothing started, nothing evaluated
    cap.started = {"a": t0 + 3, "b": t0 + 3.5}  # both after the deadline
    cap("a", {"step": 8})
    assert not cap.due(t0 + 9)  # b started before this first hold and has not reported
    assert not cap.due(t0 + 12)
    cap("b", {"step": 8})
    assert cap.due(t0 + 13)


def test_cap_does_not_wait_for_trials_started_after_the_hold_or_ended():
    cap = TimeCap(10.0)
    cap.setup()
    t0 = cap.t0
    cap.on_trial_start(0, [], _trial("a"))
    cap.started["a"] = t0 + 1
    cap.on_trial_result(0, [], _trial("a"), {"step": 4})
    cap.started["b"] = t0 + 2  # still in its first evaluation at the deadline
    assert not cap.due(t0 + 11)  # the hold: past the deadline, a has reported, b is waited for
    cap.started["late"] = t0 + 11.5  # started after the hold (a slot freed): not waited for
    cap.started["dead"] = t0 + 2
    cap.on_trial_error(0, [], _trial("dead"))  # errored before reporting: not waited for
    cap("b", {"step": 4})
    assert cap.due(t0 + 12)


def test_cap_setup_forgets_an_earlier_session():
    """A resumed search (setup again) waits for its trials afresh: an errored trial retried by
    resume, or a report of the last session, does not count."""
    cap = TimeCap(1.0)
    cap.setup()
    cap("old", {"step": 8})
    cap.on_trial_error(0, [], _trial("b"))
    cap.setup()
    t0 = cap.t0
    assert not cap.due(t0 + 5)  # nothing reported in this session
    cap.started = {"a": t0 + 2, "b": t0 + 2}
    cap("a", {"step": 8})
    assert not cap.due(t0 + 6)  # b (errored last session, retried) has not reported yet
    cap("b", {"step": 8})
    assert cap.due(t0 + 7)


def _row(state: str, evaluations: int) -> TrialRow:
    return TrialRow(trial_id="t1", name="trial_t1", status="TERMINATED", state=state, config={}, step=0,
                    iterations=400, evaluations=evaluations, best={}, last={}, node_ip=None, error=None,
                    seed=1, path=None)


def _plan(tmp_path):
    space = parse_space({"base": {"preset": "tiny"}, "params": {"optim.lr_g": {"type": "loguniform", "low": 1e-5,
                                                                               "high": 1e-3}},
                         "objective": "fd_clip40:min", "budget": {"num_samples": 2, "max_concurrent": 2}},
                        name="hints")
    return make_plan(space, experiment="hints", storage=str(tmp_path), tracking_uri="sqlite:///x.db")


def test_no_export_hint_without_an_evaluated_trial(tmp_path):
    plan = _plan(tmp_path)
    lines: list[str] = []
    render_report(SearchOutcome(plan, [_row("stopped", 0), _row("stopped", 0)], 600.0, False, True), lines.append)
    text = "\n".join(lines)
    assert "best-export" not in text and "suhmo generate" not in text
    assert "no trial reached an evaluation" in text
    assert "suhmo-search status hints" in text


def test_export_hint_once_a_trial_has_evaluated(tmp_path):
    plan = _plan(tmp_path)
    lines: list[str] = []
    render_report(SearchOutcome(plan, [_row("finished", 4)], 60.0, False, False), lines.append)
    assert any("suhmo best-export --experiment hints" in ln for ln in lines)
