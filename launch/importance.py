"""Optuna's hyperparameter importances of a finished (or interrupted) search, without Ray.

The search's trials are replayed into an in-memory Optuna study: each trial that reported the
objective becomes a completed trial with its sampled parameters (over the distributions of the
space file) and the objective value Optuna was told (its last evaluation). Optuna's evaluators
then rank the parameters: fANOVA (the default; a random forest's variance decomposition),
PED-ANOVA or mean decrease in impurity. fANOVA and MDI rank only the parameters that every
trial has (a conditional parameter drops out); PED-ANOVA ranks all. With fewer than ``MIN_TRIALS`` trials the ranking is noise, and
``param_importances`` says so instead of printing one.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

from launch.space import Param, SearchSpace

EVALUATORS = ("fanova", "ped", "mdi")
MIN_TRIALS = 4


def optuna_distribution(p: Param):
    """The Optuna distribution that ``OptunaSpace`` samples ``p`` from."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.kind == "choice":
        return CategoricalDistribution(p.labels())
    if p.kind == "int":
        return IntDistribution(int(p.low), int(p.high), log=bool(p.log), step=1 if p.log else int(p.step or 1))
    return FloatDistribution(float(p.low), float(p.high), log=p.kind == "loguniform",
                             step=None if p.kind == "loguniform" else p.step)


def _evaluator(name: str, seed: int):
    import optuna.importance as imp

    if name == "fanova":
        return imp.FanovaImportanceEvaluator(seed=seed)
    if name == "ped":
        return imp.PedAnovaImportanceEvaluator()
    if name == "mdi":
        return imp.MeanDecreaseImpurityImportanceEvaluator(seed=seed)
    raise ValueError(f"unknown importance evaluator {name!r}; choose one of {', '.join(EVALUATORS)}")


def param_importances(rows: Iterable, space: SearchSpace, metric: str, mode: str, *,
                      evaluator: str = "fanova", seed: int = 0) -> tuple[dict[str, float], int]:
    """``({param: importance}, trials used)``, importances summing to 1, most important first.

    ``rows`` are the search's trial rows (``launch.leaderboard.read_trials``): a trial counts when it
    did not fail and its last evaluation holds a finite ``metric``. Raises ``ValueError`` (one
    line) with fewer than ``MIN_TRIALS`` such trials or when no parameter varies."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {p.key: optuna_distribution(p) for p in space.all_params()}
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    used = 0
    for r in rows:
        value = r.last.get(metric) if r.state != "error" else None
        if value is None or not math.isfinite(value):
            continue
        params = {p.key: _label_of(p, r.config[p.key]) for p in space.all_params() if p.key in r.config}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                  value=float(value)))
        used += 1
    if used < MIN_TRIALS:
        raise ValueError(f"{used} trial(s) reported {metric}; importances need at least {MIN_TRIALS}")
    try:
        out = optuna.importance.get_param_importances(study, evaluator=_evaluator(evaluator, seed))
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"importances of {metric}: {e}".splitlines()[0]) from None
    return dict(out), used


def _label_of(p: Param, value):
    """The value as Optuna stored it (a choice by its label: lists are JSON strings)."""
    if p.kind != "choice":
        return value
    for v, label in zip(p.values, p.labels()):
        if v == value:
            return label
    raise ValueError(f"{p.key}={value!r} is not one of the space's choices {list(p.values)}")


def format_importances(imp: dict[str, float], used: int, metric: str, evaluator: str,
                       width: int = 30) -> list[str]:
    lines = [f"parameter importances for {metric} ({evaluator}, {used} trials; sums to 1):"]
    for k, v in imp.items():
        lines.append(f"  {k:<28s} {v:6.3f}  " + "#" * int(round(v * width)))
    if used < 12:
        lines.append(f"  (from {used} trials: a rough ranking, not a measurement)")
    return lines


def default_metric(objectives: list, metric: Optional[str]) -> tuple[str, str]:
    if metric is None:
        m, mode = objectives[0]
        return m, mode
    for m, mode in objectives:
        if m == metric:
            return m, mode
    from launch.space import check_metric_mode

    o = check_metric_mode(metric, None)
    return o.metric, o.mode
