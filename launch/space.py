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
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from suhmo.config import PRESETS, ConfigError, all_keys, coerce, field_type, load_yaml, make_config, suggest
from suhmo.selection import METRIC_MODES, Objective  # noqa: F401 - re-exported: launch.space.Objective

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
TOP_LEVEL = ("description", "base", "params", "objective", "objectives", "scheduler", "budget",
             "sampler", "seed")
SCHEDULERS = ("asha", "fifo")
SAMPLERS = ("tpe", "nsga2", "random")

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
    objectives: list[Objective]
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
        return make_config(self.preset, overrides={**self.base, **(extra or {})})

    def trial_config(self, sampled: dict[str, Any]):
        """Resolve one trial: preset, then base values, then sampled values; validated."""
        values = {**self.base, **decode_sampled(sampled)}
        cfg = make_config(self.preset, overrides=values)
        if "train.select_metric" in values:  # else the trial keeps best.pt on the first objective
            from suhmo.metrics import check_select_metric
            from suhmo.utils import SuhmoError

            try:
                check_select_metric(cfg)
            except SuhmoError as e:
                raise ConfigError(str(e)) from None
        return cfg

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
                                                   if s["type"] == "tpe" else "") + f", study seed {self.seed}")
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
        values["train.seed"] = trial_seed(self.study_seed, trial.number)
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
def parse_objective(item: Any, where: str) -> Objective:
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
    return Objective(metric, mode)


