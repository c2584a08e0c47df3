"""Search-space files: validation errors, conditional sampling, seeds, CLI validate / --dry-run.

No Ray here; Optuna only through the define-by-run space (an in-memory study).
"""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from launch.cli import cli
from launch.space import (OptunaSpace, load_space, parse_duration, parse_objectives, parse_space, trial_seed)
from suhmo.cli import run_cli
from suhmo.config import ConfigError

GOOD = {
    "base": {"preset": "tiny", "train.iterations": 20, "train.eval_every": 10},
    "params": {
        "optim.lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
        "model.hidden_g": {"type": "choice", "values": [16, 32]},
        "windows.family": {
            "type": "choice", "values": ["fixed", "uniform", "texp"],
            "when": {"fixed": {"windows.scales": {"type": "choice", "values": [[5, 10, 20], [10, 20, 40]]}},
                     "texp": {"windows.texp_mean": {"type": "uniform", "low": 5.0, "high": 30.0}}},
        },
    },
    "objective": "fd_clip40:min",
    "budget": {"num_samples": 3, "max_concurrent": 1},
}


def with_change(path: str, value):
    """GOOD with one entry replaced (dotted path through the mapping; None deletes)."""
    d = copy.deepcopy(GOOD)
    keys = path.split("/")
    node = d
    for k in keys[:-1]:
        node = node[k]
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return d


def error_of(data) -> str:
    with pytest.raises(ConfigError) as e:
        parse_space(data, name="t")
    msg = str(e.value)
    assert "\n" not in msg, "errors are one line"
    return msg


def test_good_space_parses_and_resolves():
    s = parse_space(GOOD, name="t")
    assert s.preset == "tiny" and s.evaluations == 2 and s.iterations == 20
    assert [p.key for p in s.all_params()] == ["optim.lr_g", "model.hidden_g", "windows.family",
                                               "windows.scales", "windows.texp_mean"]
    assert [str(o) for o in s.objectives] == ["fd_clip40:min"]
    assert s.scheduler == {"type": "asha", "grace_period": 1, "reduction_factor": 2}
    cfg = s.trial_config({"optim.lr_g": 3e-4, "windows.family": "fixed", "windows.scales": "json:[10, 20, 40]"})
    assert cfg.windows.scales == [10, 20, 40] and cfg.optim.lr_g == 3e-4 and cfg.train.iterations == 20


@pytest.mark.parametrize("data, expected", [
    (with_change("params/optim.lr_gg", {"type": "uniform", "low": 0, "high": 1}),
     ["unknown config field 'optim.lr_gg'", "did you mean 'optim.lr_g'"]),
    (with_change("base/train.iteratons", 5), ["unknown config field 'train.iteratons'", "train.iterations"]),
    (with_change("params/optim.lr_g", {"type": "loguniform", "low": 1e-3, "high": 1e-5}), ["low=0.001 must be < high"]),
    (with_change("params/optim.lr_g", {"type": "loguniform", "low": 0, "high": 1e-3}), ["loguniform needs low > 0"]),
    (with_change("params/optim.lr_g", {"type": "lognormal", "low": 1e-5, "high": 1e-3}),
     ["unknown distribution 'lognormal'", "loguniform"]),
    (with_change("params/model.hidden_g", {"type": "choice", "values": [16, "wide"]}), ["expected int, got 'wide'"]),
    (with_change("params/model.hidden_g", {"type": "uniform", "low": 8, "high": 64}), ["int field; use type: int"]),
    (with_change("params/model.pair_g", {"type": "uniform", "low": 0, "high": 1}), ["bool field; use type: choice"]),
    (with_change("params/optim.lr_g", {"type": "loguniform", "low": "small", "high": 1e-3}),
     ["expected a number, got 'small'"]),
    (with_change("objective", "fd_clp40:min"), ["unknown metric 'fd_clp40'", "fd_clip40"]),
    (with_change("objective", "fd_clip40:lowest"), ["use min or max"]),
    (with_change("scheduler", {"type": "hyperband"}), ["unknown scheduler 'hyperband'"]),
    (with_change("scheduler", {"type": "asha", "reduction_factor": 1}), ["reduction_factor"]),
    (with_change("budget", {"num_samples": 0}), ["num_samples: expected an integer >= 1"]),
    (with_change("budget", {"time_budget": "ten minutes"}), ["not a duration"]),
    (with_change("params/windows.family/when/gaussian", {"windows.tau_min": {"type": "int", "low": 2, "high": 5}}),
     ["'gaussian' is not one of the values"]),
    (with_change("params/optim.lr_g", {"type": "loguniform", "low": 1e-5, "high": 1e-3, "values": [1]}),
     ["'values' does not apply to type loguniform"]),
    (with_change("base/preset", "huge"), ["base.preset 'huge'"]),
    (with_change("params/train.iterations", {"type": "int", "low": 5, "high": 40}) | {"base": {"train.iterations": 20}},
     ["both fixed in base and searched"]),
    (with_change("parms", 1), ["unknown section 'parms'", "did you mean 'params'"]),
    (with_change("params/train.seed", {"type": "int", "low": 0, "high": 9}), ["derived from the study seed"]),
    (with_change("base/train.eval_every", 0), ["train.eval_every=0"]),
])
def test_validation_errors_name_the_problem(data, expected):
    msg = error_of(data)
    for part in expected:
        assert part in msg, msg


