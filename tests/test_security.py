"""A local search opens no port on a network interface: every listening socket of the search
process tree (driver, GCS, raylet, object manager, workers) is bound to a loopback address.

The sockets are read from /proc (``/proc/PID/fd`` socket inodes matched against
``/proc/net/tcp`` and ``tcp6``), polled while a real tiny search runs through the CLI. Ray's
authentication is left at its default (token auth for local instances): the test env does not
set ``RAY_AUTH_MODE``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from search_util import tiny_space

REPO = Path(__file__).resolve().parents[1]

# two 8-iteration trials of tiny models, both at once, no early stopping
SPACE = tiny_space(base={"train.iterations": 8}, scheduler="fifo", budget={"num_samples": 2, "max_concurrent": 2})


def process_tree(root: int) -> set[int]:
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    tree, todo = {root}, [root]
    while todo:
        p = todo.pop()
        for child, pp in parent.items():
            if pp == p and child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


def _address(hexaddr: str, v6: bool) -> tuple[str, int]:
    ip, port = hexaddr.split(":")
    raw = bytes.fromhex(ip)
    if v6:
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, raw), int(port, 16)
    return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)


def listening_sockets(pids: set[int]) -> set[tuple[str, str, int]]:
    """``(process name, address, port)`` of every TCP socket in LISTEN state owned by ``pids``."""
    owner: dict[str, str] = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    owner[target[8:-1]] = name
        except OSError:
            continue
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in owner:  # 0A = LISTEN
                found.add((owner[cols[9]],) + _address(cols[1], v6))
    return found


def is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_address_classification():
    assert is_loopback("127.0.0.1") and is_loopback("::ffff:127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.2")


@pytest.mark.slow
def test_local_search_listens_on_loopback_only(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # Ray's default: token auth
    env.update(SUHMO_HOME=str(tmp_path / "home"), RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    log = open(tmp_path / "out.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "launch.cli", "run", "--space", str(space_file),
                             "--experiment", "sec", "--tracking-uri", "none"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    seen: set[tuple[str, str, int]] = set()
    try:
        end = time.time() + 480
        while proc.poll() is None and time.time() < end:
            seen |= listening_sockets(process_tree(proc.pid))
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    out = (tmp_path / "out.txt").read_text()
    assert proc.returncode == 0, out[-4000:]
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # the poll saw Ray's servers (not a vacuous pass)
    exposed = sorted(s for s in seen if not is_loopback(s[1]))
    assert exposed == [], f"listening on non-loopback addresses: {exposed}"
    token = Path.home() / ".ray" / "auth_token"
    if token.is_file():  # Ray generated a token for the local instance: owner-only
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
