"""Runs the hostile-input catalogue in ONE process (torch is imported once), under limits.

``python tests/hostile_runner.py CASES.json RESULTS.json AS_LIMIT_BYTES``: every case is
``{"id", "prog": "suhmo" | "suhmo-search", "argv": [...]}``, run through the CLIs' own
``run_cli`` exactly as the console scripts do. The address space is capped with
``RLIMIT_AS`` (a runaway allocation raises MemoryError instead of eating the machine); each
case gets a 30 s alarm. Recorded per case: exit code, stdout, stderr, a traceback if an
exception escaped ``run_cli`` (the console script would have printed it), wall time, the
process's peak RSS after the case, and the pre-existing files of the case folder whose bytes
or mode changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout("case exceeded 30 s")


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if p.is_file() and not p.is_symlink():
            out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode)
        else:
            out[str(p)] = ("-", st.st_mode)
    return out


def main(cases_file: str, results_file: str, as_limit: str) -> None:
    limit = int(as_limit)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from launch.cli import cli as search_cli
    from suhmo.cli import cli as suhmo_cli
    from suhmo.cli import run_cli

    progs = {"suhmo": suhmo_cli, "suhmo-search": search_cli}
    spec = json.loads(Path(cases_file).read_text())
    root = Path(spec["root"])
    signal.signal(signal.SIGALRM, _alarm)
    results = []
    for case in spec["cases"]:
        before = snapshot(root)
        out, err = io.StringIO(), io.StringIO()
        tb = None
        t0 = time.time()
        signal.alarm(30)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = run_cli(progs[case["prog"]], case["argv"])
        except BaseException:  # noqa: BLE001 - what the console script would print as a traceback
            rc = 1
            tb = traceback.format_exc()
        finally:
            signal.alarm(0)
        wall = time.time() - t0
        after = snapshot(root)
        changed = [p for p, v in before.items() if after.get(p) != v]
        results.append({"id": case["id"], "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(),
                        "traceback": tb, "wall_s": wall, "changed": changed,
                        "maxrss_bytes": peak_rss()})
    Path(results_file).write_text(json.dumps(results))


def peak_rss() -> int:
    """This program's peak resident memory: VmHWM, which starts afresh at exec. (ru_maxrss does
    not: it keeps the RSS of the forked parent, the test process, from before the exec.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(*sys.argv[1:4])
