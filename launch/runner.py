"""Driver side of a search: Ray start-up, the Tuner, restore, status and the leaderboard.

``run_search(plan)`` builds one ``ray.tune.Tuner``: the function trainable
:func:`launch.trainable.suhmo_trial` wrapped with ``tune.with_resources`` (fractional GPUs
allowed), ``OptunaSearch`` with a seeded sampler and the space's define-by-run function,
ASHA (or FIFO) on the first objective reported at every evaluation, ``reuse_actors=True``,
``FailureConfig(max_failures=0)`` locally (an errored trial is recorded and the search goes on)
and ``CLUSTER_MAX_FAILURES`` on a cluster (a trial whose node is lost restarts from its last
checkpoint elsewhere). A time budget is :class:`launch.budget.TimeCap` (never stops before a
first evaluation). A local Ray instance listens on 127.0.0.1 only (:func:`start_ray`).
The experiment folder (``<storage>/<experiment>``) holds Tune's state plus ``search.json``
(this plan), so ``resume`` and ``status`` need nothing but the experiment name.

``read_trials(exp_dir)`` parses Tune's ``experiment_state-*.json`` and the trials'
``result.json`` without starting Ray; the leaderboard and ``suhmo-search status`` use it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

from launch.space import REPO_ROOT, SearchSpace, format_duration, parse_space
from launch.trainable import META_KEY, STOP_FILE, suhmo_trial
from suhmo import hints
from suhmo.selection import METRIC_MODES, Objective, objectives_of, pareto_front
from suhmo.utils import SuhmoError

PLAN_FILE = "search.json"

# Environment that keeps Ray quiet and local-only (ECOSYSTEM.md); set before ray is imported.
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0",
    # a reused actor waits this long for the previous trial's thread (stopped within one iteration)
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "30",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
    # the legacy reporter stays silent at verbose=0; the new one prints every trial error in full
    "RAY_AIR_NEW_OUTPUT": "0",
}
_NOISY = (
    "Failed to fetch metrics for",  # restore: trials that had not reported yet
    "You may want to consider increasing the `CheckpointConfig(num_to_keep)`",
    "Experiment state snapshotting has been triggered multiple times",
    "Trial task failed for trial",  # printed with a full traceback; we print one line instead
    "Stop signal received",  # we print our own message after the state is saved
    "Experiment has been interrupted, but the most recent state was saved",
    "Trials did not complete",
    "A new study created",
    "The `local_dir` argument is deprecated",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001
            return True
        return not any(s in msg for s in _NOISY)


def quiet_ray() -> None:
    """Environment, warning filters and log levels for a terse search (driver side)."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray\..*")
    warnings.filterwarnings("ignore", message=r".*ExperimentalWarning.*")
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    except Exception:  # noqa: BLE001
        pass
    _install_log_filters()


def _install_log_filters() -> None:
    """Ray logs through its own handlers; a filter on a parent logger does not see child records."""
    for name in ("ray.tune", "ray.train", "ray.air", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..."
        logging.getLogger(name).setLevel(logging.WARNING)
    loggers = [logging.getLogger(), logging.getLogger("ray"), logging.getLogger("ray.tune")]
    for lg in loggers:
        for handler in lg.handlers:
            if not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())


def worker_env() -> dict[str, str]:
    """Environment of every Ray worker (also on other nodes of a cluster)."""
    env = {k: v for k, v in QUIET_ENV.items()}
    if (REPO_ROOT / "launch" / "__init__.py").is_file():
        # a source checkout: make launch/, suhmo/ and tracking/ importable whatever the cwd
        parts = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


# ---------------------------------------------------------------------- the plan
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
    def objective_list(self) -> list[Objective]:
        return [Objective(m, mode) for m, mode in self.objectives]

    def save(self) -> None:
        from suhmo.utils import atomic_write_text

        atomic_write_text(self.exp_dir / PLAN_FILE, json.dumps(asdict(self), indent=2, default=str))

    @classmethod
    def load(cls, exp_dir: Path) -> "SearchPlan":
        p = Path(exp_dir) / PLAN_FILE
        if not p.is_file():
            raise SuhmoError(f"{exp_dir}: not a suhmo-search experiment (no {PLAN_FILE})")
        return cls(**json.loads(p.read_text()))


