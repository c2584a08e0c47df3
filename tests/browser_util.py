"""A real headless Chromium (Debian's ``chromium`` package) for UI tests: the page as the
browser rendered it (``--dump-dom``) and a screenshot.

The flags keep it off the network (this machine has none; without them Chromium floods
refused connections) and give it a fresh profile, so nothing from another run (saved views,
the workflow type in local storage) changes what the page shows.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="suhmo-chromium-") as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def rendered_dom(url: str, *, budget_ms: int = 30000, size: str = "1600,1000", timeout_s: float = 180) -> str:
    """The DOM after the page's scripts ran for ``budget_ms`` of virtual time."""
    r = _run([f"--virtual-time-budget={budget_ms}", f"--window-size={size}", "--dump-dom", url], timeout_s)
    if r.returncode != 0:
        raise RuntimeError(f"chromium exited {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


def screenshot(url: str, out: Path, *, budget_ms: int = 30000, size: str = "1600,1000",
               timeout_s: float = 180) -> Path:
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    r = _run([f"--virtual-time-budget={budget_ms}", f"--window-size={size}", f"--screenshot={out}", url],
             timeout_s)
    if r.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium exited {r.returncode} without {out}: {r.stderr[-2000:]}")
    return out