def parse_objectives(text: str, where: str = "--objectives") -> list[Objective]:
    items = [s for s in (t.strip() for t in text.split(",")) if s]
    if not items:
        raise ConfigError(f"{where}: expected m1:min,m2:max")
    objs = [parse_objective(s, where) for s in items]
    names = [o.metric for o in objs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"{where}: metric {dup!r} is listed twice")
    return objs


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
    for key in data:
        if key not in TOP_LEVEL:
            raise ConfigError(f"{where}: unknown section {key!r}{suggest(str(key), list(TOP_LEVEL))} "
                              f"(sections: {', '.join(TOP_LEVEL)})")

    # base ------------------------------------------------------------------
    base_raw = data.get("base") or {}
    if not isinstance(base_raw, dict):
        raise ConfigError(f"{where}: base: expected a mapping of config keys to values")
    base_raw = dict(base_raw)
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
    params_raw = data.get("params") or {}
    if not isinstance(params_raw, dict):
        raise ConfigError(f"{where}: params: expected a mapping of config keys to distributions")
    if not params_raw:
        raise ConfigError(f"{where}: params: nothing to search; add at least one parameter")
    seen: dict[str, Param] = {}
    params = [_parse_param(k, spec, keys, f"{where}: params", seen) for k, spec in params_raw.items()]
    both = [p.key for p in _walk(params) if p.key in base]
    if both:
        raise ConfigError(f"{where}: {both[0]} is both fixed in base and searched in params; keep one")
    if any(p.key == "train.seed" for p in _walk(params)):
        raise ConfigError(f"{where}: params: train.seed is derived from the study seed per trial; "
                          "set the top-level 'seed' instead")

    # objectives ------------------------------------------------------------
    if "objective" in data and "objectives" in data:
        raise ConfigError(f"{where}: give either objective or objectives, not both")
    if "objectives" in data:
        items = data["objectives"]
        if isinstance(items, str):
            items = [s for s in items.split(",") if s.strip()]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}: objectives: expected a list like [fd_clip40:min, apd:max]")
        objectives = [parse_objective(it, f"{where}: objectives") for it in items]
    else:
        objectives = [parse_objective(data.get("objective", "fd_clip40:min"), f"{where}: objective")]
    names = [o.metric for o in objectives]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: objectives: a metric is listed twice")

    scheduler = parse_scheduler(data.get("scheduler"), f"{where}: scheduler")
    budget = parse_budget(data.get("budget"), f"{where}: budget")
    sampler = parse_sampler(data.get("sampler"), f"{where}: sampler", budget["num_samples"], len(objectives))
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{where}: seed: expected a non-negative integer, got {seed!r}")
    desc = data.get("description") or ""
    if not isinstance(desc, str):
        raise ConfigError(f"{where}: description: expected text")

    space = SearchSpace(name=name, path=path, description=desc.strip(), preset=preset, base=base,
                        params=params, objectives=objectives, scheduler=scheduler, budget=budget,
                        sampler=sampler, seed=seed, raw=data)
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


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {v!r}")
    if not math.isfinite(v):
        raise ConfigError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def _parse_param(key: str, spec: Any, keys: list[str], where: str, seen: dict[str, Param]) -> Param:
    key = str(key)
    _check_key(key, keys, where)
    here = f"{where}.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{here}: expected a distribution like {{type: loguniform, low: 1e-5, high: 1e-3}}, "
                          f"got {spec!r}")
    kind = spec.get("type")
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{here}: unknown distribution {kind!r}{suggest(str(kind), list(DISTRIBUTIONS))} "
                          f"(use {', '.join(DISTRIBUTIONS)})")
    allowed = {"type"} | ({"values", "when"} if kind == "choice" else
                          {"low", "high", "log", "step"} if kind == "int" else {"low", "high", "step"})
    extra = set(spec) - allowed
    if extra:
        bad = sorted(extra)[0]
        raise ConfigError(f"{here}: {bad!r} does not apply to type {kind}{suggest(bad, sorted(allowed))}")
    ftype = field_type(key)
    base_t = _base_type(ftype)
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{here}: choice needs a non-empty list 'values'")
        coerced = [coerce(v, ftype, f"{here} value {v!r}") for v in values]
        labels = [_label(v) for v in coerced]
        if len(set(map(repr, labels))) != len(labels):
            raise ConfigError(f"{here}: choice values must be distinct")
        when_raw = spec.get("when") or {}
        if not isinstance(when_raw, dict):
            raise ConfigError(f"{here}.when: expected a mapping from a choice value to parameters")
        when = []
        for value, sub in when_raw.items():
            matches = [lab for v, lab in zip(coerced, labels) if v == value or str(v) == str(value)]
            if not matches:
                raise ConfigError(f"{here}.when: {value!r} is not one of the values {values}")
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
        if kind in ("uniform", "loguniform") and base_t is int:
            raise ConfigError(f"{here}: {key} is an int field; use type: int (log: true for a log scale)")
        for b in ("low", "high"):
            if b not in spec:
                raise ConfigError(f"{here}: {kind} needs '{b}'")
        low, high = _number(spec["low"], f"{here}.low"), _number(spec["high"], f"{here}.high")
        if not low < high:
            raise ConfigError(f"{here}: low={spec['low']} must be < high={spec['high']}")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{here}: loguniform needs low > 0, got {spec['low']}")
        log = bool(spec.get("log", False))
        if kind == "int":
            if not (float(low).is_integer() and float(high).is_integer()):
                raise ConfigError(f"{here}: int bounds must be whole numbers, got {spec['low']}..{spec['high']}")
            if log and low <= 0:
                raise ConfigError(f"{here}: int with log: true needs low >= 1, got {spec['low']}")
        step = spec.get("step")
        if step is not None:
            step = _number(step, f"{here}.step")
            if step <= 0 or (kind == "int" and not float(step).is_integer()):
                raise ConfigError(f"{here}.step: must be a positive {'whole ' if kind == 'int' else ''}number")
            if kind == "int" and log:
                raise ConfigError(f"{here}: step and log: true cannot be combined")
        for b, v in (("low", low), ("high", high)):
            coerce(int(v) if kind == "int" else v, ftype, f"{here}.{b}")
        param = Param(key, kind, low=low, high=high, log=log, step=step)
    prev = seen.get(key)
    if prev is not None and prev != param:
        raise ConfigError(f"{here}: {key} is searched twice with different distributions; "
                          "a key may repeat only across branches of one choice and with the same spec")
    seen[key] = param
    return param


