"""Private memory of a whole process tree, sampled while a command runs.

Private memory is ``Pss_Anon + Pss_Shmem`` from ``/proc/PID/smaps_rollup``, summed over the
process and all its descendants: anonymous pages (heaps, numpy arrays, torch tensors) and
shared memory (Ray's object store), each page divided among the processes that share it. Not
RSS: memory-mapped file pages (a packed dataset's shards) are page cache that the kernel can
drop and that every process mapping the file shares, so RSS would count them once per process
and as if they could not be reclaimed.

    python benchmarks/memory.py -- suhmo train --preset cpu --iterations 40

prints the peak (MB) and the command's exit status. ``peak_private_memory`` is the function.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant alive now."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += _children(p)
    return seen


def private_bytes(pid: int) -> int:
    """Pss_Anon + Pss_Shmem of one process (0 when it is gone)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Pss_Anon:", "Pss_Shmem:")):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return total


def tree_private_bytes(pid: int) -> int:
    return sum(private_bytes(p) for p in tree(pid))


class PeakSampler:
    """Samples the private memory of the tree under ``pid`` every ``interval`` s in a thread."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_private_bytes(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def peak_private_memory(cmd: Sequence[str], *, env: Optional[dict] = None, cwd: Optional[str] = None,
                        timeout: Optional[float] = None, interval: float = 0.1) -> tuple[int, int, float, str]:
    """Run ``cmd``; return ``(peak private bytes of its process tree, exit status, wall seconds,
    the last 2000 characters of its output)``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    with PeakSampler(proc.pid, interval) as s:
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    reader.join(5)
    return s.peak, rc, time.perf_counter() - t0, "".join(out)[-2000:]


def main(argv: Sequence[str]) -> int:
    if "--" not in argv:
        print(__doc__)
        return 2
    cmd = list(argv[argv.index("--") + 1:])
    peak, rc, wall, tail = peak_private_memory(cmd)
    print(tail)
    print(f"peak private memory {peak / 1e6:.0f} MB (Pss_Anon + Pss_Shmem, process tree), exit {rc}, {wall:.1f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
