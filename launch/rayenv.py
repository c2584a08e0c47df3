"""The Ray environment of a search: a quiet driver and workers (environment, warning filters,
log filters on Ray's own loggers), a local instance on loopback only or a connection to a
cluster, and the resources of one trial."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from launch.plan import SearchPlan
from launch.space import REPO_ROOT
from suhmo.utils import SuhmoError

# Ray keeps 127.0.0.1 as the node IP of a local instance with this set to "0" (read at import)
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

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
    install_log_filters()


def install_log_filters() -> None:
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


def prepare_ray(address: Optional[str]) -> None:
    """:func:`quiet_ray`, and for a local instance (no ``address``) the setting that keeps it on
    127.0.0.1, which Ray reads when it is imported: call it before any ``import ray``."""
    quiet_ray()
    if not address:
        os.environ[LOOPBACK_ENV] = "0"  # see _init_loopback_ray


def start_ray(address: Optional[str], echo: Callable[[str], None]) -> dict:
    """Connect to ``address`` (auto | HOST:PORT) or start a local instance; cluster resources."""
    prepare_ray(address)
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
    install_log_filters()
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
    unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (:data:`LOOPBACK_ENV`); with it the node IP
    is 127.0.0.1. Ray reads the setting once, when ``ray`` is imported: :func:`start_ray` sets
    it before importing ray (the processes Ray starts inherit it), and a process that imports
    ray earlier sets it itself, as ``tests/conftest.py`` does. A process that starts a local
    instance does not connect to a cluster too (``--address`` leaves the setting alone).
    Should ray have been imported without it, the node comes up on the network address and
    the start is refused below. Token authentication stays at Ray's default (on for local
    instances since Ray 2.59): loopback keeps the network out, the token keeps other users of
    this machine out. ``address="local"`` never attaches to a cluster that ``ray start`` left
    on this machine.
    """
    import ray

    ray.init(address="local", **kwargs)
    _private_token_file()
    ips = {n.get("NodeManagerAddress") for n in ray.nodes() if n.get("Alive")}
    if not ips or not all(str(ip).startswith("127.") for ip in ips):
        ray.shutdown()
        raise SuhmoError(f"local Ray started on {', '.join(sorted(map(str, ips)))} instead of 127.0.0.1; "
                         f"refusing to run a search reachable from the network (set {LOOPBACK_ENV}=0 "
                         "before ray is imported)")


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
