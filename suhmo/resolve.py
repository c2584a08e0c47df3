"""The resolved config of one run of a search: a preset, the fixed base values, then the
sampled values, validated.

One resolver for every reader of a search trial: the trainable that trains it, the space's
validation of sampled points, ``repeat`` (a finalist's configuration without its seed) and
the leaderboard's distance scale (the base config alone).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from suhmo.config import ConfigError, make_config


def resolve_config(preset: str, base: Mapping[str, Any], sampled: Optional[Mapping[str, Any]] = None,
                   objectives: Optional[Sequence[Sequence[str]]] = None):
    """``make_config(preset)`` with ``base`` then ``sampled`` (dotted keys) applied.

    With ``objectives`` (``[(metric, mode), ...]``), best.pt is kept on the first one unless
    the values set ``train.select_metric``. A ``train.select_metric`` the values set must be
    a metric the Trainer reports (ConfigError naming it)."""
    values = {**base, **(sampled or {})}
    explicit = "train.select_metric" in values
    if objectives and not values.get("train.select_metric"):
        values.update({"train.select_metric": objectives[0][0], "train.select_mode": objectives[0][1]})
    cfg = make_config(preset, overrides=values)
    if explicit:
        from suhmo.metrics import check_select_metric
        from suhmo.utils import SuhmoError

        try:
            check_select_metric(cfg)
        except SuhmoError as e:
            raise ConfigError(str(e)) from None
    return cfg


__all__ = ["resolve_config"]