def make_plan(space: SearchSpace, *, experiment: Optional[str] = None, storage: Optional[str] = None,
              num_samples: Optional[int] = None, max_concurrent: Optional[int] = None,
              cpus_per_trial: float = 1.0, gpus_per_trial: float | str = "auto",
              scheduler: Optional[str] = None, grace_period: Optional[int] = None,
              reduction_factor: Optional[float] = None, objectives: Optional[list[Objective]] = None,
              time_budget_s: Optional[float] = None, address: Optional[str] = None,
              tracking_uri: Optional[str] = None, seed: Optional[int] = None) -> SearchPlan:
    """Merge the space file with the CLI options (CLI wins) and check the combination."""
    from launch.space import parse_scheduler
    from suhmo.paths import home

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


# ---------------------------------------------------------------------- Ray pieces
def start_ray(address: Optional[str], echo: Callable[[str], None]) -> dict:
    """Connect to ``address`` (auto | HOST:PORT) or start a local instance; cluster resources."""
    quiet_ray()
    import ray

    if ray.is_initialized():
        return dict(ray.cluster_resources())
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                                  runtime_env={"env_vars": worker_env()})
    t0 = time.time()
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            _init_loopback_ray(kwargs)
    except ConnectionError as e:
        raise SuhmoError(f"--address {address}: cannot connect to a Ray cluster ({str(e).splitlines()[0]}); "
                         "start one with `ray start --head` or leave --address out") from None
    _install_log_filters()
    res = dict(ray.cluster_resources())
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    where = f"cluster at {address}" if address else "local Ray"
    echo(f"{where}: {len(nodes)} node(s), {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU "
         f"(ready in {time.time() - t0:.0f}s)")
    return res


def _init_loopback_ray(kwargs: dict) -> None:
    """Start a new local Ray instance whose every process listens on 127.0.0.1 only.

    Ray binds its GCS, raylet, object manager and worker ports to the node IP, and on Linux
    it turns 127.0.0.1 into the machine's network address (``resolve_ip_for_localhost``)
    unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; with it the node IP is 127.0.0.1. The
    setting is read when ``ray`` is imported, so it is set in the environment (inherited by
    the processes Ray starts) and, when ray is already imported, on the constant, for the
    start only: a later ``--address`` connection in the same process must see the real IP.
    Token authentication stays at Ray's default (on for local instances since Ray 2.59):
    loopback keeps the network out, the token keeps other users of this machine out.
    ``address="local"`` never attaches to a cluster that ``ray start`` left on this machine.
    """
    import ray
    from ray._private import ray_constants

    key = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_const = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_const
        if saved_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved_env
    _private_token_file()
    ips = {n.get("NodeManagerAddress") for n in ray.nodes() if n.get("Alive")}
    if not ips or not all(str(ip).startswith("127.") for ip in ips):
        ray.shutdown()
        raise SuhmoError(f"local Ray started on {', '.join(sorted(map(str, ips)))} instead of 127.0.0.1; "
                         "refusing to run a search reachable from the network")


def _private_token_file() -> None:
    """Ray 2.60 writes the generated ``~/.ray/auth_token`` readable by everyone (0644): make
    it the owner's only, or any user of this machine could read the token and use the instance."""
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        if token.is_file() and token.stat().st_uid == os.getuid() and token.stat().st_mode & 0o077:
            os.chmod(token, 0o600)
    except OSError:
        pass


