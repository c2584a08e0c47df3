"""``suhmo-search run`` / ``resume`` under a small supervisor process.

Some driver failures never reach Python: when the GCS or the raylet dies, Ray's C++ core
logs "Failed to connect to GCS within 60 seconds ... The program will terminate" and ends
the process, and a worker killed by the memory monitor can bring chained tracebacks. The
supervisor runs the real command as a child (``SUHMO_SEARCH_CHILD=1``), passes its stdout
through (the live progress and the leaderboard), passes its stderr through except Ray's
C++ log lines and Python tracebacks, which go to a log file, and when the child ends
without having printed its own ``Error:`` line it prints exactly one::

    Error: search NAME failed: the Ray driver exited with code 1 (Failed to connect to GCS ...);
    details in LOG; continue it with: suhmo-search resume NAME

The child learns its experiment name only after parsing the space (a default name carries
the start time): it writes it to ``$SUHMO_SEARCH_NAME_FILE``. Ctrl-C (SIGINT) and SIGTERM
sent to the supervisor are passed once to the child, which runs in its own session so that
a terminal's Ctrl-C is not delivered twice; Tune then saves its state and stops.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from suhmo.paths import home

CHILD_ENV = "SUHMO_SEARCH_CHILD"
NAME_FILE_ENV = "SUHMO_SEARCH_NAME_FILE"
# Ray's C++ log lines ("[2026-12-01 22:06:30,778 E 14605 14894] rpc_client.h:204: ...") and
# worker log prefixes ("(pid=123) ...", "(raylet) ...")
_RAY_LOG = re.compile(r"^(\[\d{4}-\d\d-\d\d [\d:,.]+ [A-Z] \d+ \d+\]|\((pid|raylet|gcs_server)[^)]*\)|\*\*\* )")


def wanted(argv: list[str]) -> bool:
    """Supervise ``run`` and ``resume`` (not --dry-run or --help, not inside the child)."""
    if os.environ.get(CHILD_ENV) or not argv or argv[0] not in ("run", "resume"):
        return False
    return not any(a in ("--dry-run", "-h", "--help") for a in argv[1:])


def note_experiment(name: str) -> None:
    """Child side: tell the supervisor which experiment this is (for its resume hint)."""
    path = os.environ.get(NAME_FILE_ENV)
    if path:
        try:
            Path(path).write_text(name)
        except OSError:
            pass


def _log_path() -> Path:
    d = home() / "logs"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d / f"suhmo-search-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def supervise(argv: list[str]) -> int:
    fd, name_file = tempfile.mkstemp(prefix="suhmo-search-name-")
    os.close(fd)
    log = _log_path()
    env = dict(os.environ, **{CHILD_ENV: "1", NAME_FILE_ENV: name_file, "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen([sys.executable, "-m", "launch.cli", *argv], env=env, stdout=None,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    saw_error = False
    noise: list[str] = []
    in_traceback = False
    try:
        with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "w") as logf:
            for line in proc.stderr:
                text = line.rstrip("\n")
                if text.startswith("Traceback (most recent call last)"):
                    in_traceback = True
                if in_traceback or _RAY_LOG.match(text):
                    logf.write(line)
                    noise.append(text)
                    if in_traceback and text and not text[0].isspace() and not text.startswith("Traceback"):
                        in_traceback = False  # the exception line ends the traceback
                    continue
                if text.startswith("Error:"):
                    saw_error = True
                sys.stderr.write(line)
                sys.stderr.flush()
        rc = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        experiment = _read(name_file)
        try:
            os.unlink(name_file)
        except OSError:
            pass
    if rc != 0 and not saw_error:
        cause = _cause(noise, rc)
        where = f"; details in {log}" if noise else ""
        if experiment:
            print(f"Error: search {experiment} failed: {cause}{where}; continue it with: "
                  f"suhmo-search resume {experiment}{_storage(argv)}", file=sys.stderr)
        else:
            print(f"Error: the search failed before it started: {cause}{where}", file=sys.stderr)
        return rc if rc > 0 else 1
    if not noise and log.exists() and log.stat().st_size == 0:
        log.unlink()
    return rc if rc >= 0 else 128 - rc


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _cause(noise: list[str], rc: int) -> str:
    how = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
    last = ""
    for text in reversed(noise):
        body = _RAY_LOG.sub("", text).strip()
        body = re.sub(r"^[\w./-]+\.(h|cc|py):\d+:\s*", "", body)  # rpc_client.h:204:
        if body and not body.startswith(("File ", "Traceback")):
            last = body
            break
    return f"the Ray driver {how}" + (f" ({last[:200]})" if last else "")


def _storage(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a == "--storage" and i + 1 < len(argv):
            return f" --storage {argv[i + 1]}"
        if a.startswith("--storage="):
            return f" --storage {a.split('=', 1)[1]}"
    return ""