def test_same_key_in_two_branches_needs_the_same_distribution():
    d = copy.deepcopy(GOOD)
    d["params"]["windows.family"]["when"]["uniform"] = {"windows.texp_mean": {"type": "uniform", "low": 1, "high": 2}}
    assert "searched twice with different distributions" in error_of(d)
    d["params"]["windows.family"]["when"]["uniform"] = {"windows.texp_mean": {"type": "uniform", "low": 5, "high": 30}}
    assert parse_space(d, name="t")


def test_conditional_params_are_sampled_only_for_their_branch():
    space = parse_space(GOOD, name="t")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    fn = OptunaSpace(space.params, study_seed=11)
    families = set()
    for _ in range(30):
        trial = study.ask()
        vals = fn(trial)
        fam = vals["windows.family"]
        families.add(fam)
        assert ("windows.texp_mean" in vals) == (fam == "texp")
        assert ("windows.scales" in vals) == (fam == "fixed")
        assert vals["train.seed"] == trial_seed(11, trial.number)
        space.trial_config(vals).validate()  # every sampled point is a valid config
        study.tell(trial, 1.0)
    assert families == {"fixed", "uniform", "texp"}


def test_trial_seeds_are_stable_and_distinct():
    seeds = [trial_seed(0, n) for n in range(50)]
    assert len(set(seeds)) == 50 and all(0 <= s < 2**31 for s in seeds)
    assert seeds == [trial_seed(0, n) for n in range(50)]
    assert trial_seed(1, 0) != trial_seed(0, 0)


def test_durations_and_objectives():
    assert parse_duration("10m") == 600 and parse_duration("1h30m") == 5400 and parse_duration(90) == 90
    assert parse_duration("1.5h") == 5400 and parse_duration(None) is None
    with pytest.raises(ConfigError):
        parse_duration("-5s")
    objs = parse_objectives("fd_clip40:min,apd")
    assert [(o.metric, o.mode) for o in objs] == [("fd_clip40", "min"), ("apd", "max")]
    with pytest.raises(ConfigError, match="listed twice"):
        parse_objectives("apd,apd:max")


@pytest.mark.parametrize("name", ["demo", "rnn", "transformer", "ablations"])
def test_shipped_spaces_validate(name):
    runner = CliRunner()
    res = runner.invoke(cli, ["validate", name])
    assert res.exit_code == 0, res.output
    assert "example trial config" in res.output and res.output.strip().endswith("ok")
    space = load_space(name)
    assert space.searched_keys()