def trial_resources(plan: SearchPlan, cluster: dict) -> dict[str, float]:
    gpus_avail = float(cluster.get("GPU", 0))
    gpus = plan.gpus_per_trial
    if gpus == "auto":
        # several small trials share one GPU; none when the cluster has no GPU (CPU training)
        gpus = 0.0 if gpus_avail == 0 else min(1.0, gpus_avail / max(1, plan.max_concurrent))
    gpus = float(gpus)
    if gpus > 0 and gpus_avail < gpus and not plan.address:
        raise SuhmoError(f"--gpus-per-trial {gpus:g}: this machine has {gpus_avail:g} GPU; use 0 (CPU)")
    cpus_avail = float(cluster.get("CPU", 0))
    if plan.cpus_per_trial > cpus_avail and not plan.address:
        raise SuhmoError(f"--cpus-per-trial {plan.cpus_per_trial:g}: this machine has {cpus_avail:g} CPU")
    return {"cpu": plan.cpus_per_trial, "gpu": gpus}


def trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def _searcher(space: SearchSpace, plan: SearchPlan):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    s = space.sampler
    if s["type"] == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=plan.seed, population_size=s["population_size"])
    elif s["type"] == "random":
        sampler = optuna.samplers.RandomSampler(seed=plan.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=plan.seed, n_startup_trials=s["n_startup_trials"],
                                             multivariate=False)
    metrics = [m for m, _ in plan.objectives]
    modes = [mode for _, mode in plan.objectives]
    multi = len(metrics) > 1
    searcher_space = space.define_by_run()
    searcher_space.study_seed = plan.seed
    return OptunaSearch(space=searcher_space, metric=metrics if multi else metrics[0],
                        mode=modes if multi else modes[0], sampler=sampler)


def _scheduler(space: SearchSpace, plan: SearchPlan):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sch = plan.scheduler
    if sch["type"] == "fifo":
        return FIFOScheduler()
    metric, mode = plan.objectives[0]
    return ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode,
                         max_t=space.evaluations, grace_period=int(sch["grace_period"]),
                         reduction_factor=float(sch["reduction_factor"]))


def _meta(space: SearchSpace, plan: SearchPlan) -> dict:
    return {"preset": space.preset, "base": dict(space.base), "objectives": plan.objectives,
            "study_seed": plan.seed, "threads": max(1, int(plan.cpus_per_trial)),
            "tracking_uri": plan.tracking_uri, "experiment_id": plan.experiment_id,
            "parent_run_id": plan.parent_run_id, "experiment": plan.experiment, "storage": plan.storage}


CLUSTER_MAX_FAILURES = 2  # restarts of a trial after its worker or node died (Tune's FailureConfig)


def build_tuner(plan: SearchPlan, space: SearchSpace, resources: dict, callbacks: list):
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner

    from launch.budget import TimeCap

    trainable = tune.with_resources(suhmo_trial, resources)
    cap = TimeCap(plan.time_budget_s, stop_file=plan.exp_dir / STOP_FILE) if plan.time_budget_s else None
    tune_config = TuneConfig(
        search_alg=_searcher(space, plan), scheduler=_scheduler(space, plan),
        num_samples=plan.num_samples, max_concurrent_trials=plan.max_concurrent,
        reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_name)
    run_config = RunConfig(
        name=plan.experiment, storage_path=plan.storage, verbose=0,
        callbacks=callbacks + ([cap] if cap is not None else []), stop=cap,
        checkpoint_config=CheckpointConfig(num_to_keep=2),
        # on a cluster a trial whose node is lost restarts from its last checkpoint on another
        # node; locally a failure is recorded (an errored trial is retried by `resume`)
        failure_config=FailureConfig(max_failures=CLUSTER_MAX_FAILURES if plan.address else 0, fail_fast=False))
    return Tuner(trainable, param_space={META_KEY: _meta(space, plan)}, tune_config=tune_config,
                 run_config=run_config)


# ---------------------------------------------------------------------- progress
def _short(key: str) -> str:
    return key.split(".")[-1]


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def describe_config(config: dict, keys: Optional[list[str]] = None) -> str:
    from launch.trainable import sampled_values

    vals = sampled_values(config)
    vals.pop("train.seed", None)
    keys = keys or list(vals)
    return " ".join(f"{_short(k)}={_fmt_value(vals[k])}" for k in keys if k in vals)


def _make_progress_callback(objectives: list[list[str]], echo: Callable[[str], None], budget: Optional[int] = None):
    from launch.progress import Progress

    return Progress(objectives, echo, budget=budget)


