"""``repeat`` as fixed points of the search's own searcher: the trials it asks for are the
configurations and seeds that a grid of (configuration, seed) points trained (no Ray needed)."""

from __future__ import annotations

import optuna
from search_util import tiny_space


SPACE = tiny_space(params={
    "optim.lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
    "windows.family": {"type": "choice", "values": ["fixed", "uniform"], "when": {
        "fixed": {"windows.scales": {"type": "choice", "values": [[4, 8], [4, 8, 16]]}},
        "uniform": {"windows.tau_min": {"type": "int", "low": 3, "high": 6}}}},
})


def _search_trial_configs(space, n: int) -> list[dict]:
    """Configs of ``n`` search trials as Tune records them (Optuna labels, train.seed)."""
    from launch.space import OptunaSpace

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    return [OptunaSpace(space.params, space.seed)(study.ask()) for _ in range(n)]


def test_enqueued_fixed_points_give_the_configs_and_seeds_of_the_repeat(tmp_path):
    from launch.plan import make_plan
    from launch.repeat import RepeatPlan, finalist
    from launch.repeat_trial import repeat_point
    from launch.runner import _meta, _searcher
    from launch.space import parse_space
    from launch.trainable import META_KEY, sampled_values, trial_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(SPACE, name="rep")
    search = make_plan(space, experiment="rep", storage=str(tmp_path))
    meta = {"preset": space.preset, "base": dict(space.base), "objectives": search.objectives}
    found = _search_trial_configs(space, 4)
    assert {c["windows.family"] for c in found} == {"fixed", "uniform"}  # both branches are repeated
    configs = [{**finalist(c, meta, search.seed, 3), "repeat_of": str(i)} for i, c in enumerate(found)]
    rp = RepeatPlan(name="rep-r1", search="rep", search_dir=str(tmp_path), storage=str(tmp_path), top=4, seeds=3,
                    frames=[40, 80], study_seed=search.seed, objectives=search.objectives, tracking_uri=None,
                    experiment_id=None, parent_run_id=None, max_concurrent=2, configs=configs)
    # what a grid of (configuration, seed) points trained: each finalist's values with each new seed
    grid = [trial_config(meta, {**c["sampled"], "train.seed": seed}).flat() for c in configs for seed in c["seeds"]]

    plan = make_plan(space, experiment=rp.name, storage=str(tmp_path), scheduler="fifo",
                     num_samples=len(rp.fixed_points()))
    searcher = _searcher(space, plan, rp.fixed_points())
    trial_meta = _meta(space, plan, rp.trial_meta())
    asked = [{META_KEY: trial_meta, **searcher.suggest(f"t{i}")} for i in range(len(grid))]
    assert [trial_config(trial_meta, sampled_values(c)).flat() for c in asked] == grid
    # every trial knows which configuration and seed index it repeats
    points = [repeat_point(trial_meta, c["train.seed"]) for c in asked]
    assert [(p["repeat_of"], p["seed_index"]) for p in points] == [(c["repeat_of"], i) for c in configs
                                                                     for i in range(3)]
    assert all(p["config_key"] == c["config_key"] for p, c in zip(points, [c for c in configs for _ in range(3)]))
    assert repeat_point(meta, found[0]["train.seed"]) is None  # a search trial is no repeat
