"""A trial's durable outbox of MLflow records: training never waits on the tracking server.

A trial writes what it would log (its run's opening with the config, each evaluation with its
metrics, samples and checkpoint, its closing) as records into a folder of the search's storage,
and a background thread replays them into MLflow. When the server is down the records wait on
disk and the trial trains on; they are replayed when the server answers again, by the trial's
thread, by the driver when the search ends, or later by ``suhmo-search sync NAME`` (also for a
search run with ``--tracking-uri none``).

Layout of ``<storage>/<experiment>/tracking-outbox/<trial_id>/``::

    records.jsonl           one JSON record per line, numbered by "seq" (append-only, O_APPEND)
    files/<seq>/            what a record uploads: samples.npy, the checkpoint (a hard link)
    state-<key>.json        per tracking store and search run: the trial's run id and the last
                            seq replayed into it (written atomically after each record)
    status.json             the last replay attempt: ok, error, records waiting
    .lock                   held while one process replays (flock)

Replays are idempotent: a run is found by its trial id before one is created, params already
logged are skipped, an evaluation at or below the run's ``last_step`` tag is skipped, metric
rows carry the evaluation's own timestamp (MLflow keeps identical rows once), and artifacts
overwrite themselves. So a record replayed twice (a crash between logging it and saving the
state) logs nothing twice, and no record is skipped.

This module reads and writes files only; MLflow is imported when records are replayed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from suhmo.selection import Criterion
from suhmo.utils import append_line, atomic_write_text, make_dirs

OUTBOX_DIR = "tracking-outbox"
HANG_S = 30.0  # a replay attempt without an answer for this long counts as the store being unreachable
RECORDS = "records.jsonl"
STATUS = "status.json"


def outbox_root(exp_dir: str | Path) -> Path:
    return Path(exp_dir) / OUTBOX_DIR


def _one_line(text: Any, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def describe_error(e: BaseException) -> str:
    """One line for a failed replay: a full disk (the store's artifacts or database) as
    :class:`suhmo.utils.DiskFullError` says it, anything else as ``Type: message``."""
    from suhmo.utils import DiskFullError, disk_full_cause

    full = disk_full_cause(e)
    if full is not None:
        return _one_line(DiskFullError.check(e, full.filename or "the tracking store"))
    return _one_line(f"{type(e).__name__}: {e}")


def answers(tracking_uri: str, timeout_s: float = 5.0) -> bool:
    """Whether a tracking server answers at all (any HTTP status; a local store always does):
    probed before a replay, so that a server that is down costs seconds, not MLflow's retries."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True  # it answered (e.g. 401 behind a proxy)
    except (OSError, ValueError):
        return False


def _state_key(tracking_uri: str, parent_run_id: str) -> str:
    return hashlib.sha1(f"{tracking_uri}\n{parent_run_id}".encode()).hexdigest()[:12]


class Outbox:
    """The record files of one trial (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.dir = Path(folder)
        self.path = self.dir / RECORDS
        self._seq: Optional[int] = None

    # ------------------------------------------------------------------ writing
    def records(self) -> list[dict]:
        """Every whole record, in order (a line torn by a crash is not a record)."""
        out = []
        if self.path.is_file():
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("seq"), int):
                    out.append(rec)
        return out

    def last_seq(self) -> int:
        if self._seq is None:
            self._seq = max((r["seq"] for r in self.records()), default=-1)
        return self._seq

    def files_dir(self, seq: int) -> Path:
        return self.dir / "files" / str(seq)

    def append(self, record: dict, *, samples: Optional[np.ndarray] = None,
               checkpoint: Optional[Path] = None, portrait: Optional[np.ndarray] = None) -> int:
        """Stage the record's files, then append the record (the line is the commit point)."""
        make_dirs(self.dir)
        seq = self.last_seq() + 1
        rec = {"seq": seq, **record}
        if samples is not None or checkpoint is not None or portrait is not None:
            d = make_dirs(self.files_dir(seq))
            if samples is not None:
                with open(d / "samples.npy", "wb") as f:
                    np.save(f, np.asarray(samples, np.float32))
                rec["samples"] = "samples.npy"
            if portrait is not None:
                with open(d / "portrait.npy", "wb") as f:
                    np.save(f, np.asarray(portrait, np.uint8))
                rec["portrait"] = "portrait.npy"
            if checkpoint is not None:
                target = d / checkpoint.name
                target.unlink(missing_ok=True)
                try:
                    os.link(checkpoint, target)  # the trainer replaces last.pt atomically: the link keeps this one
                except OSError:
                    shutil.copy2(checkpoint, target)
                rec["checkpoint"] = checkpoint.name
        append_line(self.path, json.dumps(rec))
        self._seq = seq
        return seq

    # ------------------------------------------------------------------ replay state
    def state_path(self, tracking_uri: str, parent_run_id: str) -> Path:
        return self.dir / f"state-{_state_key(tracking_uri, parent_run_id)}.json"

    def load_state(self, tracking_uri: str, parent_run_id: str) -> dict:
        p = self.state_path(tracking_uri, parent_run_id)
        try:
            st = json.loads(p.read_text())
            if isinstance(st, dict):
                return st
        except (OSError, ValueError):
            pass
        return {"tracking_uri": tracking_uri, "parent_run_id": parent_run_id, "run_id": None, "applied": -1}

    def save_state(self, state: dict) -> None:
        atomic_write_text(self.state_path(state["tracking_uri"], state["parent_run_id"]), json.dumps(state))

    def waiting(self, tracking_uri: Optional[str], parent_run_id: Optional[str]) -> int:
        """Records not yet replayed into that store and search run (all of them without one)."""
        last = self.last_seq()
        if not tracking_uri or not parent_run_id:
            return last + 1
        return max(0, last - int(self.load_state(tracking_uri, parent_run_id).get("applied", -1)))

    def write_status(self, **status) -> None:
        with contextlib.suppress(OSError):
            atomic_write_text(self.dir / STATUS, json.dumps({"time": time.time(), **status}))

    def status(self) -> dict:
        try:
            st = json.loads((self.dir / STATUS).read_text())
            return st if isinstance(st, dict) else {}
        except (OSError, ValueError):
            return {}

    @contextlib.contextmanager
    def lock(self, wait_s: float = 0.0):
        """Yield True when this process holds the outbox's replay lock (else False)."""
        import fcntl

        make_dirs(self.dir)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        got = False
        try:
            end = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= end:
                        break
                    time.sleep(0.2)
            yield got
        finally:
            if got:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# ---------------------------------------------------------------------- replay into MLflow
def replay(box: Outbox, tracking_uri: str, experiment_id: str, parent_run_id: str, *,
           keep_files: bool = False, wait_s: float = 0.0, budget_s: Optional[float] = None) -> int:
    """Replay the records ``box`` holds beyond its state for this store and search run; returns
    how many records still wait (0: all logged). The first failing call raises (the state then
    says where to continue). ``keep_files``: keep the staged files of replayed records (a search
    without tracking keeps them for other syncs); ``budget_s``: stop starting new records after
    that long. Returns -1 when another process holds the outbox's lock."""
    with box.lock(wait_s) as got:
        if not got:
            return -1
        state = box.load_state(tracking_uri, parent_run_id)
        pending = [r for r in box.records() if r["seq"] > int(state.get("applied", -1))]
        if pending and not answers(tracking_uri):
            raise ConnectionError(f"no answer from {tracking_uri}")
        t0 = time.monotonic()
        logger = None
        for i, rec in enumerate(pending):
            if budget_s is not None and time.monotonic() - t0 > budget_s:
                return len(pending) - i
            logger = _apply(box, rec, state, logger, tracking_uri, experiment_id, parent_run_id)
            state["applied"] = rec["seq"]
            box.save_state(state)
            if not keep_files:
                shutil.rmtree(box.files_dir(rec["seq"]), ignore_errors=True)
        return 0


def _open_logger(box: Outbox, rec: dict, state: dict, tracking_uri: str, experiment_id: str, parent_run_id: str):
    from tracking.trial_log import TrialLogger

    logger = TrialLogger(tracking_uri, experiment_id, parent_run_id, trial_id=rec["trial_id"],
                         trial_name=rec.get("trial_name"), config=rec.get("config") or {}, seed=rec.get("seed"),
                         objectives=rec.get("objectives") or [], run_id=state.get("run_id"),
                         keep_checkpoints=rec.get("keep_checkpoints", "best"))
    if state.get("run_id") != logger.run_id:
        state["run_id"] = logger.run_id
        box.save_state(state)
    return logger


def _apply(box: Outbox, rec: dict, state: dict, logger, tracking_uri: str, experiment_id: str,
           parent_run_id: str):
    """Log one record; returns the trial's logger (opened from the first 'open' record)."""
    op = rec.get("op")
    if op == "open" or logger is None:
        opener = rec if op == "open" else next((r for r in box.records() if r.get("op") == "open"), None)
        if opener is None:
            return logger  # no opening record: nothing can be logged for this trial
        logger = _open_logger(box, opener, state, tracking_uri, experiment_id, parent_run_id)
        if op == "open":
            return logger
    if op == "eval":
        logger.closed = False
        d = box.files_dir(rec["seq"])
        samples = np.load(d / rec["samples"]) if rec.get("samples") and (d / rec["samples"]).is_file() else None
        portrait = np.load(d / rec["portrait"]) if rec.get("portrait") and (d / rec["portrait"]).is_file() else None
        ckpt = d / rec["checkpoint"] if rec.get("checkpoint") and (d / rec["checkpoint"]).is_file() else None
        logger.keep_checkpoints = "all"  # the trial staged a checkpoint only where one is kept
        # what counts as logged is what this state says was replayed completely: a record cut
        # short (its artifacts failed after its metrics) is logged again in full (the same
        # metric rows, the same artifact paths)
        logger.last_logged_step = int(state.get("last_step", -1))
        logger.log_eval(int(rec["step"]), rec.get("metrics") or {}, ckpt, samples, portrait=portrait,
                        timestamp_ms=rec.get("time_ms"))
        state["last_step"] = max(int(state.get("last_step", -1)), int(rec["step"]))
    elif op == "close":
        logger.closed = False
        logger.close(rec.get("status", "FINISHED"), rec.get("reason"))
    return logger


# ---------------------------------------------------------------------- the trial's side
class OutboxLogger:
    """The tracking hook of a trial: records go to its outbox at once (no network), and a
    background thread replays them into MLflow when the search tracks (``tracking_uri``).

    ``log_eval(step, metrics, checkpoint_path, samples)`` and ``close(status, reason)`` mirror
    :class:`tracking.trial_log.TrialLogger`; samples (an array or a function making one) are
    generated only when the step improves the first objective, and the checkpoint is staged only
    when it is kept (it improves an objective, or ``keep_checkpoints="all"``).
    """

    def __init__(self, folder: str | Path, *, tracking_uri: Optional[str], experiment_id: Optional[str],
                 parent_run_id: Optional[str], trial_id: str, trial_name: Optional[str] = None,
                 config: Optional[dict] = None, seed: Optional[int] = None,
                 objectives: Optional[Sequence[Sequence[str]]] = None, keep_checkpoints: str = "best",
                 retry_s: Sequence[float] = (1, 2, 5, 10, 20, 30)):
        self.box = Outbox(folder)
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.trial_id = str(trial_id)
        self.objectives = [(str(m), str(mode)) for m, mode in (objectives or [])]
        self.keep_checkpoints = keep_checkpoints
        self.retry_s = tuple(retry_s)
        self.best: dict[str, tuple[float, int]] = {}
        self.last_step = -1
        for rec in self.box.records():  # a restarted trial: what it recorded before
            if rec.get("op") == "eval":
                self._update_best(int(rec["step"]), rec.get("metrics") or {})
                self.last_step = max(self.last_step, int(rec["step"]))
        self.closed = False
        self.box.append({"op": "open", "trial_id": self.trial_id, "trial_name": trial_name,
                         "config": dict(config or {}), "seed": seed, "objectives": self.objectives,
                         "keep_checkpoints": keep_checkpoints, "time": time.time()})
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        if self.tracking_uri:
            self._thread = threading.Thread(target=self._drain_loop, name=f"suhmo-outbox-{self.trial_id}",
                                            daemon=True)
            self._thread.start()

    @property
    def run_id(self) -> Optional[str]:
        if not self.tracking_uri or not self.parent_run_id:
            return None
        return self.box.load_state(self.tracking_uri, self.parent_run_id).get("run_id")

    def waiting(self) -> int:
        return self.box.waiting(self.tracking_uri, self.parent_run_id)

    def _update_best(self, step: int, metrics: dict) -> list[str]:
        improved = []
        for metric, mode in self.objectives:
            v = metrics.get(metric)
            if isinstance(v, (int, float)) and Criterion(metric, mode).better(v, self.best.get(metric, (None,))[0]):
                self.best[metric] = (float(v), step)
                improved.append(metric)
        return improved

    def log_eval(self, step: int, metrics: dict, checkpoint_path=None, samples=None, portrait=None) -> dict:
        step = int(step)
        if self.closed or step <= self.last_step:
            return dict(self.best)  # a restarted trial re-evaluating a recorded step
        values = {str(k): float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}
        improved = self._update_best(step, values)
        first = bool(self.objectives) and self.objectives[0][0] in improved
        if callable(samples):
            samples = samples() if first else None
        if callable(portrait):
            portrait = _portrait_frames(portrait, step) if first or not self.objectives else None
        keep = self.keep_checkpoints == "all" or bool(improved) or not self.objectives
        ckpt = Path(checkpoint_path) if checkpoint_path is not None and keep and Path(checkpoint_path).is_file() \
            else None
        self.box.append({"op": "eval", "step": step, "metrics": values, "time_ms": int(time.time() * 1000)},
                        samples=samples, checkpoint=ckpt, portrait=portrait)
        self.last_step = step
        self._wake.set()
        return dict(self.best)

    def close(self, status: str = "FINISHED", reason: Optional[str] = None, wait_s: float = 30.0) -> None:
        """Record the run's end; wait up to ``wait_s`` for the replay when the server answers
        (never when it does not: the driver or ``suhmo-search sync`` replays the rest)."""
        if self.closed:
            return
        self.box.append({"op": "close", "status": status, "reason": reason})
        self.closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self.box.status().get("ok", True):
            self._thread.join(wait_s)

    def __enter__(self) -> "OutboxLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.closed:
            if exc_type is None:
                self.close("FINISHED")
            elif issubclass(exc_type, (SystemExit, KeyboardInterrupt, GeneratorExit)):
                self.close("KILLED", "stopped by the Tune scheduler" if exc_type is SystemExit
                           else f"interrupted ({exc_type.__name__})")
            else:
                self.close("FAILED", f"{exc_type.__name__}: {exc}")
        return False

    def _drain_loop(self) -> None:
        """Replay what waits; after a failure retry with growing pauses. Ends once the trial
        closed and everything is replayed, or after a failed attempt following the close."""
        failures = 0
        while True:
            stopping = self._stop.is_set()
            if self.waiting():
                # an attempt can hang in MLflow's own HTTP retries for minutes: say since when
                st = self.box.status()
                self.box.write_status(**{**st, "time": time.time(), "attempt_since": time.time()})
            try:
                left = replay(self.box, self.tracking_uri, self.experiment_id, self.parent_run_id)
                if left >= 0:
                    self.box.write_status(ok=True, error=None, waiting=self.waiting())
                failures = 0
            except Exception as e:  # noqa: BLE001 - any failure of the store: keep the records, retry
                failures += 1
                self.box.write_status(ok=False, error=describe_error(e),
                                      waiting=self.waiting(), since=self.box.status().get("since") or time.time())
                if stopping:
                    return
                self._wake.wait(self.retry_s[min(failures, len(self.retry_s)) - 1])
                self._wake.clear()
                continue
            if stopping and self.waiting() == 0:
                return
            if stopping:
                continue
            self._wake.wait(5.0)
            self._wake.clear()


# ---------------------------------------------------------------------- a search's outboxes
def trial_outboxes(exp_dir: str | Path) -> list[Outbox]:
    root = outbox_root(exp_dir)
    return [Outbox(d) for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else []


def summary(exp_dir: str | Path, tracking_uri: Optional[str], parent_run_id: Optional[str]) -> dict:
    """``{"trials", "waiting", "unreachable", "error"}`` of a search's outboxes: records not
    yet in that store, and whether the last replay attempt of some trial failed (its error)."""
    waiting = unreachable = 0
    error = None
    boxes = trial_outboxes(exp_dir)
    now = time.time()
    for box in boxes:
        n = box.waiting(tracking_uri, parent_run_id)
        waiting += n
        st = box.status()
        hanging = now - float(st.get("attempt_since") or now)
        if n and st and (not st.get("ok", True) or hanging > HANG_S):
            unreachable += 1
            error = error or (st.get("error") if not st.get("ok", True) else f"no answer for {hanging:.0f} s")
    return {"trials": len(boxes), "waiting": waiting, "unreachable": unreachable, "error": error}


def replay_search(exp_dir: str | Path, tracking_uri: str, experiment_id: str, parent_run_id: str, *,
                  keep_files: bool, wait_s: float = 30.0, budget_s: Optional[float] = None,
                  echo=None) -> dict:
    """Replay every trial's outbox of a search (the driver at its end, ``suhmo-search sync``);
    a trial whose replay fails is left for later. Returns :func:`summary`-like counts plus
    ``replayed`` (trials fully logged) and ``errors`` (one line per failed trial)."""
    t0 = time.monotonic()
    done, errors = 0, []
    boxes = trial_outboxes(exp_dir)
    for box in boxes:
        left_s = None if budget_s is None else max(0.0, budget_s - (time.monotonic() - t0))
        try:
            left = replay(box, tracking_uri, experiment_id, parent_run_id, keep_files=keep_files,
                          wait_s=wait_s, budget_s=left_s)
            if left == 0:
                done += 1
                box.write_status(ok=True, error=None, waiting=0)
            elif left < 0:
                errors.append(f"{box.dir.name}: another process is replaying it")
        except Exception as e:  # noqa: BLE001 - the store failed: the other trials would wait on it too
            msg = describe_error(e)
            box.write_status(ok=False, error=msg, waiting=box.waiting(tracking_uri, parent_run_id),
                             since=box.status().get("since") or time.time())
            errors.append(f"{box.dir.name}: {msg}")
            break
    out = summary(exp_dir, tracking_uri, parent_run_id)
    out.update(replayed=done, errors=errors)
    return out


def describe(s: dict, tracking_uri: Optional[str]) -> Optional[str]:
    """One line about records waiting for the tracking store, or None when none waits."""
    if not s.get("waiting"):
        return None
    where = tracking_uri or "a tracking store"
    if s.get("unreachable"):
        return (f"tracking unreachable ({s.get('error') or 'no answer'}): {s['waiting']} record(s) of "
                f"{s['trials']} trial(s) wait for {where}; training goes on")
    return f"tracking: {s['waiting']} record(s) wait for {where}"


__all__ = ["Outbox", "OutboxLogger", "replay", "replay_search", "summary", "describe", "trial_outboxes",
           "outbox_root", "OUTBOX_DIR"]




def _portrait_frames(make, step: int) -> Optional[np.ndarray]:
    """The trial's portrait frames, or None (one line on stderr) when they cannot be drawn:
    a picture is not worth the trial."""
    import sys

    try:
        return np.asarray(make(), np.uint8)
    except Exception as e:  # noqa: BLE001 - any failure of the drawing
        print(f"[suhmo] no portrait at step {step}: {type(e).__name__}: {e}", file=sys.stderr)
        return None
