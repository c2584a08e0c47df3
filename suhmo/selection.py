"""Which value is better: a criterion is a metric and the direction that is better.

The direction of every metric key is declared once, by the metric registry
(:func:`suhmo.metrics.metric_modes`); the trainer (best.pt), the search (trainable,
progress, leaderboard, repeats) and tracking (MLflow best values, best-export) all compare
through :class:`Criterion`, :func:`rank` and :func:`pareto_front`. A search's objectives
(``objective:`` / ``objectives:`` in a space file, ``--objectives``) are criteria;
:mod:`suhmo.objectives` is another thing: what one training iteration does (GAN, MLE or VAE).

A non-finite value (nan, inf: a diverged evaluation) is never better than anything, and
any finite value is better than none. On ties the earlier row wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, TypeVar

from suhmo.metrics import metric_modes

MODES = ("min", "max")
# The keys a search may optimise, with their direction: the landmark stack's and the fidelity
# protocol's (those need ``fidelity`` in the trials' ``eval.metrics``). motion_energy and the
# speed percentiles are ratios to real (1.0 = right): search on motion_energy_err and
# speed_pct_err instead.
METRIC_MODES: dict[str, str] = metric_modes(["landmark", "fidelity"])

Row = TypeVar("Row")


def mode_of(metric: str) -> str:
    """The registry's direction for ``metric``; ``"min"`` for a key it does not declare
    (losses, ``*_std``, detector distances)."""
    return metric_modes().get(metric, "min")


def _finite(v: Any) -> bool:
    """A finite number (numpy scalars included); None, bools and non-numbers are not."""
    if v is None or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except TypeError:
        return False


@dataclass(frozen=True)
class Criterion:
    """A metric and its direction (``min``: lower is better, ``max``: higher is better).

    Unpacks like the ``(metric, mode)`` pairs stored in configs and MLflow tags:
    ``m, mode = criterion``.
    """

    metric: str
    mode: str  # min | max

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"objective {self.metric!r}: mode {self.mode!r} must be min or max")

    @classmethod
    def of(cls, item: "Criterion | Sequence[str] | str") -> "Criterion":
        """From a Criterion, a ``(metric, mode)`` pair or a metric name (registry direction)."""
        if isinstance(item, Criterion):
            return item
        if isinstance(item, str):
            return cls(item, mode_of(item))
        metric, mode = item
        return cls(str(metric), str(mode))

    def __iter__(self) -> Iterator[str]:
        return iter((self.metric, self.mode))

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"

    def key(self, value: float) -> float:
        """Sort key: smaller is better (``value`` for min, ``-value`` for max)."""
        return value if self.mode == "min" else -value

    def better(self, a: Optional[float], b: Optional[float]) -> bool:
        """True when ``a`` is strictly better than ``b`` (``b`` None or non-finite: any finite ``a``)."""
        if not _finite(a):
            return False
        if not _finite(b):
            return True
        return a < b if self.mode == "min" else a > b

    def best_of(self, rows: Iterable[Row], value: Callable[[Row], Any] = lambda r: r) -> Optional[Row]:
        """The row whose ``value(row)`` is best (the first on ties); None when no row has a
        finite value."""
        best, best_v = None, None
        for r in rows:
            v = value(r)
            if self.better(v, best_v):
                best, best_v = r, v
        return best


def rank(rows: Iterable[Row], objective: "Criterion | Sequence[str] | str",
         value: Callable[[Row], Any] = lambda r: r, *, demote: Callable[[Row], bool] = lambda r: False,
         tiebreak: Callable[[Row], Any] = lambda r: 0) -> list[Row]:
    """``rows`` best first on ``objective``: the rows ``demote`` holds last (errored trials),
    within each part the rows without a finite ``value(row)`` after those with one, equal
    values by ``tiebreak(row)`` and then in their order. One ranking for the search's
    leaderboard, the MLflow summary of a search and the choice of ``best-export``."""
    obj = Criterion.of(objective)

    def key(r: Row) -> tuple:
        v = value(r)
        return (bool(demote(r)), not _finite(v), obj.key(v) if _finite(v) else 0.0, tiebreak(r))

    return sorted(rows, key=key)


def criteria_of(items: Iterable[Any]) -> list[Criterion]:
    return [Criterion.of(o) for o in items]


def dominates(a: Mapping[str, float], b: Mapping[str, float], objectives: Sequence[Any]) -> bool:
    """``a`` is no worse than ``b`` on every objective and better on one (Pareto dominance)."""
    objs = criteria_of(objectives)
    return (all(not o.better(b[o.metric], a[o.metric]) for o in objs)
            and any(o.better(a[o.metric], b[o.metric]) for o in objs))


def pareto_front(rows: Iterable[Row], objectives: Sequence[Any],
                 values: Callable[[Row], Mapping[str, float]] = lambda r: r) -> list[Row]:
    """The rows not dominated by another on ``objectives``, in their order; rows without a
    finite value for every objective are left out. ``values(row)`` maps metric -> value."""
    objs = criteria_of(objectives)
    full = [(r, values(r)) for r in rows]
    full = [(r, v) for r, v in full if all(_finite(v.get(o.metric)) for o in objs)]
    return [r for r, v in full if not any(dominates(w, v, objs) for q, w in full if q is not r)]


__all__ = ["METRIC_MODES", "MODES", "Criterion", "criteria_of", "dominates", "mode_of", "pareto_front", "rank"]
