"""Search-space files: loading, validation and resolution into an Optuna define-by-run space.

A space file (``search_spaces/*.yaml``) is pure data::

    description: what this search is for
    base:                        # fixed values: a preset, then any config field by dotted name
      preset: tiny
      train.iterations: 200
      train.eval_every: 50
    params:                      # searched fields: dotted config key -> distribution
      optim.lr_g: {type: loguniform, low: 1.0e-5, high: 1.0e-3}
      model.hidden_g: {type: choice, values: [32, 64]}
      windows.family:            # a choice can carry parameters sampled only for one value
        type: choice
        values: [fixed, uniform, texp]
        when:
          fixed: {windows.scales: {type: choice, values: [[5, 10, 20, 40], [10, 20, 40]]}}
          texp: {windows.texp_mean: {type: uniform, low: 5, high: 30}}
    objective: fd_clip40:min     # or objectives: [fd_clip40:min, apd:max]
    scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
    budget: {num_samples: 6, max_concurrent: 2, time_budget: 10m}
    sampler: {type: tpe, n_startup_trials: 3}
    seed: 0

Everything is checked by :func:`load_space` before Ray starts; mistakes raise
:class:`suhmo.config.ConfigError` with a one-line message that names the file and key.
This module imports no ray; optuna only inside :class:`OptunaSpace` calls (through the
trial object handed in).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional, Union

from pydantic import Field

from launch.samplers import DEFAULT as DEFAULT_SAMPLER
from launch.samplers import SAMPLERS
from launch.space_schema import Budget, Choice, Distribution, Scheduler, SpaceFile
from suhmo.config import PRESETS, ConfigError, all_keys, base_type, coerce, field_type, load_yaml, suggest
from suhmo.config_errors import validate as _validate
from suhmo.resolve import resolve_config
from suhmo.selection import METRIC_MODES, Criterion

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class Param:
    """One searched config field (possibly conditional on a choice)."""

    key: str  # dotted config key
    kind: str  # loguniform | uniform | int | choice
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False  # int only
    step: Optional[float] = None  # int / uniform grid step
    values: tuple = ()
    when: tuple = ()  # ((choice value label, (Param, ...)), ...)

    def labels(self) -> list:
        """Optuna-storable labels of the choice values (lists become JSON strings)."""
        return [_label(v) for v in self.values]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice {list(self.values)}"
        rng = f"[{_fmt(self.low)}, {_fmt(self.high)}]"
        if self.kind == "int":
            return f"int {rng}" + (" log" if self.log else "") + (f" step {self.step:g}" if self.step else "")
        return f"{self.kind} {rng}" + (f" step {self.step:g}" if self.step else "")


@dataclass
class SearchSpace:
    """A validated space file."""

    name: str
    path: Optional[str]
    description: str
    preset: str
    base: dict[str, Any]  # dotted key -> fixed value
    params: list[Param]
    objectives: list[Criterion]
    scheduler: dict[str, Any]  # {type, grace_period, reduction_factor}
    budget: dict[str, Any]  # {num_samples, max_concurrent, time_budget_s}
    sampler: dict[str, Any]  # {type, n_startup_trials, population_size}
    seed: int = 0
    raw: dict = field(default_factory=dict)

    # -------------------------------------------------------------- derived
    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def all_params(self) -> list[Param]:
        """Every searched parameter, conditional ones included (unique by key)."""
        out: dict[str, Param] = {}

        def walk(ps):
            for p in ps:
                out.setdefault(p.key, p)
                for _, sub in p.when:
                    walk(sub)

        walk(self.params)
        return list(out.values())

    def searched_keys(self) -> list[str]:
        return [p.key for p in self.all_params()]

    def base_config(self, extra: Optional[dict] = None):
        """The fixed part of every trial's config (preset + base values), validated."""
        return resolve_config(self.preset, self.base, extra)

    def trial_config(self, sampled: dict[str, Any], objectives=None):
        """Resolve one trial: preset, then base values, then sampled values; validated
        (:func:`suhmo.resolve.resolve_config`)."""
        return resolve_config(self.preset, self.base, decode_sampled(sampled), objectives)

    @property
    def iterations(self) -> int:
        return int(self.base_config().train.iterations)

    @property
    def evaluations(self) -> int:
        """Reports per full trial: one per evaluation (the trainer evaluates every eval_every)."""
        cfg = self.base_config()
        return max(1, math.ceil(cfg.train.iterations / cfg.train.eval_every))

    def define_by_run(self) -> "OptunaSpace":
        return OptunaSpace(self.params, self.seed)

    def sample_example(self, seed: Optional[int] = None) -> dict[str, Any]:
        """One sampled point (Optuna random sampler), config keys -> values, for --dry-run."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=self.seed if seed is None else seed))
        trial = study.ask()
        return decode_sampled(OptunaSpace(self.params, self.seed)(trial))

    def describe(self) -> str:
        """Human-readable resolved space (validate / --dry-run)."""
        lines = [f"space      {self.name}" + (f"  ({self.path})" if self.path else "")]
        if self.description:
            lines.append(f"           {self.description}")
        lines.append(f"preset     {self.preset}")
        for k, v in self.base.items():
            lines.append(f"fixed      {k} = {v!r}")
        lines.append("searched")

        def walk(ps, indent):
            for p in ps:
                lines.append(f"{' ' * indent}{p.key:<24} {p.describe()}")
                for value, sub in p.when:
                    lines.append(f"{' ' * (indent + 2)}when {p.key} = {value}:")
                    walk(sub, indent + 4)

        walk(self.params, 2)
        lines.append("objective  " + ", ".join(str(o) for o in self.objectives))
        sch = self.scheduler
        if sch["type"] == "asha":
            lines.append(f"scheduler  asha (grace_period {sch['grace_period']} evaluations, "
                         f"reduction_factor {sch['reduction_factor']}, max {self.evaluations} evaluations)")
        else:
            lines.append("scheduler  fifo (every trial runs its full budget)")
        b = self.budget
        tb = f", time budget {format_duration(b['time_budget_s'])}" if b.get("time_budget_s") else ""
        lines.append(f"budget     {b['num_samples']} trials, {b['max_concurrent']} at a time{tb}")
        s = self.sampler
        lines.append(f"sampler    {s['type']}" + (f" (n_startup_trials {s['n_startup_trials']})"
                                                   if "n_startup_trials" in s else "") + f", study seed {self.seed}")
        return "\n".join(lines)


class OptunaSpace:
    """Define-by-run space for Ray's ``OptunaSearch(space=...)``.

    A plain class (not a closure) so the searcher state that Tune pickles for
    ``suhmo-search resume`` can be loaded again. Conditional parameters are suggested only
    when their parent choice took the matching value. The returned dict also holds the
    per-trial seed ``train.seed`` derived from the study seed and the Optuna trial number,
    so it is recorded in the trial's config.
    """

    def __init__(self, params: list[Param], study_seed: int):
        self.params = params
        self.study_seed = int(study_seed)

    def __call__(self, trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        self._suggest(trial, self.params, values)
        fixed_seed = trial.user_attrs.get(SEED_ATTR)
        values["train.seed"] = trial_seed(self.study_seed, trial.number) if fixed_seed is None else int(fixed_seed)
        return values

    def _suggest(self, trial, params: list[Param], out: dict) -> None:
        for p in params:
            if p.kind == "choice":
                label = trial.suggest_categorical(p.key, p.labels())
                out[p.key] = label
                for value_label, sub in p.when:
                    if value_label == label:
                        self._suggest(trial, list(sub), out)
            elif p.kind == "int":
                kw = {"log": True} if p.log else ({"step": int(p.step)} if p.step else {})
                out[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), **kw)
            else:
                kw = {"log": True} if p.kind == "loguniform" else ({"step": p.step} if p.step else {})
                out[p.key] = trial.suggest_float(p.key, float(p.low), float(p.high), **kw)


SEED_ATTR = "train.seed"  # user attribute of an enqueued trial: its seed, in place of trial_seed()


@dataclass(frozen=True)
class FixedPoint:
    """A trial the study asks before sampling: the Optuna values of its searched keys (labels,
    as in a trial's config) and its ``train.seed``."""

    params: dict[str, Any]
    seed: int


def trial_seed(study_seed: int, trial_number: int) -> int:
    """Per-trial seed: a stable hash of (study seed, Optuna trial number), < 2**31."""
    digest = hashlib.sha256(f"suhmo:{int(study_seed)}:{int(trial_number)}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def decode_sampled(sampled: dict[str, Any]) -> dict[str, Any]:
    """Turn Optuna labels back into config values (JSON-encoded lists -> lists)."""
    out = {}
    for k, v in sampled.items():
        if isinstance(v, str) and v.startswith(_JSON_PREFIX):
            v = json.loads(v[len(_JSON_PREFIX):])
        out[k] = v
    return out


_JSON_PREFIX = "json:"


def _label(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return _JSON_PREFIX + json.dumps(v)


def _fmt(x: Any) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) else str(x)


# ---------------------------------------------------------------------- durations
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)", re.I)


def parse_duration(text: Any, where: str = "duration") -> Optional[float]:
    """``"10m"``, ``"1h30m"``, ``"90s"``, ``"1.5h"`` or a number of seconds -> seconds."""
    if text is None or text == "" or (isinstance(text, str) and text.lower() in ("none", "null")):
        return None
    if isinstance(text, bool):
        raise ConfigError(f"{where}: expected a duration like 10m, got {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip().replace(" ", "")
        try:
            seconds = float(s)
        except ValueError:
            parts = _DURATION.findall(s)
            if not parts or "".join(a + u for a, u in parts).lower() != s.lower():
                raise ConfigError(f"{where}: {text!r} is not a duration; use e.g. 90s, 10m, 1h30m") from None
            seconds = sum(float(a) * {"h": 3600, "m": 60, "s": 1}[u.lower()] for a, u in parts)
    if not seconds > 0:
        raise ConfigError(f"{where}: {text!r} must be a positive duration")
    return seconds


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m}m{s:02d}s" if s else f"{m}m"
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}h{rest // 60:02d}m"


# ---------------------------------------------------------------------- objectives
def parse_objective(item: Any, where: str) -> Criterion:
    """``"fd_clip40:min"``, ``"apd"`` (default direction) or ``{metric: apd, mode: max}``."""
    if isinstance(item, dict):
        unknown = set(item) - {"metric", "mode"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; use metric and mode")
        metric, mode = item.get("metric"), item.get("mode")
    elif isinstance(item, str):
        metric, _, mode = item.partition(":")
        mode = mode or None
    else:
        raise ConfigError(f"{where}: expected 'metric:mode' (e.g. fd_clip40:min), got {item!r}")
    metric = str(metric or "").strip()
    if metric not in METRIC_MODES:
        raise ConfigError(f"{where}: unknown metric {metric!r}{suggest(metric, list(METRIC_MODES))} "
                          f"(known: {', '.join(METRIC_MODES)})")
    mode = (mode or METRIC_MODES[metric]).strip()
    if mode not in ("min", "max"):
        raise ConfigError(f"{where}: mode {mode!r} for {metric}: use min or max")
    return Criterion(metric, mode)


def parse_objectives(text: str, where: str = "--objectives") -> list[Criterion]:
    items = [s for s in (t.strip() for t in text.split(",")) if s]
    if not items:
        raise ConfigError(f"{where}: expected m1:min,m2:max")
    objs = [parse_objective(s, where) for s in items]
    names = [o.metric for o in objs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"{where}: metric {dup!r} is listed twice")
    return objs


# ---------------------------------------------------------------------- validation
# ---------------------------------------------------------------------- loading
def find_space(name_or_path: str) -> Path:
    """``demo`` -> ``search_spaces/demo.yaml`` of the repository (or of the cwd); or a path."""
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if p.is_file():
            return p.resolve()
        what = "not a regular file" if p.exists() else "file not found"
        raise ConfigError(f"--space {name_or_path}: {what}")
    roots = [REPO_ROOT / "search_spaces", Path.cwd() / "search_spaces"]
    for root in roots:
        cand = root / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand.resolve()
    known = sorted({f.stem for r in roots if r.is_dir() for f in r.glob("*.yaml")})
    raise ConfigError(f"--space {name_or_path}: no such search space{suggest(name_or_path, known)} "
                      f"(known: {', '.join(known) or 'none'})")


def load_space(name_or_path: str | Path) -> SearchSpace:
    path = find_space(str(name_or_path))
    return parse_space(load_yaml(path), name=path.stem, path=str(path))


def parse_space(data: dict, *, name: str = "space", path: Optional[str] = None) -> SearchSpace:
    """Validate a space mapping; every mistake is a one-line ConfigError naming the key."""
    where = path or name
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    data = copy.deepcopy(data)
    top = _validate(SpaceFile, data, where, "section", sep=": ")

    # base ------------------------------------------------------------------
    base_raw = dict(top.base or {})
    preset = base_raw.pop("preset", "tiny")
    if preset not in PRESETS:
        raise ConfigError(f"{where}: base.preset {preset!r}: choose one of {', '.join(PRESETS)}"
                          f"{suggest(str(preset), list(PRESETS))}")
    keys = all_keys()
    base: dict[str, Any] = {}
    for k, v in _flatten_sections(base_raw).items():
        _check_key(k, keys, f"{where}: base")
        base[k] = coerce(v, field_type(k), f"{where}: base.{k}")

    # params ----------------------------------------------------------------
    if not top.params:
        raise ConfigError(f"{where}: params: nothing to search; add at least one parameter")
    seen: dict[str, Param] = {}
    params = [_parse_param(k, spec, keys, f"{where}: params", seen) for k, spec in top.params.items()]
    both = [p.key for p in _walk(params) if p.key in base]
    if both:
        raise ConfigError(f"{where}: {both[0]} is both fixed in base and searched in params; keep one")
    if any(p.key == "train.seed" for p in _walk(params)):
        raise ConfigError(f"{where}: params: train.seed is derived from the study seed per trial; "
                          "set the top-level 'seed' instead")

    # objectives ------------------------------------------------------------
    if top.objective is not None and top.objectives is not None:
        raise ConfigError(f"{where}: give either objective or objectives, not both")
    if top.objectives is not None:
        items = top.objectives
        if isinstance(items, str):
            items = [s for s in items.split(",") if s.strip()]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}: objectives: expected a list like [fd_clip40:min, apd:max]")
        objectives = [parse_objective(it, f"{where}: objectives") for it in items]
    else:
        objectives = [parse_objective(top.objective or "fd_clip40:min", f"{where}: objective")]
    names = [o.metric for o in objectives]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: objectives: a metric is listed twice")

    scheduler = parse_scheduler(top.scheduler, f"{where}: scheduler")
    budget = parse_budget(top.budget, f"{where}: budget")
    sampler = parse_sampler(top.sampler, f"{where}: sampler", budget["num_samples"], len(objectives))
    space = SearchSpace(name=name, path=path, description=(top.description or "").strip(), preset=preset,
                        base=base, params=params, objectives=objectives, scheduler=scheduler, budget=budget,
                        sampler=sampler, seed=top.seed, raw=data)
    # the fixed part must already be a valid config (catches e.g. eval_every > iterations typos)
    try:
        space.base_config()
    except ConfigError as e:
        raise ConfigError(f"{where}: base: {e}") from None
    return space


def _walk(params):
    for p in params:
        yield p
        for _, sub in p.when:
            yield from _walk(sub)


def _flatten_sections(d: dict) -> dict:
    """Accept both ``train.iterations: 200`` and ``train: {iterations: 200}``."""
    sections = {k.split(".")[0] for k in all_keys()}
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and str(k) in sections:
            for sub, sv in v.items():
                out[f"{k}.{sub}"] = sv
        else:
            out[str(k)] = v
    return out


def _check_key(key: str, keys: list[str], where: str) -> None:
    if key not in keys:
        raise ConfigError(f"{where}: unknown config field {key!r}{suggest(key, keys)}")


def _parse_param(key: str, spec: Any, keys: list[str], where: str, seen: dict[str, Param]) -> Param:
    """One searched field: its distribution (declared above), then what depends on the field."""
    key = str(key)
    _check_key(key, keys, where)
    here = f"{where}.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{here}: expected a distribution like {{type: loguniform, low: 1e-5, high: 1e-3}}, "
                          f"got {spec!r}")
    dist = _validate(Distribution, spec, here, "distribution")
    ftype = field_type(key)
    base_t = base_type(ftype)
    if isinstance(dist, Choice):
        coerced = [coerce(v, ftype, f"{here} value {v!r}") for v in dist.values]
        labels = [_label(v) for v in coerced]
        if len(set(map(repr, labels))) != len(labels):
            raise ConfigError(f"{here}: choice values must be distinct")
        when = []
        for value, sub in (dist.when or {}).items():
            matches = [lab for v, lab in zip(coerced, labels) if v == value or str(v) == str(value)]
            if not matches:
                raise ConfigError(f"{here}.when: {value!r} is not one of the values {dist.values}")
            if not isinstance(sub, dict) or not sub:
                raise ConfigError(f"{here}.when.{value}: expected a mapping of config keys to distributions")
            subs = []
            for sk, sspec in sub.items():
                if str(sk) == key:
                    raise ConfigError(f"{here}.when.{value}: {key} cannot depend on itself")
                subs.append(_parse_param(sk, sspec, keys, f"{here}.when.{value}", seen))
            when.append((matches[0], tuple(subs)))
        param = Param(key, "choice", values=tuple(coerced), when=tuple(when))
    else:
        if base_t is bool or base_t is str or base_t is list:
            raise ConfigError(f"{here}: {key} is a {base_t.__name__} field; use type: choice")
        if dist.type != "int" and base_t is int:
            raise ConfigError(f"{here}: {key} is an int field; use type: int (log: true for a log scale)")
        for b, v in (("low", dist.low), ("high", dist.high)):
            coerce(int(v) if dist.type == "int" else v, ftype, f"{here}.{b}")
        param = Param(key, dist.type, low=dist.low, high=dist.high, log=getattr(dist, "log", False), step=dist.step)
    prev = seen.get(key)
    if prev is not None and prev != param:
        raise ConfigError(f"{here}: {key} is searched twice with different distributions; "
                          "a key may repeat only across branches of one choice and with the same spec")
    seen[key] = param
    return param