def _base_type(ftype: Any) -> Any:
    origin, args = typing.get_origin(ftype), typing.get_args(ftype)
    if origin is typing.Union and type(None) in args:
        ftype = next(a for a in args if a is not type(None))
    if ftype is list or typing.get_origin(ftype) is list:
        return list
    return ftype


def _typed_block(raw: Any, where: str, *, default: str, keys: dict[str, set], what: str) -> tuple[str, dict]:
    """``raw`` is a name or ``{type: NAME, ...}``; check the name and the keys allowed for it."""
    if raw is None:
        raw = {"type": default}
    if isinstance(raw, str):
        raw = {"type": raw}
    names = ", ".join(keys)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected one of {names} or {{type: NAME, ...}}")
    kind = raw.get("type", default)
    if kind not in keys:
        raise ConfigError(f"{where}: unknown {what} {kind!r}{suggest(str(kind), list(keys))} (use {names})")
    extra = set(raw) - keys[kind] - {"type"}
    if extra:
        raise ConfigError(f"{where}: {sorted(extra)[0]!r} does not apply to {what} {kind}")
    return kind, raw


def parse_scheduler(raw: Any, where: str) -> dict[str, Any]:
    kind, raw = _typed_block(raw, where, default="asha", what="scheduler",
                             keys={"asha": {"grace_period", "reduction_factor"}, "fifo": set()})
    out = {"type": kind}
    if kind == "asha":
        gp, rf = raw.get("grace_period", 1), raw.get("reduction_factor", 2)
        if isinstance(gp, bool) or not isinstance(gp, int) or gp < 1:
            raise ConfigError(f"{where}.grace_period: expected an integer >= 1 (evaluations), got {gp!r}")
        if isinstance(rf, bool) or not isinstance(rf, (int, float)) or rf <= 1:
            raise ConfigError(f"{where}.reduction_factor: expected a number > 1, got {rf!r}")
        out.update(grace_period=gp, reduction_factor=rf)
    return out


def parse_budget(raw: Any, where: str) -> dict[str, Any]:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with num_samples, max_concurrent, time_budget")
    allowed = ("num_samples", "max_concurrent", "time_budget")
    for k in raw:
        if k not in allowed:
            raise ConfigError(f"{where}: unknown key {k!r}{suggest(str(k), list(allowed))}")
    out: dict[str, Any] = {}
    for k, default in (("num_samples", 8), ("max_concurrent", 2)):
        v = raw.get(k, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}.{k}: expected an integer >= 1, got {v!r}")
        out[k] = v
    out["time_budget_s"] = parse_duration(raw.get("time_budget"), f"{where}.time_budget")
    return out


def parse_sampler(raw: Any, where: str, num_samples: int, n_objectives: int) -> dict[str, Any]:
    kind, raw = _typed_block(raw or None, where, default="tpe", what="sampler",
                             keys={"tpe": {"n_startup_trials"}, "nsga2": {"population_size"}, "random": set()})
    out: dict[str, Any] = {"type": kind}
    if kind == "tpe":
        # TPE needs a few random trials first; a third of a small budget, at most Optuna's 10
        n = raw.get("n_startup_trials", max(2, min(10, num_samples // 3)))
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where}.n_startup_trials: expected an integer >= 1, got {n!r}")
        out["n_startup_trials"] = n
    if kind == "nsga2":
        n = raw.get("population_size", max(2, min(50, num_samples // 2)))
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ConfigError(f"{where}.population_size: expected an integer >= 2, got {n!r}")
        out["population_size"] = n
    return out


def check_metric_mode(metric: Optional[str], mode: Optional[str]) -> Objective:
    """Validate the CLI's ``--metric``/``--mode`` pair."""
    return parse_objective(f"{metric}:{mode}" if mode else str(metric), "--metric")
