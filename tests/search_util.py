"""A real tiny search (Ray + Optuna + MLflow on sqlite) in a temporary folder, for
module-scoped fixtures of the end-to-end tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import pytest


def tiny_search(tmp: Path, space: dict, name: str,
                then: Optional[Callable[[Any, list], Any]] = None) -> tuple[str, Any, list, Any]:
    """Run ``space`` as experiment ``name`` with SUHMO_HOME and MLflow under ``tmp``.

    ``then(plan, lines)`` runs while Ray is still up (e.g. a repeat of the search).
    Returns ``(tracking_uri, outcome, printed_lines, then_result)``.
    """
    import ray

    from launch.plan import make_plan
    from launch.runner import run_search
    from launch.space import parse_space

    uri = f"sqlite:///{(tmp / 'mlflow.db').as_posix()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUHMO_HOME", str(tmp / "home"))
        plan = make_plan(parse_space(space, name=name), experiment=name, storage=str(tmp / "store"),
                         tracking_uri=uri)
        lines: list[str] = []
        try:
            outcome = run_search(plan, echo=lines.append, shutdown=False)
            extra = then(plan, lines) if then is not None else None
        finally:
            ray.shutdown()
    return uri, outcome, lines, extra


def tiny_space(*, base: Optional[dict] = None, **top: Any) -> dict:
    """A 3-trial space of tiny models on a little synthetic data; ``base`` and ``top`` override."""
    space = {
        "base": {"preset": "tiny", "train.iterations": 12, "train.eval_every": 4, "eval.samples": 8,
                 "eval.frames": 16, "data.seq_len": 16, "windows.tau_max": 16, "data.synth_clips": 8,
                 "data.synth_seconds": 3.0, **(base or {})},
        "params": {"optim.lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-3}},
        "objective": "fd_clip40:min",
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "budget": {"num_samples": 3, "max_concurrent": 2},
        "sampler": {"type": "tpe", "n_startup_trials": 2},
        "seed": 0,
    }
    space.update(top)
    return space