def error_reason(text: str) -> str:
    """The one-line cause in a Ray error file (the innermost ``SomeError: message``)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    oom = next((ln for ln in lines if "killed due to the node running low on memory" in ln), None)
    if oom is not None:  # Ray's memory monitor: its message ends in a page of advice, not the cause
        why = next((ln for ln in lines if ln.startswith("OOM kill reason:")), "")
        return f"OutOfMemoryError: killed by Ray's memory monitor ({why[len('OOM kill reason:'):].strip() or oom})"
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if ":" in ln and head.replace(".", "").replace("_", "").isalnum() and \
                (head.endswith("Error") or head.endswith("Exception") or head.endswith("Interrupt")):
            name, msg = ln.split(":", 1)
            return f"{name.split('.')[-1]}:{msg}"
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------- reading an experiment
@dataclass
class TrialRow:
    trial_id: str
    name: str
    status: str  # Tune: PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    state: str  # finished | stopped | error | running | pending | interrupted
    config: dict
    step: int  # trainer iterations done (last report)
    iterations: int
    evaluations: int
    best: dict[str, tuple[float, int]]  # metric -> (best value, step)
    last: dict[str, float]  # metrics of the last evaluation
    node_ip: Optional[str]
    error: Optional[str]
    seed: Optional[int]
    path: Optional[str]
    time_total_s: float = 0.0
    first_result: Optional[dict] = None


def latest_state_file(exp_dir: Path) -> Optional[Path]:
    # the name carries the session's start time; mtimes are not usable (storage sync rewrites old files)
    files = sorted(Path(exp_dir).glob("experiment_state-*.json"), key=lambda p: p.name)
    return files[-1] if files else None


def read_trials(exp_dir: Path, objectives: list[list[str]], iterations: Optional[int] = None) -> list[TrialRow]:
    """Trials of an experiment from its files (no Ray needed)."""
    exp_dir = Path(exp_dir)
    state_file = latest_state_file(exp_dir)
    if state_file is None:
        return []
    data = json.loads(state_file.read_text())
    rows = []
    for item in data.get("trial_data", []):
        tj = json.loads(item[0]) if isinstance(item[0], str) else item[0]
        rt = json.loads(item[1]) if isinstance(item[1], str) else item[1]
        tid = tj["trial_id"]
        tdir = exp_dir / tj.get("relative_logdir", f"trial_{tid}")
        history = []
        rfile = tdir / "result.json"
        if rfile.is_file():
            for line in rfile.read_text().splitlines():
                try:
                    history.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line being written
        last = history[-1] if history else (rt.get("last_result") or {})
        history, last = _with_unprocessed_reports(tdir, history, last)
        best: dict[str, tuple[float, int]] = {}
        for obj in objectives_of(objectives):
            h = obj.best_of(history, lambda h: h.get(obj.metric))
            if h is not None:
                best[obj.metric] = (h[obj.metric], h.get("step", 0))
        err = None
        if rt.get("error_filename"):
            ef = tdir / rt["error_filename"]
            err = error_reason(ef.read_text()) if ef.is_file() else "error (no error file)"
        status = tj.get("status", "?")
        step = int(last.get("step", 0) or 0)
        total = int(last.get("iterations", iterations or 0) or 0)
        if status == "ERROR":
            state = "error"
        elif status == "TERMINATED":
            state = "finished" if total and step >= total else "stopped"
        elif status == "RUNNING":
            state = "running"
        elif status == "PAUSED":
            state = "interrupted"
        else:
            state = "pending"
        config = tj.get("config", {})
        rows.append(TrialRow(
            trial_id=tid, name=f"trial_{tid}", status=status, state=state, config=config, step=step,
            iterations=total, evaluations=len(history), best=best,
            last={k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            node_ip=last.get("node_ip"), error=err, seed=config.get("train.seed"), path=str(tdir),
            time_total_s=float(last.get("time_total_s", 0) or 0), first_result=history[0] if history else None))
    return rows


def _with_unprocessed_reports(tdir: Path, history: list, last: dict) -> tuple[list, dict]:
    """Add the evaluations of a checkpoint the trial persisted after its last result the driver
    recorded (a search interrupted between a report and its processing): the leaderboard then
    shows what the trial (and MLflow) reached, not the driver's stale view."""
    from launch.trainable import stored_checkpoints

    stored = stored_checkpoints(tdir)
    done = int(last.get("step", 0) or 0)
    if not stored or stored[-1][0] <= done:
        return history, last
    log = stored[-1][1] / "metrics.jsonl"
    extra = []
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > done:
                extra.append(row)
    if not extra:
        return history, last
    return history + extra, {**last, **extra[-1]}


