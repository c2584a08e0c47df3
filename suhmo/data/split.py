"""The training / held-out split of a dataset by person, the same for every user.

The Trainer, the search's trials, the distance scale (:mod:`suhmo.metrics.scale`) and the
evaluation commands all hold out the same persons: ``cfg.data.test_fraction`` of them, drawn
with :data:`SPLIT_SEED`.
"""

from __future__ import annotations

SPLIT_SEED = 0  # fixed: a trial's seed changes its training, never which persons it is scored on


def split_persons(full, test_fraction: float) -> tuple:
    """``(train_set, held_out)`` of the :class:`~suhmo.data.LandmarkSet` ``full``."""
    return full.split_by_person(test_fraction, seed=SPLIT_SEED)


def load_split(cfg) -> tuple:
    """``(train_set, held_out)`` of the dataset that ``cfg.data`` names."""
    from suhmo.data.loading import load_dataset

    return split_persons(load_dataset(cfg), cfg.data.test_fraction)


__all__ = ["SPLIT_SEED", "load_split", "split_persons"]
