"""The plan of a search: the space file merged with the command line, saved as
``<storage>/<experiment>/search.json`` so that ``resume``, ``status`` and ``repeat`` need
nothing but the experiment name."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from launch.space import SearchSpace, parse_scheduler, parse_space
from suhmo.config import suggest
from suhmo.paths import home
from suhmo.selection import Criterion
from suhmo.utils import SuhmoError, atomic_write_text

PLAN_FILE = "search.json"


def latest_state_file(exp_dir: Path) -> Optional[Path]:
    """Tune's newest ``experiment_state-*.json`` in ``exp_dir`` (None: the search never started)."""
    # the name carries the session's start time; mtimes are not usable (storage sync rewrites old files)
    files = sorted(Path(exp_dir).glob("experiment_state-*.json"), key=lambda p: p.name)
    return files[-1] if files else None


@dataclass
class SearchPlan:
    """Everything a search needs; saved as ``<exp>/search.json`` for resume/status."""

    experiment: str
    storage: str  # absolute
    space: dict  # the space file's mapping (validated again on load)
    space_name: str
    space_path: Optional[str]
    num_samples: int
    max_concurrent: int
    cpus_per_trial: float
    gpus_per_trial: float | str  # a number or "auto"
    scheduler: dict
    objectives: list[list[str]]  # [[metric, mode], ...]
    time_budget_s: Optional[float]
    seed: int
    address: Optional[str] = None
    tracking_uri: Optional[str] = None  # None = no MLflow
    experiment_id: Optional[str] = None
    parent_run_id: Optional[str] = None
    created: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))

    @property
    def exp_dir(self) -> Path:
        return Path(self.storage) / self.experiment

    def resolved_space(self) -> SearchSpace:
        return parse_space(self.space, name=self.space_name, path=self.space_path)

    @property
    def objective_list(self) -> list[Criterion]:
        return [Criterion(m, mode) for m, mode in self.objectives]

    def save(self) -> None:
        atomic_write_text(self.exp_dir / PLAN_FILE, json.dumps(asdict(self), indent=2, default=str))

    @classmethod
    def load(cls, exp_dir: Path) -> "SearchPlan":
        p = Path(exp_dir) / PLAN_FILE
        if not p.is_file():
            raise SuhmoError(f"{exp_dir}: not a suhmo-search experiment (no {PLAN_FILE})")
        return cls(**json.loads(p.read_text()))


def check_reported(space: SearchSpace, objectives: list[Criterion]) -> None:
    """SuhmoError naming the first objective the trials would never report: a key of a metric
    protocol that the base config's ``eval.metrics`` does not run (e.g. ``pose_mem_err`` without
    ``fidelity``)."""
    from suhmo.metrics import REGISTRY, selectable_metrics

    cfg = space.base_config()
    known = set(selectable_metrics(cfg))
    for o in objectives:
        if o.metric not in known:
            owner = next((n for n, m in REGISTRY.items() if o.metric in m.keys), None)
            raise SuhmoError(f"objective {o.metric}: the trials do not report it with eval.metrics="
                             f"{list(cfg.eval.metrics)}" + (f"; add {owner} to the space's base eval.metrics"
                                                            if owner else ""))


def make_plan(space: SearchSpace, *, experiment: Optional[str] = None, storage: Optional[str] = None,
              num_samples: Optional[int] = None, max_concurrent: Optional[int] = None,
              cpus_per_trial: float = 1.0, gpus_per_trial: float | str = "auto",
              scheduler: Optional[str] = None, grace_period: Optional[int] = None,
              reduction_factor: Optional[float] = None, objectives: Optional[list[Criterion]] = None,
              time_budget_s: Optional[float] = None, address: Optional[str] = None,
              tracking_uri: Optional[str] = None, seed: Optional[int] = None) -> SearchPlan:
    """Merge the space file with the CLI options (CLI wins) and check the combination."""
    sched = dict(space.scheduler)
    if scheduler is not None and scheduler != sched["type"]:
        sched = parse_scheduler({"type": scheduler}, "--scheduler")
    if sched["type"] == "asha":
        if grace_period is not None:
            sched["grace_period"] = grace_period
        if reduction_factor is not None:
            sched["reduction_factor"] = reduction_factor
        sched = parse_scheduler(sched, "scheduler")
        if sched["grace_period"] > space.evaluations:
            raise SuhmoError(f"scheduler grace_period={sched['grace_period']} evaluations exceeds the "
                             f"{space.evaluations} evaluations of a trial (train.iterations / train.eval_every)")
    objs = objectives or space.objectives
    check_reported(space, objs)
    cpus = float(cpus_per_trial)
    if not cpus > 0:
        raise SuhmoError(f"--cpus-per-trial {cpus_per_trial}: must be > 0")
    if gpus_per_trial != "auto":
        g = float(gpus_per_trial)
        if g < 0 or (g > 1 and not g.is_integer()):
            raise SuhmoError(f"--gpus-per-trial {gpus_per_trial}: use a fraction in [0, 1] or a whole number")
        gpus_per_trial = g
    if not experiment:
        experiment = f"{space.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if any(c in experiment for c in "/\\ ") or experiment.startswith("."):
        raise SuhmoError(f"--experiment {experiment!r}: use letters, digits, '-', '_' and '.' only")
    root = Path(storage).expanduser().resolve() if storage else (home() / "search")
    return SearchPlan(
        experiment=experiment, storage=str(root), space=space.raw, space_name=space.name,
        space_path=space.path, num_samples=int(num_samples or space.budget["num_samples"]),
        max_concurrent=int(max_concurrent or space.budget["max_concurrent"]),
        cpus_per_trial=cpus, gpus_per_trial=gpus_per_trial, scheduler=sched,
        objectives=[[o.metric, o.mode] for o in objs],
        time_budget_s=time_budget_s if time_budget_s is not None else space.budget.get("time_budget_s"),
        seed=int(space.seed if seed is None else seed), address=address, tracking_uri=tracking_uri)


def find_experiment(name_or_path: str, storage: Optional[str] = None) -> Path:
    """``NAME`` under the storage root (default suhmo.paths.home()/search), or a folder path."""
    p = Path(name_or_path).expanduser()
    if (p / PLAN_FILE).is_file():
        return p.resolve()
    root = Path(storage).expanduser().resolve() if storage else home() / "search"
    cand = root / name_or_path
    if (cand / PLAN_FILE).is_file():
        return cand
    known = sorted(d.name for d in root.iterdir() if (d / PLAN_FILE).is_file()) if root.is_dir() else []
    raise SuhmoError(f"experiment {name_or_path!r} not found in {root}{suggest(name_or_path, known)}"
                     + (f" (known: {', '.join(known[-5:])})" if known else " (no experiments yet)"))


def storage_opt(plan: SearchPlan) -> str:
    """`` --storage DIR`` for the printed commands, empty for the default storage root."""
    default = str(home() / "search")
    return "" if plan.storage == default else f" --storage {plan.storage}"