def rank_rows(rows: list[TrialRow], objectives: list[list[str]]) -> list[TrialRow]:
    """Best first on the first objective's best value; errored trials and trials without a value last."""
    obj = Objective.of(objectives[0])
    m = obj.metric
    return sorted(rows, key=lambda r: (r.state == "error", m not in r.best,
                                       obj.key(r.best[m][0]) if m in r.best else 0.0))


def pareto_set(rows: list[TrialRow], objectives: list[list[str]]) -> list[TrialRow]:
    """Non-dominated trials on the objective values of their last evaluation (what Optuna was told)."""
    return pareto_front([r for r in rows if r.state != "error"], objectives, lambda r: r.last)


def format_table(rows: list[TrialRow], objectives: list[list[str]], param_keys: list[str],
                 *, show_error: bool = True, extra_metrics: tuple = ()) -> str:
    """Leaderboard / status table: trial, state, config, objectives, other metrics, iterations."""
    multi = len(objectives) > 1
    pareto = {r.trial_id for r in pareto_set(rows, objectives)} if multi else set()
    header = ["#", "trial", "state", "it"]
    shorts = [_short(k) for k in param_keys]  # the full key where two share a last part (actor.beta, hitdvae.beta)
    header += [sh if shorts.count(sh) == 1 else k for sh, k in zip(shorts, param_keys)]
    for m, mode in objectives:
        header.append(f"best {m} ({mode})")
        if multi:
            header.append(f"last {m}")
    header += list(extra_metrics)
    if multi:
        header.append("pareto")
    header.append("node")
    if show_error:
        header.append("error")
    table = []
    for i, r in enumerate(rows, 1):
        line = [str(i), r.name, r.state, f"{r.step}/{r.iterations or '?'}"]
        from launch.trainable import sampled_values

        vals = sampled_values(r.config)
        line += [_fmt_value(vals[k]) if k in vals else "-" for k in param_keys]
        for m, _ in objectives:
            line.append(f"{r.best[m][0]:.4g} @{r.best[m][1]}" if m in r.best else "-")
            if multi:
                line.append(f"{r.last[m]:.4g}" if m in r.last else "-")
        for em in extra_metrics:
            line.append(f"{r.last[em]:.3g}" if em in r.last else "-")
        if multi:
            line.append("*" if r.trial_id in pareto else "")
        line.append(r.node_ip or "-")
        if show_error:
            line.append((r.error or "")[:90])
        table.append(line)
    widths = [max(len(h), *(len(row[j]) for row in table)) if table else len(h) for j, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(out)


def _other_metrics(rows: list[TrialRow], objectives: list[list[str]], limit: int = 4) -> tuple:
    objs = {m for m, _ in objectives}
    seen = []
    for r in rows:
        for k in r.last:
            if k in METRIC_MODES and k not in objs and k not in seen:
                seen.append(k)
    return tuple(seen[:limit])


def summary_counts(rows: list[TrialRow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.state] = out.get(r.state, 0) + 1
    return out


# ---------------------------------------------------------------------- run / resume
@dataclass
class SearchOutcome:
    plan: SearchPlan
    rows: list[TrialRow]
    wall_s: float
    interrupted: bool
    budget_hit: bool
    progress: Any = None  # the progress callback (timings for benchmarks)


def _setup_tracking(plan: SearchPlan, cli_options: dict, echo) -> None:
    if not plan.tracking_uri:
        return
    import tracking

    plan.experiment_id = tracking.setup_experiment(plan.tracking_uri, plan.experiment)
    plan.parent_run_id = tracking.start_search_run(
        plan.tracking_uri, plan.experiment_id, space_file=plan.space_path, cli_options=cli_options,
        study_seed=plan.seed, run_name=plan.experiment, objectives=plan.objectives)


def _finish_tracking(plan: SearchPlan, outcome: SearchOutcome, status: str, echo) -> None:
    if not plan.tracking_uri or not plan.parent_run_id:
        return
    import tracking

    counts = summary_counts(outcome.rows)
    summary = {"wall_s": round(outcome.wall_s, 1), "num_samples": plan.num_samples,
               "interrupted": outcome.interrupted, "storage": str(plan.exp_dir), **{f"n_{k}": v for k, v in counts.items()}}
    try:
        tracking.finish_search_run(plan.tracking_uri, plan.parent_run_id, summary, status=status,
                                   trial_states={r.trial_id: r.state for r in outcome.rows},
                                   trial_errors={r.trial_id: r.error for r in outcome.rows if r.error})
    except Exception as e:  # noqa: BLE001 - the search itself is done; say what failed
        echo(f"warning: could not close the MLflow search run: {e}")


def run_search(plan: SearchPlan, *, echo: Callable[[str], None] = print, cli_options: Optional[dict] = None,
               shutdown: bool = True) -> SearchOutcome:
    """Run a new search; returns the trial rows read back from the experiment folder."""
    space = plan.resolved_space()
    if latest_state_file(plan.exp_dir) is not None:
        raise SuhmoError(f"experiment {plan.experiment!r} already exists in {plan.storage}; "
                         f"`suhmo-search resume {plan.experiment}` continues it, or pass another --experiment")
    t0 = time.time()
    cluster = start_ray(plan.address, echo)
    try:
        resources = trial_resources(plan, cluster)
        _setup_tracking(plan, cli_options or {}, echo)
        plan.exp_dir.mkdir(parents=True, exist_ok=True)
        plan.save()
        progress = _make_progress_callback(plan.objectives, echo, plan.num_samples)
        tuner = build_tuner(plan, space, resources, [progress])
        echo(f"search {plan.experiment}: {plan.num_samples} trials, {plan.max_concurrent} at a time, "
             f"{_res_text(resources)} per trial, {plan.scheduler['type']} on "
             + ", ".join(f"{m}:{mode}" for m, mode in plan.objectives) + f", study seed {plan.seed}")
        return _fit_and_collect(tuner, plan, space, t0, progress, echo)
    finally:
        if shutdown:
            import ray

            ray.shutdown()


def _res_text(resources: dict) -> str:
    return f"{resources['cpu']:g} CPU" + (f" + {resources['gpu']:g} GPU" if resources.get("gpu") else "")


def _fit_and_collect(tuner, plan: SearchPlan, space: SearchSpace, t0: float, progress, echo) -> SearchOutcome:
    status = "FAILED"
    (plan.exp_dir / STOP_FILE).unlink(missing_ok=True)  # a resumed search that had hit its time budget
    outcome = SearchOutcome(plan, [], 0.0, False, False, progress)
    try:
        try:
            tuner.fit()
        except (SuhmoError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - the driver failed (Ray died, a node or worker was killed...)
            raise SuhmoError(f"search {plan.experiment} failed: {_cause(e)}; the state saved so far is kept: "
                             f"suhmo-search resume {plan.experiment}{_storage_opt(plan)}") from None
        rows = read_trials(plan.exp_dir, plan.objectives, space.iterations)
        wall = time.time() - t0
        unfinished = [r for r in rows if r.state in ("running", "pending", "interrupted")]
        budget_hit = bool(plan.time_budget_s) and wall >= plan.time_budget_s * 0.98
        interrupted = (bool(unfinished) or len(rows) < plan.num_samples) and not budget_hit
        outcome = SearchOutcome(plan, rows, wall, interrupted, budget_hit, progress)
        status = "KILLED" if interrupted else "FINISHED"
        return outcome
    finally:
        if not outcome.rows:
            outcome.rows = read_trials(plan.exp_dir, plan.objectives, space.iterations)
            outcome.wall_s = time.time() - t0
        _finish_tracking(plan, outcome, status, echo)


def _cause(e: BaseException) -> str:
    """The innermost cause of a chained exception, on one line (Ray wraps errors several deep)."""
    seen = set()
    while (e.__cause__ or e.__context__) is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def resume_search(exp_dir: Path, *, address: Optional[str] = None, retry_errored: bool = True,
                  echo: Callable[[str], None] = print, shutdown: bool = True) -> SearchOutcome:
    """Continue an interrupted search: Tuner.restore (Optuna state included)."""
    plan = SearchPlan.load(exp_dir)
    if address is not None:
        plan.address = address
    space = plan.resolved_space()
    quiet_ray()
    from ray import tune
    from ray.tune import Tuner

    if not Tuner.can_restore(str(plan.exp_dir)):
        raise SuhmoError(f"{plan.exp_dir}: no saved Tune state to resume (did the search start?)")
    t0 = time.time()
    cluster = start_ray(plan.address, echo)
    try:
        resources = trial_resources(plan, cluster)
        if plan.tracking_uri and plan.parent_run_id:
            import tracking

            tracking.start_search_run(plan.tracking_uri, plan.experiment_id, space_file=None, cli_options={},
                                      study_seed=plan.seed, run_name=plan.experiment,
                                      objectives=plan.objectives, run_id=plan.parent_run_id)
        before = read_trials(plan.exp_dir, plan.objectives, space.iterations)
        done = sum(r.state in ("finished", "stopped", "error") for r in before)
        echo(f"resume {plan.experiment}: {done} of {plan.num_samples} trials done, "
             f"{len(before) - done} to continue, {max(0, plan.num_samples - len(before))} not started")
        tuner = Tuner.restore(str(plan.exp_dir), trainable=tune.with_resources(suhmo_trial, resources),
                              resume_unfinished=True, resume_errored=retry_errored, restart_errored=False)
        progress = None
        return _fit_and_collect(tuner, plan, space, t0, progress, echo)
    finally:
        if shutdown:
            import ray

            ray.shutdown()


def find_experiment(name_or_path: str, storage: Optional[str] = None) -> Path:
    """``NAME`` under the storage root (default suhmo.paths.home()/search), or a folder path."""
    from suhmo.paths import home

    p = Path(name_or_path).expanduser()
    if (p / PLAN_FILE).is_file():
        return p.resolve()
    root = Path(storage).expanduser().resolve() if storage else home() / "search"
    cand = root / name_or_path
    if (cand / PLAN_FILE).is_file():
        return cand
    known = sorted(d.name for d in root.iterdir() if (d / PLAN_FILE).is_file()) if root.is_dir() else []
    from suhmo.config import suggest

    raise SuhmoError(f"experiment {name_or_path!r} not found in {root}{suggest(name_or_path, known)}"
                     + (f" (known: {', '.join(known[-5:])})" if known else " (no experiments yet)"))


def param_columns(space: SearchSpace, limit: int = 6) -> list[str]:
    return [k for k in space.searched_keys()][:limit]


def render_report(outcome: SearchOutcome, echo: Callable[[str], None] = print) -> None:
    """Leaderboard, best config / Pareto set, and what to run next."""
    plan = outcome.plan
    space = plan.resolved_space()
    rows = rank_rows(outcome.rows, plan.objectives)
    counts = summary_counts(rows)
    echo("")
    echo(f"leaderboard of {plan.experiment} ({len(rows)} trials: "
         + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"; {format_duration(outcome.wall_s)} wall)")
    echo(format_table(rows, plan.objectives, param_columns(space), show_error=any(r.error for r in rows),
                      extra_metrics=_other_metrics(rows, plan.objectives)))
    for line in scale_lines(space, rows, plan.objectives):
        echo(line)
    if len(plan.objectives) > 1:
        front = pareto_set(rows, plan.objectives)
        echo("")
        echo("Pareto set (" + ", ".join(f"{m} {mode}" for m, mode in plan.objectives) + ", last evaluation):")
        for r in front:
            echo(f"  {r.name}  " + "  ".join(f"{m}={r.last[m]:.4g}" for m, _ in plan.objectives)
                 + f"  {describe_config(r.config)}")
    elif rows and plan.objectives[0][0] in rows[0].best:
        top = rows[0]
        m = plan.objectives[0][0]
        echo("")
        echo(f"best: {top.name}  {m}={top.best[m][0]:.4g} at iteration {top.best[m][1]}  seed {top.seed}")
        echo(f"      {describe_config(top.config)}")
    if outcome.interrupted:
        echo("")
        echo(f"search interrupted; its state is saved. Continue it with:\n"
             f"  {hints.suhmo_search()} resume {plan.experiment}" + _storage_opt(plan))
        return
    errored = sum(r.state == "error" for r in rows)
    if errored:
        echo("")
        echo(f"{errored} trial(s) errored (reasons above); after fixing the cause, "
             f"`{hints.suhmo_search()} resume {plan.experiment}{_storage_opt(plan)}` retries them from their last checkpoint")
    if outcome.budget_hit:
        echo(f"time budget {format_duration(plan.time_budget_s)} reached: {len(rows)} of {plan.num_samples} trials ran")
    evaluated = any(r.evaluations > 0 and r.state != "error" for r in rows)
    echo("")
    if not evaluated:
        echo("no trial reached an evaluation: there is no checkpoint to export yet")
    echo("next:")
    S, SS = hints.suhmo(), hints.suhmo_search()  # runnable as printed, venv activated or not
    if plan.tracking_uri:
        echo(f"  {SS} ui{_tracking_opt(plan)}                 # browse the trials in MLflow")
        if evaluated:
            echo(f"  {S} best-export --experiment {plan.experiment} --out best-model{_tracking_opt(plan)}")
            echo(f"  {S} generate --model best-model --reference best-model/reference.npy --out motion.npz")
            echo(f"  {S} render motion.npz --grid 4 --motion-map --out motion.gif")
    echo(f"  {SS} status {plan.experiment}{_storage_opt(plan)}")


def scale_lines(space: SearchSpace, rows: list, objectives) -> list[str]:
    """Each distance objective beside a frozen face and real data under the trials' data and
    evaluation protocol (suhmo.metrics.scale; cached like the reference statistics)."""
    from suhmo.metrics import landmark as lm

    fds = [m for m, _ in objectives if m in lm.FD_KEYS]
    if not fds:
        return []
    try:
        from suhmo.metrics.scale import scale_for_config

        scale = scale_for_config(space.base_config())
    except Exception as e:  # noqa: BLE001 - the leaderboard stands without its scale
        return [f"(no scale for {', '.join(fds)}: {e})"]
    out = []
    for m in fds:
        frozen, real = scale["frozen face"][m], scale["real data"][m]
        best = Objective.of(m).best_of(r.best[m][0] for r in rows if m in r.best)
        line = f"scale of {m} (same data and protocol): frozen face {frozen:.4g}, real data {real:.4g}"
        if best is not None:
            line += f"; best trial {best:.4g}" + (", worse than a frozen face" if best >= frozen else "")
        out.append(line)
    others = [k for k in lm.FD_KEYS if k not in fds and any(k in r.last for r in rows)]
    if others:  # the other distances the table shows
        out.append("scale of the other distances (frozen face / real data): "
                   + ", ".join(f"{k} {scale['frozen face'][k]:.4g} / {scale['real data'][k]:.4g}" for k in others))
    return out


def _storage_opt(plan: SearchPlan) -> str:
    from suhmo.paths import home

    default = str(home() / "search")
    return "" if plan.storage == default else f" --storage {plan.storage}"


def _tracking_opt(plan: SearchPlan) -> str:
    try:
        import tracking

        if plan.tracking_uri == tracking.default_tracking_uri():
            return ""
    except Exception:  # noqa: BLE001
        pass
    return f" --tracking-uri {plan.tracking_uri}"