def test_demo_space_searches_the_window_family_conditionally():
    space = load_space("demo")
    fam = next(p for p in space.params if p.key == "windows.family")
    assert set(fam.values) == {"fixed", "uniform", "texp"} and len(fam.when) == 3
    assert space.budget["num_samples"] >= 4 and space.scheduler["type"] == "asha"


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  optim.lr_gg: {type: loguniform, low: 1.0e-5, high: 1.0e-3}\n")
    assert run_cli(cli, ["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'optim.lr_g'" in err
    assert run_cli(cli, ["run", "--space", "nosuchspace", "--dry-run"]) == 2
    assert "no such search space" in capsys.readouterr().err
    assert run_cli(cli, ["run", "--dry-run", "--objectives", "fd_clip40:min,apd:max", "--metric", "apd"]) == 2
    assert "either --objectives or --metric" in capsys.readouterr().err
    assert run_cli(cli, ["run", "--dry-run", "--metric", "fd_clip400"]) == 2
    assert "unknown metric 'fd_clip400'" in capsys.readouterr().err
    assert run_cli(cli, ["run", "--dry-run", "--grace-period", "99"]) == 2
    assert "grace_period=99" in capsys.readouterr().err


def test_dry_run_prints_space_and_plan_and_starts_nothing(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["run", "--dry-run", "--experiment", "dry", "--storage", str(tmp_path / "st"),
                              "--objectives", "fd_clip40:min,apd:max", "--scheduler", "fifo", "--seed", "5",
                              "--tracking-uri", "none"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "windows.family" in out and "when windows.family = texp" in out
    assert "train.seed" in out and "searched" in out
    assert "fd_clip40:min, apd:max" in out and "fifo" in out and "dry run: nothing started" in out
    assert not (tmp_path / "st").exists()


def _row(tid, state, fd, apd):
    from launch.leaderboard import TrialRow

    return TrialRow(trial_id=tid, name=f"trial_{tid}", status="TERMINATED", state=state, config={}, step=8,
                    iterations=8, evaluations=2, best={"fd_clip40": (fd, 8), "apd": (apd, 8)},
                    last={"fd_clip40": fd, "apd": apd}, node_ip=None, error=None, seed=1, path=None)


def test_pareto_set_and_ranking():
    from launch.leaderboard import format_table, pareto_set, rank_rows

    objs = [["fd_clip40", "min"], ["apd", "max"]]
    rows = [_row("a", "finished", 1.0, 0.1), _row("b", "finished", 2.0, 0.5), _row("c", "stopped", 2.5, 0.4),
            _row("d", "error", 0.1, 9.0)]
    assert {r.trial_id for r in pareto_set(rows, objs)} == {"a", "b"}  # c dominated by b; errors excluded
    assert [r.trial_id for r in rank_rows(rows, objs)] == ["a", "b", "c", "d"]  # errors last
    table = format_table(rank_rows(rows, objs), objs, [])
    assert "pareto" in table.splitlines()[0] and table.count("*") == 2


def test_error_reason_takes_the_innermost_exception():
    from launch.leaderboard import error_reason

    text = ("Failure # 1\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
            "ray.exceptions.RayTaskError(SuhmoError): ray::ImplicitFunc.train()\n"
            "suhmo.utils.SuhmoError: diverged at iteration 2: loss_d is nan\n")
    assert error_reason(text) == "SuhmoError: diverged at iteration 2: loss_d is nan"


def test_samplers_are_chosen_from_the_registry():
    from launch.samplers import SAMPLERS, build_sampler

    space = parse_space(with_change("sampler", {"type": "gp", "n_startup_trials": 4}), name="t")
    assert space.sampler == {"type": "gp", "n_startup_trials": 4}
    assert "sampler    gp (n_startup_trials 4)" in space.describe()
    assert isinstance(build_sampler(space.sampler, seed=0), optuna.samplers.GPSampler)
    assert parse_space(with_change("sampler", "gp"), name="t").sampler["n_startup_trials"] == 2  # a third of 3, >= 2
    assert parse_space(GOOD, name="t").sampler["type"] == "tpe"  # the default stays
    msg = error_of(with_change("sampler", {"type": "gpp"}))
    assert "unknown sampler 'gpp'" in msg and "did you mean 'gp'" in msg and ", ".join(SAMPLERS) in msg


def test_every_committed_space_file_is_valid(tmp_path):
    """search_spaces/*.yaml parse and sample; the spaces on real data (which say that data.path
    must be set) do with data.path pointing at a landmark file."""
    import yaml

    from suhmo.data import save_landmarks, synthesize

    data = tmp_path / "clips.npz"
    save_landmarks(data, synthesize(4, 4.0, 0))
    files = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))
    assert {"demo.yaml", "natural.yaml", "natural3.yaml"} <= {f.name for f in files}
    for f in files:
        raw = yaml.safe_load(f.read_text())
        if "data.path" not in raw.get("base", {}) and "must be set" in f.read_text():
            raw["base"]["data.path"] = str(data)
        space = parse_space(raw, name=f.stem, path=str(f))
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(3):  # sampled values make valid trial configurations
            assert space.trial_config(space.define_by_run()(study.ask())) is not None


def test_an_objective_the_trials_never_report_is_one_line(tmp_path):
    """A fidelity key is a searchable objective only when the trials run the fidelity protocol."""
    from launch.plan import make_plan
    from suhmo.utils import SuhmoError

    raw = {"base": {"preset": "tiny"}, "params": {"optim.lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-3}},
           "objectives": ["fd_clip40:min", "pose_mem_err:min"]}
    with pytest.raises(SuhmoError, match=r"objective pose_mem_err: .*add fidelity to the space's base eval.metrics"):
        make_plan(parse_space(copy.deepcopy(raw), name="s"), storage=str(tmp_path))
    raw["base"]["eval.metrics"] = ["landmark", "fidelity"]
    plan = make_plan(parse_space(raw, name="s"), storage=str(tmp_path))
    assert plan.objectives == [["fd_clip40", "min"], ["pose_mem_err", "min"]]
