"""Optuna's parameter importances of a search's trials (launch/importance.py), without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from launch.importance import param_importances
from launch.leaderboard import TrialRow
from launch.space import parse_space

SPACE = {
    "base": {"preset": "tiny"},
    "params": {
        "optim.lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
        "loss.lam": {"type": "uniform", "low": 0.0, "high": 0.1},
        "model.noise_g": {"type": "choice", "values": [0, 4, 16]},
        "windows.family": {"type": "choice", "values": ["uniform", "texp"],
                           "when": {"texp": {"windows.texp_mean": {"type": "uniform", "low": 4, "high": 20}}}},
    },
    "objective": "fd_clip40:min",
}


def _row(i: int, config: dict, value: float, state: str = "finished") -> TrialRow:
    return TrialRow(trial_id=f"t{i}", name=f"t{i}", status="TERMINATED", state=state, config=config, step=10,
                    iterations=10, evaluations=1, best={"fd_clip40": (value, 10)}, last={"fd_clip40": value},
                    node_ip=None, error=None, seed=i, path=None)


def _rows(n: int, seed: int = 0) -> list[TrialRow]:
    """The objective is a function of the learning rate only; the other parameters are noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cfg = {"optim.lr_g": float(10 ** rng.uniform(-5, -2)), "loss.lam": float(rng.uniform(0, 0.1)),
               "model.noise_g": int(rng.choice([0, 4, 16])), "windows.family": str(rng.choice(["uniform", "texp"]))}
        if cfg["windows.family"] == "texp":
            cfg["windows.texp_mean"] = float(rng.uniform(4, 20))
        rows.append(_row(i, cfg, 100 * (np.log10(cfg["optim.lr_g"]) + 3.5) ** 2 + rng.normal(0, 0.5)))
    return rows


@pytest.mark.parametrize("evaluator", ["fanova", "ped", "mdi"])
def test_the_parameter_that_sets_the_objective_ranks_first(evaluator):
    space = parse_space(SPACE, name="imp")
    rows = _rows(40) + [_row(99, {"optim.lr_g": 1e-3}, float("nan")), _row(98, {}, 0.0, state="error")]
    imp, used = param_importances(rows, space, "fd_clip40", "min", evaluator=evaluator)
    assert used == 40  # the NaN and the failed trial are left out
    assert next(iter(imp)) == "optim.lr_g" and imp["optim.lr_g"] > 0.5, imp
    assert abs(sum(imp.values()) - 1) < 1e-6
    # fANOVA and MDI rank only the parameters every trial has (Optuna's rule); PED-ANOVA all
    assert ("windows.texp_mean" in imp) == (evaluator == "ped")


def test_too_few_trials_is_one_clear_line():
    space = parse_space(SPACE, name="imp")
    with pytest.raises(ValueError, match=r"^3 trial\(s\) reported fd_clip40; importances need at least 4$"):
        param_importances(_rows(3), space, "fd_clip40", "min")


def test_a_value_outside_the_space_names_its_key():
    space = parse_space(SPACE, name="imp")
    rows = _rows(5)
    rows[2].config["model.noise_g"] = 7
    with pytest.raises(ValueError, match=r"model.noise_g=7 is not one of the space's choices"):
        param_importances(rows, space, "fd_clip40", "min")