def _typed(raw: Any, default: str) -> Any:
    """A block given as ``NAME`` or ``{type: NAME, ...}`` (type defaults to ``default``)."""
    if raw is None or isinstance(raw, str):
        return {"type": raw or default}
    return {"type": default, **raw} if isinstance(raw, dict) else raw


def parse_scheduler(raw: Any, where: str) -> dict[str, Any]:
    sch = _validate(Scheduler, _typed(raw, "asha"), where, "scheduler").model_dump()
    if sch["type"] == "asha" and float(sch["reduction_factor"]).is_integer():
        sch["reduction_factor"] = int(sch["reduction_factor"])  # printed as 2, not 2.0
    return sch


def parse_budget(raw: Any, where: str) -> dict[str, Any]:
    b = _validate(Budget, raw or {}, where)
    return {"num_samples": b.num_samples, "max_concurrent": b.max_concurrent,
            "time_budget_s": parse_duration(b.time_budget, f"{where}.time_budget")}


def parse_sampler(raw: Any, where: str, num_samples: int, n_objectives: int) -> dict[str, Any]:
    """A sampler of the registry ``launch.samplers.SAMPLERS``, its budget-dependent defaults filled in."""
    union = Annotated[Union[tuple(SAMPLERS.values())], Field(discriminator="type")]
    return _validate(union, _typed(raw, DEFAULT_SAMPLER), where, "sampler").resolved(num_samples)


def check_metric_mode(metric: Optional[str], mode: Optional[str]) -> Criterion:
    """Validate the CLI's ``--metric``/``--mode`` pair."""
    return parse_objective(f"{metric}:{mode}" if mode else str(metric), "--metric")
