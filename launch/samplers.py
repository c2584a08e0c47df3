"""Optuna samplers a space file may choose: ``sampler: {type: NAME, ...options}``.

``SAMPLERS`` is the registry: each entry is a pydantic model of the sampler's options (checked
by ``launch.space``) with ``build(seed)``. The AutoSampler (OptunaHub) is not offered: it is not
installed here and ``optunahub.load_module`` downloads it at run time.
Optuna is imported only when a sampler is built.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class _Sampler(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def resolved(self, num_samples: int) -> dict:
        """The options with their budget-dependent defaults filled in (stored in the space)."""
        return self.model_dump()


class _RandomFirst(_Sampler):
    """A model-based sampler that starts with random trials: by default a third of a small
    budget, at least 2, at most Optuna's 10."""

    n_startup_trials: Optional[StrictInt] = Field(None, ge=1)

    def resolved(self, num_samples: int) -> dict:
        return {"type": self.type, "n_startup_trials": self.n_startup_trials or max(2, min(10, num_samples // 3))}


class TPE(_RandomFirst):
    """Optuna's default: a tree-structured Parzen estimator, one per parameter."""

    type: Literal["tpe"]

    @staticmethod
    def build(options: dict, seed: int):
        import optuna

        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=options["n_startup_trials"], multivariate=False)


class GP(_RandomFirst):
    """Gaussian-process Bayesian optimisation (``optuna.samplers.GPSampler``), for small budgets of
    expensive trials."""

    type: Literal["gp"]

    @staticmethod
    def build(options: dict, seed: int):
        import optuna

        # the searched space is conditional: parameters outside the common part are sampled at
        # random, by design, so Optuna's per-trial warning about it says nothing new
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=options["n_startup_trials"],
                                         warn_independent_sampling=False)


class NSGA2(_Sampler):
    type: Literal["nsga2"]
    population_size: Optional[StrictInt] = Field(None, ge=2)

    def resolved(self, num_samples: int) -> dict:
        return {"type": "nsga2", "population_size": self.population_size or max(2, min(50, num_samples // 2))}

    @staticmethod
    def build(options: dict, seed: int):
        import optuna

        return optuna.samplers.NSGAIISampler(seed=seed, population_size=options["population_size"])


class Random(_Sampler):
    type: Literal["random"]

    @staticmethod
    def build(options: dict, seed: int):
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, type[_Sampler]] = {"tpe": TPE, "gp": GP, "nsga2": NSGA2, "random": Random}
DEFAULT = "tpe"


def build_sampler(options: dict, seed: int):
    """The Optuna sampler of a validated space's ``sampler`` block, seeded with the study seed."""
    return SAMPLERS[options["type"]].build(options, seed)
