"""suhmo.selection: the one place that knows which value of a metric is better."""

import math

import numpy as np
import pytest

from suhmo.metrics import REGISTRY, metric_modes
from suhmo.selection import METRIC_MODES, Criterion, dominates, mode_of, pareto_front


def test_directions_come_from_the_registry():
    assert METRIC_MODES["apd"] == "max" and METRIC_MODES["fd_clip40"] == "min"
    # what a search may optimise: the landmark stack's keys and the fidelity protocol's
    assert set(METRIC_MODES) == set(REGISTRY["landmark"].keys) | set(REGISTRY["fidelity"].keys)
    assert METRIC_MODES["pose_mem_err"] == "min" and METRIC_MODES["speed_pct_err"] == "min"
    assert metric_modes()["fvd40"] == "min" and mode_of("apd") == "max"
    assert mode_of("loss_g") == "min"  # a key the registry does not declare
    assert Criterion.of("apd") == Criterion("apd", "max")
    assert Criterion.of(["fd_clip40", "min"]) == Criterion("fd_clip40", "min")


def test_objective_unpacks_like_a_pair_and_rejects_a_bad_mode():
    m, mode = Criterion("apd", "max")
    assert (m, mode) == ("apd", "max") and dict([Criterion("fd", "min")]) == {"fd": "min"}
    assert str(Criterion("fd_clip40", "min")) == "fd_clip40:min"
    with pytest.raises(ValueError, match="min or max"):
        Criterion("fd", "lowest")


def test_better_in_both_directions_and_with_missing_or_non_finite_values():
    lo, hi = Criterion("fd", "min"), Criterion("apd", "max")
    assert lo.better(1.0, 2.0) and not lo.better(2.0, 1.0) and not lo.better(1.0, 1.0)
    assert hi.better(2.0, 1.0) and not hi.better(1.0, 2.0)
    assert lo.better(5.0, None) and lo.better(5.0, math.nan) and lo.better(np.float32(0.5), 1.0)
    assert not lo.better(math.nan, 1.0) and not lo.better(None, 1.0) and not hi.better(math.inf, 1.0)
    assert not lo.better(True, 2.0)  # a bool is not a metric value
    assert lo.key(3.0) == 3.0 and hi.key(3.0) == -3.0


def test_best_of_rows_first_on_ties_none_without_finite_values():
    rows = [{"v": 3.0, "s": 1}, {"v": math.nan, "s": 2}, {"v": 1.0, "s": 3}, {"v": 1.0, "s": 4}, {"s": 5}]
    assert Criterion("v", "min").best_of(rows, lambda r: r.get("v"))["s"] == 3
    assert Criterion("v", "max").best_of(rows, lambda r: r.get("v"))["s"] == 1
    assert Criterion("v", "min").best_of([2.0, 0.5, 7.0]) == 0.5
    assert Criterion("v", "min").best_of([math.nan, None]) is None
    assert Criterion("v", "min").best_of([]) is None


def test_pareto_front_mixed_directions():
    objs = [("fd", "min"), ("apd", "max")]
    rows = {
        "a": {"fd": 1.0, "apd": 1.0},
        "b": {"fd": 2.0, "apd": 3.0},
        "c": {"fd": 2.5, "apd": 2.0},  # dominated by b (worse on both)
        "d": {"fd": 2.0, "apd": 3.0},  # equal to b: neither dominates the other
        "e": {"fd": 0.5},  # no apd: left out
        "f": {"fd": math.nan, "apd": 9.0},  # non-finite: left out
    }
    front = pareto_front(list(rows), objs, lambda k: rows[k])
    assert front == ["a", "b", "d"]
    assert dominates(rows["b"], rows["c"], objs) and not dominates(rows["b"], rows["d"], objs)
    assert not dominates(rows["a"], rows["b"], objs) and not dominates(rows["b"], rows["a"], objs)
    # one objective: the front is the best value (and its ties)
    assert pareto_front([{"fd": 2.0}, {"fd": 1.0}, {"fd": 1.0}], [Criterion("fd", "min")]) == [{"fd": 1.0}] * 2
    assert pareto_front([], objs) == []


def test_rank_puts_demoted_and_valueless_rows_last_and_breaks_ties_in_order():
    from suhmo.selection import rank

    rows = [("a", 3.0, False), ("b", None, False), ("c", 1.0, True), ("d", float("nan"), False),
            ("e", 1.0, False), ("f", 1.0, False), ("g", None, True)]
    got = rank(rows, ("x", "min"), lambda r: r[1], demote=lambda r: r[2])
    assert [r[0] for r in got] == ["e", "f", "a", "b", "d", "c", "g"]
    assert [r[0] for r in rank(rows[:2] + rows[4:6], "apd", lambda r: r[1])][:2] == ["a", "e"]  # max: 3.0 first
    by_step = rank([("p", 1.0, 8), ("q", 1.0, 4)], ("x", "min"), lambda r: r[1], tiebreak=lambda r: r[2])
    assert [r[0] for r in by_step] == ["q", "p"]
